"""The verdict and the notes: one set of levels, structured notes, no prose parsed back.

Every output (terminal, HTML, JSON, gate outputs, the ``commprof run`` closing line) takes the
level and the sentence from :func:`assess`; notes are :class:`Note` (kind, severity, text) and
renderers choose them by ``kind``, never by their words.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

# Exposed communication as a share of step time (time-weighted, docs/kpis.md): below the first
# bound a job is not communication-bound, below the second partly, else bound.
LEVELS = (
    (0.05, "not_bound", "not communication-bound",
     "a faster network will not help much"),
    (0.20, "partly_bound", "partly communication-bound",
     "better overlap or fewer bytes may pay off"),
    (float("inf"), "bound", "communication-bound",
     "overlap, compress or shard differently before buying links"),
)


@dataclass(frozen=True)
class Verdict:
    """Is communication what slows this job down?  ``level`` is ``none`` (no communication
    captured), ``not_bound``, ``partly_bound``, ``bound`` or ``unmeasured`` (NCCL without a GPU
    timeline)."""

    level: str
    label: str
    sentence: str
    exposed_fraction: float | None
    comm_fraction: float | None
    basis: str  # "step time" or "wall time", GPU ones marked ("GPU step time": traces;
    # "step time (GPU timeline)": GPU windows), or "none" (unmeasured)
    speedup_if_hidden: float | None  # perfect overlap: steps no shorter than max(compute, transfer)
    speedup_bound: float | None  # communication removed: T/(T-C) on host clocks, T/(T-E) on GPU

    def to_dict(self) -> dict:
        """JSON-ready (an unbounded speed-up, communication all of the step, is null)."""
        return {k: (None if isinstance(v, float) and v == float("inf") else v)
                for k, v in asdict(self).items()}


def _speedup(fraction: float | None) -> float | None:
    if fraction is None:
        return None
    return 1 / (1 - fraction) if fraction < 1 else float("inf")


UNMEASURED = ("GPU timeline not measured: on NCCL the host sees only each collective's launch, "
              "so commprof cannot tell how much of the step communication takes; record GPU "
              "windows (`commprof run --gpu-windows`) or report a torch.profiler trace.")


def _model_bounds(kpis: dict, exposed: float, total: float, baseline) -> tuple[float | None, float | None]:
    """(perfect overlap, communication removed) speed-ups: the savings model's own limits
    (:func:`commprof.analysis.outcome.whatif.bounds`) with a baseline, else the same formulas on the
    time-weighted fractions: hidden, steps take max(T − E, C); removed, T − C on host clocks and
    T − E on a GPU timeline (the compute that ran under communication stays)."""
    if baseline is not None:
        from commprof.analysis.outcome.whatif import bounds
        return bounds(baseline)
    gpu = kpis.get("time_basis") in ("gpu_trace", "gpu_windows")
    return _speedup(1 - max(1 - exposed, total)), _speedup(exposed if gpu else total)


def waiting_share(kpis: dict) -> float | None:
    """Waiting for late ranks as a share of communication in flight (None when not measured)."""
    wait, comm = kpis.get("wait_s_per_step"), kpis.get("comm_s_per_step")
    if wait is None or not comm:
        return None
    return min(1.0, wait / comm)


WAIT_DOMINATES = 0.5


def assess(kpis: dict, baseline=None) -> Verdict:
    """The verdict of a run's KPIs (time-weighted step fractions, else whole-run ones), on the
    GPU's timeline where ``kpis.time_basis`` says so; ``unmeasured`` for an NCCL job without
    GPU figures (``host_launch``: launch times are not communication time).  Its speed-ups are
    the savings model's limits (``baseline``: :class:`commprof.analysis.outcome.whatif.Baseline`), so
    no what-if row exceeds them."""
    if kpis.get("time_basis") == "host_launch":
        return Verdict("unmeasured", "GPU timeline not measured", UNMEASURED, None, None, "none",
                       None, None)
    tb = kpis.get("time_basis")
    pre, post = ("GPU ", "") if tb == "gpu_trace" else ("", " (GPU timeline)") if tb == "gpu_windows" else ("", "")
    exposed, total, basis = (kpis.get("exposed_comm_fraction"), kpis.get("comm_fraction"),
                             f"{pre}step time{post}")
    if exposed is None:
        exposed, total, basis = (kpis.get("exposed_comm_fraction_wall"),
                                 kpis.get("comm_fraction_wall"), f"{pre}wall time{post}")
        baseline = None  # the model projects steps; wall-time fractions have none
    if exposed is None or (total or 0) == 0:
        return Verdict("none", "no communication", "No communication captured: this job is not "
                       "communication-bound.", exposed, total, basis, None, None)
    total = max(total, exposed)
    hidden, bound = _model_bounds(kpis, exposed, total, baseline)
    level, label, advice = next((lv, lb, ad) for limit, lv, lb, ad in LEVELS if exposed < limit)
    wait = waiting_share(kpis)
    if wait is not None and wait >= WAIT_DOMINATES and level != "not_bound":
        advice = ("most of it is waiting for late ranks — load imbalance, a straggler or input "
                  "skew: balance the ranks before buying bandwidth")
    removed = "removing its exposed part" if tb in ("gpu_trace", "gpu_windows") else "removing it"
    waiting = f", {wait:.0%} of it waiting for late ranks" if wait is not None else ""
    sentence = (f"Communication is exposed for {exposed:.0%} of {basis} (in flight {total:.0%}"
                f"{waiting}): perfect overlap would speed steps up at most {_fmt(hidden)}, "
                f"{removed} at most {_fmt(bound)} — {label}: {advice}.")
    return Verdict(level, label, sentence, exposed, total, basis, hidden, bound)


def _fmt(speedup: float | None) -> str:
    if speedup is None:
        return "unknown"
    return "unbounded" if speedup == float("inf") else f"{speedup:.2f}x"


@dataclass(frozen=True)
class Note:
    """Something the reader should know about the run.  ``severity``: info, warning, error."""

    kind: str
    severity: str
    text: str

    def to_dict(self) -> dict:
        return asdict(self)


def straggler_note(s: dict, exposed_s_per_step: float | None) -> Note:
    """A significant straggler: how often it was last, and what its lateness costs the others —
    in flight, and the part of it that can be exposed (at most the exposed communication)."""
    wait = s["wait_cost_per_step_s"]
    exposed = min(wait, exposed_s_per_step) if exposed_s_per_step is not None else wait
    return Note("straggler", "warning",
                f"rank {s['rank']} was last in {s['share_of_steps']:.0%} of measured steps: the "
                f"others waited {wait * 1e3:.1f} ms/step for it in their collectives, of which at "
                f"most {exposed * 1e3:.1f} ms/step blocked them (exposed communication)")


def warmup_note(warmup: int, counts: dict[int, int]) -> Note | None:
    """``--warmup`` at or past a rank's step count: only its last step is measured."""
    short = sorted(r for r, n in counts.items() if n <= warmup)
    if not short:
        return None
    n = min(counts[r] for r in short)
    return Note("warmup", "warning",
                f"--warmup {warmup} leaves out all of the {n} step(s) of rank(s) "
                f"{', '.join(map(str, short[:8]))}{' …' if len(short) > 8 else ''}: only the last "
                f"step is measured; give a smaller --warmup")


def slow_step_note(per_step: list[dict], median_s: float | None) -> Note | None:
    """Steps over 2× the median step with no more communication than usual: time spent outside
    training (evaluation, checkpoints, logging) that falls into a step."""
    if not per_step or not median_s:
        return None
    comm = sorted(r.get("comm_s") or 0.0 for r in per_step)
    comm_median = comm[len(comm) // 2]
    slow = [r for r in per_step if (r.get("duration_s") or 0) > 2 * median_s
            and (r.get("comm_s") or 0) <= 1.5 * comm_median + 0.1 * median_s]
    if not slow:
        return None
    steps = ", ".join(str(r["step"]) for r in slow[:8]) + (" …" if len(slow) > 8 else "")
    return Note("slow_steps", "info",
                f"{len(slow)} step(s) ({steps}) took over 2x the median step without more "
                f"communication: time outside training (evaluation, checkpoints) falls into them; "
                f"wrap each training step in `with commprof.step_scope():` to leave it out")


def texts(notes: list[Note]) -> list[str]:
    """The ``notes`` list of the document (the texts, in order)."""
    return [n.text for n in notes]
