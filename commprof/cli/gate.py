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


def _paths(value) -> list[str]:
    """One path or several (a repeated option, a TOML list)."""
    if value in (None, [], ()):
        return []
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]


def _load_side(paths: list[str], skip):
    """(the runs merged, the runs) of one side."""
    from commprof.gate import measure
    from commprof.gate.runs import merge
    ms = [measure.load(p, skip) for p in paths]
    return merge(ms), ms


def gate_command(run: str | list[str], flags: dict, config: str | None, junit: str | None,
                 markdown: str | None, json_out: str | None, width: int | None) -> int:
    from commprof.gate import rules
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
    base_paths = _paths(opts.get("baseline"))
    if needs_base and not base_paths:
        raise UsageError("--max-regression needs --baseline (a run directory, a saved report or "
                         "a baseline file)")
    if cfg_path and not flags.get("baseline"):  # relative to the config file
        base_paths = [p if Path(p).is_absolute() else str(cfg_path.parent / p) for p in base_paths]
    cur, cur_runs = _load_side(_paths(run), skip)
    base, base_runs = _load_side(base_paths, skip) if base_paths else (None, [])
    runs = (cur_runs, base_runs) if base is not None else None
    results = [rules.evaluate(r, cur, base, confidence, runs) for r in rule_list]
    header = [f"run: {_describe(cur)}", f"verdict: {cur.verdict().sentence}"]
    if base is not None:
        from commprof.gate.runs import basis_text
        header.append(f"baseline: {_describe(base)}")
        header.append(f"regressions: {basis_text(len(cur_runs), len(base_runs))}")
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


def compare_sides(runs: list[str], baselines: list[str] | None) -> tuple[list[str], list[str]]:
    """(A's runs, B's runs): ``compare A B``, or ``compare --baseline A1 --baseline A2 B1 B2``."""
    if baselines:
        if not runs:
            raise UsageError("compare --baseline A ... needs the runs to compare: B [B2 ...]")
        return list(baselines), list(runs)
    if len(runs) != 2:
        raise UsageError(f"compare takes two runs (A B), or several per side: --baseline A1 "
                         f"--baseline A2 B1 B2 (got {len(runs)} run(s) and no --baseline)")
    return [runs[0]], [runs[1]]


def compare_command(a: str | list[str], b: str | list[str], skip_steps: str | None, confidence: float,
                    markdown: str | None, width: int | None) -> int:
    """``a``, ``b``: one run or several per side."""
    from commprof.gate import rules
    from commprof.gate.compare import compare
    from commprof.gate import output as gate_output
    from commprof.gate.runs import basis_text
    conf = rules.confidence_value(confidence)
    (ma, a_runs), (mb, b_runs) = _load_side(_paths(a), _skip(skip_steps)), _load_side(_paths(b), _skip(skip_steps))
    rows = compare(ma, mb, conf, a_runs, b_runs)
    basis = basis_text(len(a_runs), len(b_runs))
    color = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    sys.stdout.write(gate_output.compare_text(rows, _describe(ma), _describe(mb), color=color,
                                              width=width, basis=basis))
    if any(m.training is not None and m.training.loss is not None for m in (ma, mb)):
        from commprof.gate.runs import loss_judgement
        sys.stdout.write("\n".join(gate_output.loss_lines(loss_judgement(a_runs, b_runs))) + "\n")
    md = gate_output.compare_markdown(rows, ma.source, mb.source, basis)
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
    from commprof.format.text import printable
    print(printable(f"commprof: wrote baseline {path} ({_describe(m)})"), file=sys.stderr)
    return 0
