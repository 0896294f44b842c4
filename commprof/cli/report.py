"""``commprof report [RUN_DIR]``"""
from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from commprof.errors import UsageError
from commprof.format.text import printable

if TYPE_CHECKING:
    from commprof.analysis.result.model import Report


def summarize_run(run_dir, warmup: int, jobs: int | None = None, scheduler: str | None = None,
                  node_summaries: bool = True, rank: int | None = None):
    """Load and analyse a run (:class:`commprof.analysis.outcome.summary.Summary`): a run directory (or
    several, merged), or PyTorch-profiler traces (files or a directory of them).  A run's files
    are reduced by ``jobs`` local processes (default: one per core, for runs big enough) or on
    the Dask cluster at ``scheduler``; captures a node summary stands for are taken from it unless
    ``node_summaries`` is False.  ``rank``: the rank of a single trace file that records none."""
    from commprof.analysis.outcome.sources import summarize_path
    if warmup < 0:
        raise UsageError(f"--warmup {warmup}: must be >= 0")
    if jobs is not None and jobs < 1:
        raise UsageError(f"--jobs {jobs}: must be >= 1")
    if jobs is not None and scheduler:
        raise UsageError("--jobs and --scheduler: give one (the cluster has its own workers)")
    executor = None
    if scheduler:
        from commprof.analysis.scale.reduce import dask_executor
        executor = dask_executor(scheduler)
    try:
        summary = summarize_path(run_dir, warmup, rank=rank, jobs=jobs, executor=executor,
                                 progress=_progress_printer(), node_summaries=node_summaries)
    finally:
        if executor is not None:
            executor.shutdown(wait=False)
    for n in summary.notes:  # a bad trace among good ones: one line each, the rest is reported
        if n.kind == "trace_file":
            print(f"commprof: {printable(n.text)}", file=sys.stderr)
    return summary


def _progress_printer(every_s: float = 2.0):
    """Progress of a long reduction on stderr: a terminal only, first after ``every_s``."""
    import time
    if not sys.stderr.isatty():
        return None
    state = {"last": time.monotonic(), "shown": False}

    def show(done: int, total: int) -> None:
        now, final = time.monotonic(), done == total
        if now - state["last"] >= every_s or (final and state["shown"]):
            state.update(last=now, shown=True)
            print(f"commprof: reduced {done:,}/{total:,} capture files", end="\n" if final else "\r",
                  file=sys.stderr, flush=True)
    return show


def build_report(run_dir, warmup: int, jobs: int | None = None, scheduler: str | None = None,
                 node_summaries: bool = True, rank: int | None = None) -> "Report":
    """Load and analyse a run (or profiler traces) into its typed report."""
    from commprof.analysis.outcome.assemble import assemble
    return assemble(summarize_run(run_dir, warmup, jobs, scheduler, node_summaries, rank))


def report_command(run_dir, fmt: str | None, output: str | None, warmup: int,
                   width: int | None, jobs: int | None = None, scheduler: str | None = None,
                   node_summaries: bool = True, rank: int | None = None) -> int:
    """``run_dir``: None (the latest run), one path, or a list (directories of one run, merged)."""
    from commprof.report.renderers import choose, is_exporter
    renderer = choose(fmt, output)
    dirs = [run_dir] if isinstance(run_dir, str) else list(run_dir or [])
    from commprof.analysis.outcome.trace_summary import is_trace_input
    traces = bool(dirs) and is_trace_input(dirs)
    saved = (not traces and len(dirs) == 1 and dirs[0].endswith(".json")
             and not os.path.isdir(dirs[0]))
    target = dirs if len(dirs) > 1 else (dirs[0] if dirs else None)
    if rank is not None and (not traces or saved):
        raise UsageError(f"--rank {rank}: gives the rank of a profiler trace file that records none")
    if is_exporter(renderer):  # the trace: every record, straight from the run
        if traces:
            from commprof.report.trace import merge_profiler_traces
            return _emit(merge_profiler_traces(dirs), output)
        if saved:
            raise UsageError(f"the {renderer.name} is built from a run directory (every record), not "
                             f"from a saved report: `commprof report RUN_DIR -o run{renderer.suffixes[0]}`")
        return _emit(renderer.render_run(target), output)
    if saved:
        from commprof.report.document import load
        report = load(dirs[0])  # a saved report, rendered again (e.g. as a table)
    else:
        report = build_report(target, warmup, jobs, scheduler, node_summaries, rank)
    if output:
        color = False
    else:
        color = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    return _emit(renderer.render(report, color=color, width=width), output)


def _emit(text: str, output: str | None) -> int:
    if output:
        try:
            with open(output, "w") as fh:
                fh.write(text)
        except OSError as exc:
            raise UsageError(f"{output}: cannot write: {exc.strerror}") from exc
        print(f"commprof: wrote {output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
