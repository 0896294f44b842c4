"""The one entry from a path to a :class:`~commprof.analysis.outcome.summary.Summary`: a run directory
(or several, merged) or PyTorch-profiler traces — every command (report, gate, compare, whatif)
reads its input through :func:`summarize_path`."""
from __future__ import annotations

from commprof.errors import UsageError


def summarize_path(target, warmup: int, rank: int | None = None, **reduce):
    """``target``: None (the latest run), a path, or a list of paths; ``rank``: the rank of a
    single profiler trace that records none; ``reduce``: how a run directory's files are reduced
    (``jobs``, ``executor``, ``progress`` of :func:`commprof.analysis.outcome.summary.summarize`)."""
    from commprof.analysis.outcome.trace_summary import is_trace_input, summarize_traces
    if target and is_trace_input(target):
        from commprof.format import kineto
        traces, errors = kineto.read_traces(target if isinstance(target, (list, tuple)) else [target],
                                            rank=rank)
        if not traces:
            if len(errors) == 1:
                raise errors[0]
            raise UsageError(f"{target}: no readable profiler trace ({len(errors)} left out: "
                             f"{'; '.join(str(e) for e in errors[:3])})")
        first = target[0] if isinstance(target, (list, tuple)) else target
        return summarize_traces(traces, errors, first)
    if rank is not None:
        raise UsageError(f"--rank {rank}: gives the rank of a profiler trace file; {target or 'a run'} "
                         "is a run (its captures say their ranks)")
    from commprof.analysis.host.load import open_run
    from commprof.analysis.outcome.summary import summarize
    return summarize(open_run(target), warmup=warmup, **reduce)
