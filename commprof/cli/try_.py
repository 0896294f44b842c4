"""``commprof try FIX[,FIX…] [--baseline RUN] [--steps N] [--repeat K] -- COMMAND…`` and
``commprof try auto -- COMMAND…`` (docs/try.md).

Runs the job under ``commprof run`` with the fix applied inside the workers (commprof/fixes),
the baseline too unless one is given — interleaved A B A B with ``--repeat`` — then shows
``commprof compare``'s table, the loss curves' agreement, whether the bytes changed as the fix
says, and the what-if's projection of the same fix next to the measured step time.
"""
from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from commprof.analysis.result.model import FixRow, Report
from commprof.cli.try_checks import print_ruled
from commprof.cli.try_compare import compare_table
from commprof.cli.try_output import out as _out, print_tried, write_json
from commprof.errors import UsageError
from commprof.format.text import printable


BYTES_TOLERANCE = 0.02  # measured bytes per step vs the fix's arithmetic, where it has one


@dataclass
class Side:
    """The runs of one side (the baseline or one fix) and their merged measurements (``docs``:
    the runs' typed reports, one per run)."""

    label: str
    runs: list[Path] = field(default_factory=list)
    docs: list[Report] = field(default_factory=list)

    def step_time(self) -> float | None:
        steps = [r.duration_mean_s for d in self.docs for r in d.steps.per_step
                 if r.duration_mean_s is not None]
        return float(np.mean(steps)) if steps else None

    def kpi(self, name: str) -> float | None:
        vals = [getattr(d.kpis, name) for d in self.docs if getattr(d.kpis, name) is not None]
        return float(np.mean(vals)) if vals else None

    def loss(self) -> dict | None:
        """The loss curve of the side: each step its runs all have, their mean (``steps``,
        ``values``, ``final``)."""
        curves = [d.training.loss for d in self.docs if d.training and d.training.loss]
        if not curves:
            return None
        steps = sorted(set.intersection(*(set(c.steps) for c in curves)))
        by = [dict(zip(c.steps, c.values)) for c in curves]
        values = [float(np.mean([b[s] for b in by])) for s in steps]
        return {"steps": steps, "values": values, "final": values[-1] if values else None}

    def fixes(self) -> list[FixRow]:
        return [f for d in self.docs for f in (d.training.fixes if d.training else None) or []]


def _finished(out: Path, fix: str | None) -> bool:
    """A run of an earlier ``commprof try --out`` that can be reused (``--resume``): finished,
    exit status 0, the same fix."""
    from commprof.errors import CommprofError
    from commprof.format import layout, safe_io
    try:
        m = safe_io.read_json(layout.manifest_path(out), within=out)
    except (OSError, CommprofError):
        return False
    if not isinstance(m, dict):
        return False
    return (m.get("status") == "finished" and m.get("exit_code") == 0
            and (m.get("fixes") or []) == ([f.strip() for f in fix.split(",")] if fix else []))


def _commprof_run(out: Path, command: list[str], fix: str | None, opts: dict, say, seed_offset: int = 0) -> Path:
    if opts.get("resume") and _finished(out, fix):
        say(f"reusing {out} ({'baseline' if not fix else fix})")
        return out
    if out.exists():
        import shutil
        shutil.rmtree(out)  # a run of this try's own directory layout, incomplete or stale
    argv = [sys.executable, "-m", "commprof", "run", "--out", str(out), "--quiet"]
    if fix:
        argv += ["--fix", fix, "--fix-warmup", str(opts["fix_warmup"])]
    if opts.get("steps"):
        argv += ["--max-steps", str(opts["steps"])]
    argv += ["--sample-hz", str(opts.get("sample_hz", 0)), "--", *command]
    say(f"running {'baseline' if not fix else fix} (seed offset {seed_offset}) -> {out}")
    t0 = time.monotonic()
    import os
    from commprof.capture.config import ENV_SEED_OFFSET
    proc = subprocess.run(argv, env=dict(os.environ, **{ENV_SEED_OFFSET: str(seed_offset)}))
    if proc.returncode != 0:
        raise UsageError(f"{out}: the job exited with {proc.returncode} "
                         f"({'baseline' if not fix else 'with ' + fix}); see its output above")
    say(f"  done in {time.monotonic() - t0:.1f} s")
    return out


