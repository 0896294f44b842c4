"""``commprof try auto``: a search over the fixes and their parameters under a time budget and a
cap of a third of trying them all (docs/try.md, "commprof try auto").

1. The baseline runs at full length, twice (seed offsets 0 and 1): the noise band, the target,
   and the cost of a run (its start-up and its time per step).
2. **Rung 1, short** — only where a short run (a fifth of the steps, at least the warm-up + 20)
   costs at most :data:`STARTUP_DOMINATES` of a full one: the candidates of the families not
   graded (bucket caps, FSDP2's options) run once and fall when they do not apply, change the
   bytes otherwise than they say, diverge (try_verdict.diverged), or are not faster per step by
   more than the baseline's run-to-run spread (at least 3 %).  The loss is not compared there:
   early in a run its band is too wide to rank on.
3. **Rung 2, full length**: in each graded family (compression bf16 → fp16, PowerSGD R = 8 → 1,
   local SGD K = 2 → 32; mildest first, harm growing along it) a bisection for its most
   aggressive setting not worse: a probe not worse rules out the milder ones, a worse one (or
   one whose target is not reached even extrapolated) the more aggressive ones.  Every other
   survivor is its own probe.  These runs are the first repeat.
4. **Rung 3**: the leader (fastest to the target) runs a second time, paired by seed; if it turns
   worse, the next.  :func:`commprof.cli.try_verdict.choose` picks among the full runs.
   No run starts that would not fit the budget left or the cap (a third of the exhaustive
   try's estimated time, less the baseline's runs); every run prints one progress line.
"""
from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field

from commprof.analysis.result.model import Report
from commprof.errors import UsageError

# Within a family, mildest first: PowerSGD's rank falling, local SGD's period growing.
DDP_CANDIDATES = (["bf16-compress", "fp16-compress"] + [f"powersgd:{r}" for r in (8, 4, 2, 1)]
                  + [f"local-sgd:{k}" for k in (2, 4, 8, 16, 32)] + [f"bucket-cap:{mb}" for mb in (1, 5, 100)])
GRADED = ("compression", "powersgd", "local-sgd")  # families ordered mild -> aggressive: harm grows along them
FSDP_CANDIDATES = ["bf16-reduce", "reshard-after-forward=false"]
SHORT_FRACTION = 0.2  # the short rung's steps: this fraction of the full run's
STARTUP_DOMINATES = 0.5  # a short run costing more than this share of a full one is not worth it
EXHAUSTIVE_SHARE = 3  # the search spends at most 1/this of the exhaustive try's (estimated) time
DEFAULT_BUDGET_S = 30 * 60.0
MIN_GAIN = 0.03  # the short rung's least speed-up per step worth a full run


def parse_budget(text: str | None) -> float:
    """``30m``, ``1h``, ``90s`` or seconds → seconds (:class:`UsageError` otherwise)."""
    if text is None:
        return DEFAULT_BUDGET_S
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smh]?)\s*", str(text).lower())
    if not m or float(m.group(1)) <= 0:
        raise UsageError(f"--budget {text!r}: expected a duration such as 30m, 1h or 900s")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def candidates_for(base_report: Report) -> list[str]:
    """The candidates of the job's kind, from the baseline's collectives: all_reduce → DDP's,
    reduce_scatter → FSDP2's."""
    ops = {o.op for o in base_report.ops}
    out = list(DDP_CANDIDATES) if "all_reduce" in ops else []
    if "reduce_scatter" in ops:
        out += FSDP_CANDIDATES
    return round_robin(out)


def family_of(fix: str) -> str:
    """A candidate's family: "compression" (bf16, then fp16: same bytes, fp16's narrower range),
    "powersgd", "local-sgd", or the part of its name before ":"."""
    return "compression" if fix in ("bf16-compress", "fp16-compress") else fix.partition(":")[0]


def mildness(fix: str) -> float:
    """Order within a graded family, mildest first: bf16 before fp16, PowerSGD's rank falling,
    local SGD's period growing."""
    name, _, arg = fix.partition(":")
    if name == "powersgd":
        return -float(arg)
    if name == "local-sgd":
        return float(arg)
    return float(fix == "fp16-compress")


def round_robin(fixes: list[str]) -> list[str]:
    """One of each family in turn (each family's own order kept): a budget that runs out early
    has still sampled every family."""
    families: dict[str, list[str]] = {}
    for f in fixes:
        families.setdefault(f.partition(":")[0].replace("fp16-compress", "bf16-compress"), []).append(f)
    out, queues = [], list(families.values())
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop(0))
    return out


