"""``commprof gate`` and ``commprof compare``: exit 0 pass, 1 a rule failed, 2 bad input."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from commprof.errors import UsageError


def _skip(value) -> int | str:
    if value is None or str(value) == "auto":
        return "auto"
    try:
        return int(value)
    except ValueError as exc:
        raise UsageError(f"--skip-steps {value!r}: an integer or 'auto'") from exc


def _describe(m) -> str:
    n = len(m.series.get("step_time_mean", m.series.get("step_time", [])))
    basis = (m.run or {}).get("time_basis") or "host"
    timeline = {"gpu_windows": "; GPU timeline of its GPU windows' steps",
                "gpu_trace": "; GPU timeline of profiler traces",
                "host_launch": "; NCCL without a GPU timeline: no communication times"}.get(basis, "")
    return (f"{m.source} ({m.kind}): {n} measured step(s) after skipping {m.skipped_steps} "
            f"warm-up of {m.steps_total}{timeline}")


def _write(path: str, text: str, append: bool = False) -> None:
    try:
        with open(path, "a" if append else "w") as fh:
            fh.write(text)
    except OSError as exc:
        raise UsageError(f"{path}: cannot write: {exc.strerror or exc}") from exc


def gate_command(run: str, flags: dict, config: str | None, junit: str | None,
                 markdown: str | None, json_out: str | None, width: int | None) -> int:
    from commprof.gate import measure, rules
    from commprof.gate import output as gate_output
    table, cfg_path = rules.load_config(Path(config) if config else None)
    opts = dict(table)
    for key, value in flags.items():  # flags override the file
        if value not in (None, [], ()):
            opts[key] = value
    rule_list = rules.build_rules(opts)
    if not rule_list:
        raise UsageError("no gate rules: give e.g. --max-exposed-comm-fraction 0.15 or "
                         "--max-regression step_time=+10% (or a [tool.commprof.gate] table)")
    confidence = rules.confidence_value(opts.get("confidence", 0.95))
    skip = _skip(opts.get("skip_steps"))
    needs_base = any(r.kind == "regression" for r in rule_list)
    base_path = opts.get("baseline")
    if needs_base and not base_path:
        raise UsageError("--max-regression needs --baseline (a run directory, a saved report or "
                         "a baseline file)")
    if base_path and cfg_path and not Path(base_path).is_absolute() and not flags.get("baseline"):
        base_path = str(cfg_path.parent / base_path)  # relative to the config file
    cur = measure.load(run, skip)
    base = measure.load(base_path, skip) if base_path else None
    results = [rules.evaluate(r, cur, base, confidence) for r in rule_list]
    header = [f"run: {_describe(cur)}", f"verdict: {cur.verdict().sentence}"]
    if base is not None:
        header.append(f"baseline: {_describe(base)}")
        bases = {(m.run or {}).get("time_basis") or "host" for m in (cur, base)}
        if len(bases) > 1:
            header.append("warning: the run and the baseline time communication on different "
                          f"clocks ({' vs '.join(sorted(bases))}): communication-time changes "
                          "compare different measurements")
    if cfg_path:
        header.append(f"rules from {cfg_path} and the command line")
    header.append(f"compared: the report's KPIs (time-weighted fractions, mean step; *_median "
                  f"metrics: medians over steps), with bootstrap intervals over measured steps; "
                  f"regressions fail only when the {confidence:.0%} bootstrap interval of the "
                  "change lies entirely beyond the allowance")
    color = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    sys.stdout.write(gate_output.gate_text(results, header, color=color, width=width))
    if junit:
        _write(junit, gate_output.junit_xml(results))
    md = gate_output.gate_markdown(results, header)
    if markdown:
        _write(markdown, md)
    summary = rules.env_summary_path()
    if summary:
        _write(summary, md, append=True)
    if json_out:
        _write(json_out, gate_output.gate_json(results, {"run": cur.source, "baseline": base.source if base else None,
                                                          "confidence": confidence,
                                                          "assessment": cur.verdict().to_dict()}))
    return 0 if all(r.status == "pass" for r in results) else 1


def compare_command(a: str, b: str, skip_steps: str | None, confidence: float,
                    markdown: str | None, width: int | None) -> int:
    from commprof.gate import measure, rules
    from commprof.gate.compare import compare
    from commprof.gate import output as gate_output
    conf = rules.confidence_value(confidence)
    ma, mb = measure.load(a, _skip(skip_steps)), measure.load(b, _skip(skip_steps))
    rows = compare(ma, mb, conf)
    color = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    sys.stdout.write(gate_output.compare_text(rows, _describe(ma), _describe(mb), color=color,
                                              width=width))
    if (ma.training or {}).get("loss") or (mb.training or {}).get("loss"):
        from commprof.analysis.training import compare_losses
        conv = compare_losses((ma.training or {}).get("loss"), (mb.training or {}).get("loss"))
        sys.stdout.write("\n".join(gate_output.loss_lines(conv)) + "\n")
    md = gate_output.compare_markdown(rows, ma.source, mb.source)
    if markdown:
        _write(markdown, md)
    summary = rules.env_summary_path()
    if summary:
        _write(summary, md, append=True)
    return 0


def save_baseline_command(run: str | None, path: str, skip_steps: str | None) -> int:
    from commprof.gate import measure
    from commprof.format.layout import latest_run
    m = measure.load(run or latest_run(), _skip(skip_steps))
    measure.save_baseline(m, path)
    print(f"commprof: wrote baseline {path} ({_describe(m)})", file=sys.stderr)
    return 0