_REPORTS: dict[tuple[str, int], Report] = {}


def _report(run: Path, warmup: int) -> Report:
    """The typed report of ``run`` (:func:`commprof.cli.report.build_report`), once per run and
    warm-up."""
    from commprof.cli.report import build_report
    key = (str(run), warmup)
    if key not in _REPORTS:
        _REPORTS[key] = build_report(str(run), warmup)
    return _REPORTS[key]


def run_sides(command, fixes: list[str], baseline: str | None, repeat: int, root: Path, opts: dict,
              say, ruled: list | None = None) -> tuple[Side, list[Side]]:
    """The baseline side and one side per fix, runs interleaved: base, fix₁, …, base, fix₁, …;
    run i of every side with seed offset i (capture/seeds.py): the sides are paired by seed and
    the baseline's runs differ by their randomness (the noise band).  With ``ruled`` (a list),
    fixes the first baseline run cannot take are not run: appended to it as (fix, why)
    (try_checks.rule_out)."""
    from commprof.cli.try_checks import rule_out
    base = Side("baseline")
    if baseline:
        base.runs.append(Path(baseline))
    sides = [Side(f) for f in fixes]
    for i in range(repeat):
        if not baseline:
            base.runs.append(_commprof_run(root / f"baseline-{i + 1}", command, None, opts, say, i))
        if i == 0 and ruled is not None and sides:
            kept, out = rule_out([s.label for s in sides], base.runs[0],
                                 _report(base.runs[0], opts["warmup"]), opts["fix_warmup"], say)
            ruled += out
            sides = [s for s in sides if s.label in kept]
        for side in sides:
            side.runs.append(_commprof_run(root / f"{_slug(side.label)}-{i + 1}", command, side.label,
                                           opts, say, i))
    for side in (base, *sides):
        side.docs = [_report(r, opts["warmup"]) for r in side.runs]
    return base, sides


def _html(root: Path, base: Side, side: Side) -> Path | None:
    """The fix's report (its first run) with the baseline's loss curve beside its own."""
    from commprof.analysis.result.model_sections import LossSeries
    from commprof.report.html import HtmlRenderer
    if not side.docs:
        return None
    report = side.docs[0]
    curve = base.loss()
    if curve and report.training:
        compare = [LossSeries(label="baseline", steps=curve["steps"], values=curve["values"])]
        report = report.replaced(training=report.training.replaced(compare=compare))  # a copy
    path = root / f"{_slug(side.label)}.html"
    path.write_text(HtmlRenderer().render(report))
    return path


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