@dataclass
class Candidate:
    """One fix in the search: how far it got and why it fell (``fate``: "chosen", "kept",
    "fell at short", "fell at full", "not run: budget")."""

    fix: str
    fate: str = "pending"
    why: str = ""
    short: dict | None = None  # the short rung's result (assess_fix's dict)
    full: dict | None = None  # the full rung's
    note: str = ""  # e.g. judged on one full run (the budget)


@dataclass
class Costs:
    """A run's wall time ≈ ``startup_s`` + steps · ``step_s``."""

    startup_s: float
    step_s: float

    def run(self, steps: int) -> float:
        return self.startup_s + steps * self.step_s


@dataclass
class Search:
    """The search over ``candidates`` (the module docstring).  ``measure(fix, steps, repeat)`` runs a fix and
    returns ``assess_fix``'s dict (with ``judgement``) against the baseline's same steps."""

    candidates: list[str]
    measure: object
    full_steps: int
    costs: Costs
    budget_s: float
    say: object
    spent_s: float = 0.0
    runs: int = 0
    table: list[Candidate] = field(default_factory=list)

    def _fits(self, seconds: float) -> bool:
        return self.spent_s + seconds <= self.budget_s

    def _run(self, fix: str, steps: int, repeat: int, rung: str) -> dict:
        t0 = time.monotonic()
        result = self.measure(fix, steps, repeat)
        self.spent_s += result.get("wall_s", time.monotonic() - t0)
        self.runs += 1
        return result

    def short_steps(self, warmup: int) -> int:
        """The short rung's steps; the full length when start-up dominates (a short run would
        cost more than :data:`STARTUP_DOMINATES` of a full one): then rung 1 is the full runs'
        first run."""
        short = min(max(warmup + 20, math.ceil(SHORT_FRACTION * self.full_steps)), self.full_steps)
        if self.costs.run(short) > STARTUP_DOMINATES * self.costs.run(self.full_steps):
            return self.full_steps
        return short

    def exhaustive_estimate_s(self) -> float:
        """What trying every candidate at full length twice, and the baseline twice, would take:
        each candidate's full run at its measured speed-up per step (the baseline's when
        unmeasured)."""
        def full_run(c: Candidate) -> float:
            speed = (c.full or c.short or {}).get("speedup") or 1.0
            return self.costs.startup_s + self.full_steps * self.costs.step_s / speed
        return 2 * self.costs.run(self.full_steps) + sum(2 * full_run(c) for c in self.table)

    def _within_cap(self, seconds: float) -> bool:
        """The run fits the budget left and the search's cap: a third of the exhaustive
        estimate, less the baseline's two runs."""
        cap = self.exhaustive_estimate_s() / EXHAUSTIVE_SHARE - 2 * self.costs.run(self.full_steps)
        return self._fits(seconds) and self.spent_s + seconds <= cap

    def run(self, warmup: int) -> list[Candidate]:
        self.table = [Candidate(f) for f in self.candidates]
        short = self.short_steps(warmup)
        graded = [c for c in self.table if family_of(c.fix) in GRADED]
        others = [c for c in self.table if family_of(c.fix) not in GRADED]
        if short < self.full_steps:  # rung 1 where it is cheap: the families not bisected
            others = self._short_rung(others, short)
        self._bisect(graded, others)
        self._confirm()
        for c in self.table:
            if c.fate == "pending":
                c.fate, c.why = "not run: budget", "its full run would not fit the search's cap or budget"
        return self.table

    def _short_rung(self, cands: list[Candidate], short: int) -> list[Candidate]:
        """Rung 1: one run of ``short`` steps each; falls on what that length measures (did not
        apply, bytes, diverged, not faster per step than the baseline's spread)."""
        survivors, diverged_in = [], {}
        for c in cands:
            family = family_of(c.fix)
            if family in diverged_in:
                c.fate, c.why = "fell at short", f"not run: the milder {diverged_in[family]} diverged"
                continue
            if not self._fits(self.costs.run(short)):
                c.fate, c.why = "not run: budget", "the short run would not fit the budget left"
                continue
            c.short = r = self._run(c.fix, short, 1, "short")
            c.why = short_fate(r)
            c.fate = "fell at short" if c.why else "pending"
            self.say(self._progress(f"{c.fix} ({short} steps, 1 run)", r, c.why or "kept"))
            if c.why.startswith("diverged") and family in GRADED:
                diverged_in[family] = c.fix
            if not c.why:
                survivors.append(c)
        return survivors

    def _full(self, c: Candidate, repeat: int) -> bool:
        """Runs ``c`` at full length (run ``repeat``); False when it does not fit."""
        if not self._within_cap(self.costs.run(self.full_steps)):
            return False
        c.full = r = self._run(c.fix, self.full_steps, repeat, "full")
        self.say(self._progress(f"{c.fix} ({self.full_steps} steps, run {repeat} of 2)", r, r["judgement"]["verdict"]))
        return True

    def _bisect(self, graded: list[Candidate], others: list[Candidate]) -> None:
        """Rung 2, at full length: in each graded family (ordered mild -> aggressive; harm grows
        with aggressiveness) a bisection for its most aggressive setting not worse; every other
        candidate is its own probe.  Probes of all families interleaved — graded ones first, then
        the fastest at the short rung — one full run kept in reserve for :meth:`_confirm`."""
        families: dict[str, list[Candidate]] = {}
        for c in sorted(graded, key=lambda c: mildness(c.fix)):
            families.setdefault(family_of(c.fix), []).append(c)
        for c in others:
            families[c.fix] = [c]
        spans = {f: [0, len(cs) - 1] for f, cs in families.items()}
        order = list(families)
        while True:
            probes = [(f, families[f][(lo + hi + 1) // 2]) for f, (lo, hi) in spans.items() if lo <= hi]
            if not probes:
                return
            family, c = max(probes, key=lambda p: (family_of(p[1].fix) in GRADED,
                                                   (p[1].short or {}).get("speedup") or 0.0, -order.index(p[0])))
            if not self._within_cap(2 * self.costs.run(self.full_steps)) or not self._full(c, 1):
                return
            lo, hi = spans[family]
            i = families[family].index(c)
            if full_fate(c.full):
                c.fate, c.why = "fell at full", full_fate(c.full)
                for m in families[family][i + 1:hi + 1]:
                    m.fate, m.why = "fell at full", f"not run: {c.fix}, milder, was already worse"
                spans[family] = [lo, i - 1]
            else:
                c.fate = "kept"
                for m in families[family][lo:i]:
                    m.fate, m.why = "fell at full", f"not run: {c.fix}, further along its family, is not worse"
                spans[family] = [i + 1, hi]

    def _confirm(self) -> None:
        """Rung 3: a second full run (paired by seed) for the leader — the kept candidate fastest
        to the target — then the next, while the cap allows; one that turns worse falls.  The
        kept candidates judged on one run say so (``note``)."""
        kept = sorted([c for c in self.table if c.fate == "kept"], key=lambda c: -(_to_target(c) or 0.0))
        confirmed = None
        for c in kept:
            if not self._full(c, 2):
                c.note = "one full run: the second would not fit the search's cap or budget"
                continue
            if full_fate(c.full):
                c.fate, c.why = "fell at full", full_fate(c.full)
            elif _to_target(c):
                confirmed = c
                break
        for c in kept:
            if c.fate == "kept" and c.full["judgement"].get("runs", 1) < 2 and not c.note:
                c.note = f"one full run: {confirmed.fix} was confirmed first" if confirmed else "one full run"

    def _progress(self, what: str, r: dict, outcome: str) -> str:
        from commprof.cli.try_verdict import verdict_line
        sp = f"{r['speedup']:.2f}x per step" if r.get("speedup") else "speed unknown"
        return (f"[run {self.runs}, {self.spent_s / 60:.1f} of {self.budget_s / 60:.0f} min] {what}: {sp}; "
                f"{verdict_line(r['judgement'])} -> {outcome}")


def _to_target(c: Candidate) -> float | None:
    return c.full["judgement"]["time_to_target"]["speedup"] if c.full else None


def full_fate(r: dict) -> str:
    """Why a candidate's full run makes it fall ("" when not): as the short rung's, plus worse
    beyond the noise, or not reaching the target even extrapolated."""
    j = r["judgement"]
    if not r["applied"]:
        return f"did not apply ({r['why'] or ', '.join(r['status'])})"
    if r["bytes_ok"] is False:
        return "bytes did not change as the fix says"
    if j["quality_verdict"] == "worse":
        return f"worse beyond the noise ({_pct(j['worse_by'])} worse, noise ±{_pct(j['band'])})"
    t = j["time_to_target"]
    if t["target"] is not None and not t["reached"]:
        return "does not reach the target within twice the baseline's steps (extrapolated from its curve)"
    return ""


def short_fate(r: dict) -> str:
    """Why a candidate falls at the short rung ("" when it goes on)."""
    j = r["judgement"]
    if not r["applied"]:
        return f"did not apply ({r['why'] or ', '.join(r['status'])})"
    if r["bytes_ok"] is False:
        return "bytes did not change as the fix says"
    if j.get("diverged"):
        return j["diverged"]
    spread = max(j.get("spread_base") or 0.0, MIN_GAIN)
    if not r.get("speedup") or r["speedup"] <= 1 + spread:
        speed = f"{r['speedup']:.2f}x" if r.get("speedup") else "unknown"
        return f"not faster per step ({speed}; needs more than the baseline's run-to-run spread, at least {MIN_GAIN:.0%}: {spread:.1%})"
    return ""


def _pct(x: float | None) -> str:
    return "unknown" if x is None else f"{x * 100:.1f} %"


def pareto_lines(table: list[Candidate]) -> list[str]:
    """The full rung's candidates: effective speed-up against how much worse (with its band),
    ``*`` on the Pareto front (no other is both faster to the target and less worse); then why
    every other candidate fell."""
    finals = [c for c in table if c.full is not None]
    if not finals:
        return ["", "no candidate reached the full runs"] + [f"  {c.fix:<20} {c.fate}: {c.why}" for c in table]
    out = ["", "Pareto table (full runs; * = on the front: none is both faster to the target and less worse; "
           "e = extrapolated beyond its run, at most twice the baseline's steps):",
           f"  {'fix':<20} {'speed-up':>9} {'to target':>9}  {'worse by':>9}  {'noise':>8}  verdict"]

    def point(c):
        j = c.full["judgement"]
        return (j["time_to_target"]["speedup"] or 0.0, j["worse_by"] if j["worse_by"] is not None else math.inf)

    for c in sorted(finals, key=lambda c: -point(c)[0]):
        j = c.full["judgement"]
        s, w = point(c)
        front = not any(point(o)[0] > s and point(o)[1] < w for o in finals if o is not c)
        eff = _x(j["time_to_target"]["speedup"]) + ("e" if j["time_to_target"].get("extrapolated") else "")
        band = "±" + _pct(j["band"]) if j["band"] is not None else "none"
        out.append(f"{'*' if front else ' '} {c.fix:<20} {_x(c.full['speedup']):>9} {eff:>9}  "
                   f"{_pct(j['worse_by']):>9}  {band:>8}  {c.fate}" + (f": {c.why}" if c.why else ""))
    fell = [c for c in table if c.full is None]
    if fell:
        out.append("fell before the full runs:")
        out += [f"  {c.fix:<20} {c.fate}: {c.why}" for c in fell]
    return out


def _x(v: float | None) -> str:
    return f"{v:.2f}x" if v else "-"


def truncated(report: Report, steps: int) -> Report:
    """The baseline's report cut to its first ``steps`` steps (the loss, the per-step rows and the
    step time over them; the job's metrics, taken at the end, dropped)."""
    per_step = [r for r in report.steps.per_step if r.step < steps]
    durations = [r.duration_mean_s for r in per_step if r.duration_mean_s is not None]
    kpis = report.kpis.replaced(step_time_s=sum(durations) / len(durations) if durations else None)
    training = report.training
    if training is not None:
        loss = training.loss
        if loss:
            keep = [i for i, s in enumerate(loss.steps) if s < steps]
            loss = loss.replaced(steps=[loss.steps[i] for i in keep], values=[loss.values[i] for i in keep])
        training = training.replaced(loss=loss).without("metrics")
    return report.replaced(steps=report.steps.replaced(per_step=per_step), kpis=kpis, training=training)


def full_length(base_reports: list[Report]) -> int:
    """Steps of the baseline's runs (the shortest run's last step + 1)."""
    lasts = [max((r.step for r in d.steps.per_step), default=-1) for d in base_reports]
    return min(lasts) + 1


def costs_of(walls: list[float], base_reports: list[Report], steps: int) -> Costs:
    """A run's start-up and time per step, from the baseline's runs (wall time, step time)."""
    step_s = [d.kpis.step_time_s for d in base_reports if d.kpis.step_time_s]
    per = sum(step_s) / len(step_s) if step_s else 0.0
    wall = sum(walls) / len(walls)
    return Costs(max(wall - steps * per, 0.0), per)