def _sync_ratio_ok(ratio: float, every: int, steps: int) -> bool:
    """Bytes of a fix that synchronizes one step in ``every``: over ``steps`` measured steps,
    between ⌊steps/every⌋ and ⌈steps/every⌉ synchronizing steps' worth."""
    lo, hi = (steps // every) / steps, -(-steps // every) / steps
    return lo * (1 - BYTES_TOLERANCE) <= ratio <= hi * (1 + BYTES_TOLERANCE)


def assess_fix(base: Side, side: Side, fix_warmup: int = 5, warmup: int = 2, metric: str | None = None) -> dict:
    """Did the fix apply, change the bytes as it says, what did it do to time, and is its
    training within the baseline's noise (``judgement``: :func:`commprof.cli.try_verdict.decide`)?"""
    from commprof.cli.try_verdict import decide
    from commprof.analysis.host.training import compare_losses
    from commprof.analysis.outcome import whatif
    from commprof.fixes import parse
    applied_fixes = parse(side.label, fix_warmup)
    specs = {f.spec for f in applied_fixes}
    status = {f.status for f in side.fixes() if f.fix in specs}
    applied = status == {"applied"} and {f.fix for f in side.fixes()} >= specs
    why = "; ".join(sorted({f"{f.fix}: {f.why}" for f in side.fixes() if f.fix in specs and f.why}))
    fix = _combined(applied_fixes)
    t0, t1 = base.step_time(), side.step_time()
    b0, b1 = base.kpi("bytes_per_step"), side.kpi("bytes_per_step")
    expect = fix.whatif().get("bytes_div")
    every = fix.whatif().get("sync_every")
    bytes_ok = None
    if expect and b0 and b1 is not None:
        bytes_ok = abs(b1 / b0 - 1 / expect) <= BYTES_TOLERANCE
    n = sum(len(d.steps.per_step) for d in side.docs) // max(len(side.docs), 1)
    if every and b0 and b1 is not None and n:
        bytes_ok = _sync_ratio_ok(b1 / b0, int(every), n)
        expect = float(every)
    projected, b = None, None
    if base.docs:
        from commprof.cli.report import summarize_run
        b = summarize_run(str(base.runs[0]), 2).baseline
    if fix.whatif() and b is not None:
        projected = whatif.project(b, **fix.whatif())["step_time_s"]
    checks = {}
    if base.docs:
        from commprof.cli.try_checks import fix_checks
        checks = fix_checks(base, side, applied_fixes,
                            lambda **change: whatif.project(b, **change)["step_time_s"] if b else None)
        if checks["projected_step_time"] is not None:
            projected = checks["projected_step_time"]
        if checks["bytes_ok"] is not None:
            bytes_ok = checks["bytes_ok"]
    return {"fix": side.label, "applied": applied, "status": sorted(status) or ["not reported"], "why": why,
            "step_time_base": t0, "step_time": t1, "speedup": t0 / t1 if t0 and t1 else None,
            "projected_step_time": projected,
            "measured_vs_projected": t1 / projected if t1 and projected else None,
            "bytes_base": b0, "bytes": b1, "bytes_expected_ratio": 1 / expect if expect else None,
            "bytes_ok": bytes_ok, "loss": compare_losses(base.loss(), side.loss()), "code": fix.code(),
            "judgement": decide(base.docs, side.docs, side.label, warmup, metric),
            **{k: checks.get(k) for k in ("bytes_ops", "projection", "calibrated", "local_sgd")}}


class _combined:
    """Several fixes applied together: their what-if changes multiply, their code lines join."""

    def __init__(self, fixes):
        self.fixes = fixes

    def whatif(self) -> dict:
        out: dict = {}
        for f in self.fixes:
            for k, v in f.whatif().items():
                out[k] = out.get(k, 1) * v
        return out

    def code(self) -> str:
        return "\n".join(f.code() for f in self.fixes if f.code())


def report_lines(a: dict) -> list[str]:
    from commprof.cli import try_verdict
    from commprof.format.units import fmt_bytes, fmt_seconds
    out = [f"== {a['fix']}: " + ("applied" if a["applied"] else f"NOT applied ({', '.join(a['status'])}"
                                 + (f": {a['why']}" if a["why"] else "") + ")")]
    out.append(f"step time: {fmt_seconds(a['step_time_base'])} -> {fmt_seconds(a['step_time'])}"
               + (f" ({a['speedup']:.2f}x)" if a["speedup"] else ""))
    from commprof.cli.try_checks import check_lines, projection_lines
    out += projection_lines(a)
    ratio = a["bytes"] / a["bytes_base"] if a["bytes"] is not None and a["bytes_base"] else None
    line = (f"bytes per step: {fmt_bytes(a['bytes_base'])} -> {fmt_bytes(a['bytes'])}"
            + (f" (x{ratio:.3f})" if ratio is not None else ""))
    if a["bytes_ok"] is not None and not a.get("bytes_ops") and a["bytes_expected_ratio"]:
        line += (f"; the fix says x{a['bytes_expected_ratio']:.3f}: "
                 + ("as expected" if a["bytes_ok"] else "NOT as expected: the fix did not apply as it says"))
    out.append(line)
    out += check_lines(a)
    out += try_verdict.lines(a["judgement"], a["fix"])
    return out


def run_auto(command, baseline: str | None, root: Path, opts: dict, say, metric: str | None,
             budget_s: float, fix_warmup: int):
    """``try auto``: two full baseline runs (seed offsets 0, 1; or --baseline and one more),
    then :class:`commprof.cli.try_search.Search` over the candidates of the job's kind.  Returns
    (the baseline side, the search table, the full rung's results, [(fix, why)] ruled out before
    running: try_checks.rule_out)."""
    from commprof.cli import try_search as ts
    base, walls = Side("baseline"), []
    if baseline:
        base.runs.append(Path(baseline))
    for i in range(len(base.runs), 2):
        t0 = time.monotonic()
        base.runs.append(_commprof_run(root / f"baseline-{i + 1}", command, None, opts, say, i))
        walls.append(time.monotonic() - t0)
    base.docs = [_report(r, opts["warmup"]) for r in base.runs]
    full = opts["steps"] or ts.full_length(base.docs)
    from commprof.cli.try_checks import rule_out, say_projections
    candidates, ruled = rule_out(ts.candidates_for(base.docs[0]), base.runs[0], base.docs[0], fix_warmup, say)
    say_projections(candidates, base.runs[0], base.docs[0], fix_warmup, say)
    if not candidates:
        return base, [], [], ruled
    made: set[Path] = set()

    def measure(fix: str, steps: int, repeat: int) -> dict:
        t0 = time.monotonic()
        side = Side(fix)
        run_opts = dict(opts, steps=steps if steps < full or opts["steps"] else None)
        for i in range(repeat):
            path = root / f"{_slug(fix)}-{steps}-{i + 1}"
            if path not in made:  # the full rung's second call reuses its first run
                made.add(_commprof_run(path, command, fix, run_opts, lambda m: None, i))
            side.runs.append(path)
        side.docs = [_report(r, opts["warmup"]) for r in side.runs]
        against = base if steps >= full else Side("baseline", base.runs, [ts.truncated(d, steps) for d in base.docs])
        result = assess_fix(against, side, fix_warmup, opts["warmup"], metric if steps >= full else "")
        return dict(result, wall_s=time.monotonic() - t0, runs=[str(r) for r in side.runs])

    search = ts.Search(candidates, measure, full, ts.costs_of(walls or [0.0], base.docs, full),
                       budget_s - sum(walls), say)
    short = search.short_steps(opts["warmup"])
    say(f"searching {len(candidates)} candidates ({', '.join(candidates)}) within "
        f"{(budget_s - sum(walls)) / 60:.1f} min and a third of trying them all: "
        + (f"short runs of {short} steps for the families not bisected, then " if short < full else
           "start-up dominates a run (no short rung), so ")
        + f"a bisection of each family at {full} steps, the leader twice")
    table = search.run(opts["warmup"])
    return base, table, [c.full for c in table if c.full is not None], ruled




def try_command(spec: str, command: list[str], baseline: str | None, steps: int | None, repeat: int,
                out: str | None, warmup: int, fix_warmup: int, loss_tolerance: float | None,
                quiet: bool = False, resume: bool = False, json_out: str | None = None,
                metric: str | None = None, budget: str | None = None) -> int:
    """``commprof try``: the fixes (or ``auto``'s search) run beside a baseline, judged; exit 0."""
    from commprof.fixes import parse
    from commprof.launch import supervisor
    supervisor.check_command(command)
    if repeat < 1:
        raise UsageError(f"--repeat {repeat}: must be >= 1")
    if steps is not None and steps < 2:
        raise UsageError(f"--steps {steps}: must be >= 2")
    auto = spec.strip().lower() == "auto"
    if budget is not None and not auto:
        raise UsageError(f"--budget {budget}: only `commprof try auto` searches under a budget")
    # "A,B": A and B applied together (one side); "A/B": A and B each on its own side.
    fixes = [] if auto else [",".join(f.spec for f in parse(part, fix_warmup))
                             for part in spec.split("/") if part.strip()]
    if not auto and not fixes:
        raise UsageError(f"no fix in {spec!r}: e.g. bf16-compress, or bf16-compress/local-sgd:4")
    say = (lambda m: None) if quiet else (lambda m: print(printable(f"commprof try: {m}"), file=sys.stderr))
    from commprof.format import layout
    root = Path(out) if out else Path(layout.DEFAULT_ROOT) / time.strftime("try-%Y%m%d-%H%M%S")
    root.mkdir(parents=True, exist_ok=True)
    # Steps before a fix's warm-up ends (PowerSGD, local SGD synchronize in full until then) are
    # left out on both sides: the comparison is of the fix as it runs after its warm-up.
    warm = any(f.startswith(("powersgd", "local-sgd")) for f in fixes) or auto
    opts = {"steps": steps, "warmup": max(warmup, fix_warmup) if warm else warmup,
            "fix_warmup": fix_warmup, "resume": resume}
    if steps is not None and steps <= opts["warmup"] + 1:
        raise UsageError(f"--steps {steps}: leaves no measured step after the {opts['warmup']}-step "
                         "warm-up (--warmup, --fix-warmup)")
    table, ruled = [], []
    if auto:
        from commprof.cli.try_search import parse_budget, pareto_lines
        base, table, results, ruled = run_auto(command, baseline, root, opts, say, metric,
                                               parse_budget(budget), fix_warmup)
        if not table:
            print_ruled(ruled)
            _out("commprof try auto: " + ("no candidate fix has its target in the baseline" if ruled else
                  "no candidate fix for this job (it runs no all_reduce or reduce_scatter: no DDP or "
                  "FSDP2 gradient synchronization to change)"))
            return 0
        sides = [Side(r["fix"], [Path(p) for p in r["runs"]]) for r in results]
        for side in sides:
            side.docs = [_report(r, opts["warmup"]) for r in side.runs]
        for r in results:
            _out("\n".join(report_lines(r)))
    else:
        base, sides = run_sides(command, fixes, baseline, repeat, root, opts, say, ruled)
        if not sides:
            print_ruled(ruled)
            _out("commprof try: no fix left to run: the baseline has none of their targets")
            return 0
        results = [assess_fix(base, s, fix_warmup, opts["warmup"], metric) for s in sides]
        for side, r in zip(sides, results):
            _out(compare_table(base, side))
            _out("\n".join(report_lines(r)))
    pages = [_html(root, base, side) for side in sides]
    from commprof.cli.try_verdict import choose
    best, verdicts = choose(results, loss_tolerance)
    print_ruled(ruled)
    for c in table:  # the search's table: the full rung's fates from the choice
        if c.full is not None:
            why = dict((r["fix"], v) for r, v in verdicts)[c.fix]
            fate = "chosen" if c.full is best else "kept" if why.startswith("candidate") else "fell at full"
            c.fate, c.why = (fate, c.note if fate == "chosen" else why + (f" ({c.note})" if c.note else ""))
    if table:
        _out("\n".join(pareto_lines(table)))
    if json_out:
        write_json(json_out, base, sides, results, verdicts, ruled, best, table, loss_tolerance)
    if auto or len(results) > 1:
        print_tried(verdicts, best, table)
    _out(f"\nruns in {root} (commprof compare {base.runs[0]} {sides[0].runs[0] if sides else ''}); "
          f"HTML with both loss curves: {', '.join(str(p) for p in pages if p)}")
    return 0
