"""The per-process reduction of a run, in this process, in a pool of local processes, or on a
Dask cluster (docs/scaling.md).

Each capture file is reduced on its own by :func:`reduce_file` — :func:`~commprof.analysis.host.rank.
analyze_rank` plus the columns the cross-rank matching and the clock alignment need — a pure
function of one file, so files are reduced wherever there is a core, and :func:`reduce_paths` yields
the results in the files' order whatever ran them: the report is the same with any ``jobs``.
Which files are reduced here and which are taken from node summaries is
:func:`commprof.analysis.scale.node_summary.reduce_run`'s choice.
"""
from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Executor, ProcessPoolExecutor
from pathlib import Path
from typing import Iterator

from commprof.analysis.cross import clocks, crossrank
from commprof.analysis.host.load import RankData, read_rank
from commprof.analysis.host.rank import RankResult, analyze_rank
from commprof.analysis.scale import summary_file
from commprof.errors import CaptureFormatError, UsageError

# Below this much capture data a pool costs more than it saves: starting the workers (a forkserver
# that imports pandas once, then one fork per worker) added ~0.3 s on a 2-core x86_64 machine,
# where one process reduces 25-75 MB of captures per second (docs/scaling.md).
AUTO_POOL_MIN_BYTES = 64 << 20
FILES_PER_TASK_TARGET = 8  # tasks per worker: small enough to balance, large enough to amortize


def reduce_data(rd: RankData, note: str | None = None) -> RankResult:
    """The reduction of one process's frames."""
    names, rows = crossrank.matching_columns(rd.collectives, rd.groups)
    return RankResult(rd.rank, analyze_rank(rd), names, rows, clocks.sync_marks(rd.marks), note)


def reduce_file(path: str | Path) -> RankResult:
    """The reduction of one capture file (what a worker runs)."""
    path = Path(path)
    rd = read_rank(path)
    damage = rd.process["damage"]
    note = f"{path.name}: {damage}; records before it were kept" if damage else None
    return reduce_data(rd, note)


def reduce_files(paths: list[str]) -> bytes:
    """Several files in one task (fewer round trips to the scheduler), returned encoded by
    :mod:`~commprof.analysis.scale.summary_file` (data, never code: :func:`decode_results` reads it
    without pickle, whatever a worker sends back)."""
    return summary_file.encode([reduce_file(p) for p in paths], {"files": list(paths)})


def decode_results(data, paths: list[str]) -> list[RankResult]:
    """The reductions of ``paths`` from what :func:`reduce_files` returned on a worker: anything
    but the bytes of an intact summary of exactly these files raises CaptureFormatError."""
    where = paths[0] if paths else "worker result"
    if type(data) is not bytes:
        raise CaptureFormatError(where, 0, f"a worker returned a {type(data).__name__}, not an "
                                           "encoded reduction; nothing of it was used")
    meta, results = summary_file.decode(data, where)
    if meta.get("files") != list(paths) or len(results) != len(paths):
        raise CaptureFormatError(where, 0, "a worker returned the reduction of other files")
    return results


def default_jobs() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def plan_jobs(paths: list[Path], jobs: int | None) -> int:
    """Worker processes for these files: ``jobs`` when given (1: in this process); by default
    one per core, unless the run is too small for a pool to pay off (``AUTO_POOL_MIN_BYTES``)."""
    if jobs is not None:
        if jobs < 1:
            raise UsageError(f"--jobs {jobs}: must be >= 1")
        return max(1, min(jobs, len(paths)))
    total = 0
    for p in paths:
        try:
            total += p.stat().st_size
        except OSError:
            continue  # read_rank says what is wrong with it, in its turn
    if total < AUTO_POOL_MIN_BYTES:
        return 1
    return max(1, min(default_jobs(), len(paths)))


def local_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` local processes, forked from a server that has imported the
    analysis once (safe beside the threads of ``commprof run``, unlike a plain fork)."""
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    ctx = multiprocessing.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(["commprof.analysis.scale.reduce"])
    return ProcessPoolExecutor(max_workers=workers, mp_context=ctx)


def dask_executor(address: str) -> Executor:
    """A ``concurrent.futures`` executor on the Dask cluster at ``address`` (``tcp://host:8786``,
    or a scheduler file); needs ``pip install 'commprof[cluster]'``."""
    try:
        from distributed import Client
    except ImportError as exc:
        raise UsageError(f"--scheduler {address}: Dask is not installed "
                         "(pip install 'commprof[cluster]')") from exc
    if "://" not in address and not os.path.isfile(address) and ("/" in address or address.endswith(".json")):
        raise UsageError(f"--scheduler {address}: no such scheduler file (give tcp://HOST:PORT or "
                         "the file `dask scheduler --scheduler-file` wrote)")
    try:
        client = (Client(scheduler_file=address, timeout="5s") if os.path.isfile(address)
                  else Client(address, timeout="5s"))
    except (OSError, ValueError, TimeoutError) as exc:  # unreachable, or not an address
        raise UsageError(f"--scheduler {address}: cannot reach the Dask scheduler ({exc})") from exc
    return client.get_executor()


def reduce_paths(paths: list[Path], jobs: int | None = None,
                 executor: Executor | None = None) -> Iterator[RankResult]:
    """:func:`reduce_file` of each path, in order: on ``executor``, else by :func:`plan_jobs`
    local processes (a pool made for this call and shut down when the iterator is done)."""
    workers = 1 if executor is not None else plan_jobs(paths, jobs) if paths else 1
    if executor is None and workers == 1:
        yield from map(reduce_file, paths)
        return
    pool = executor if executor is not None else local_pool(workers)
    try:
        width = getattr(pool, "_max_workers", None) or 32
        per_task = max(1, min(64, len(paths) // (width * FILES_PER_TASK_TARGET)))
        batches = [[str(p) for p in paths[i:i + per_task]] for i in range(0, len(paths), per_task)]
        for paths_, data in zip(batches, pool.map(reduce_files, batches)):
            yield from decode_results(data, paths_)
    finally:
        if executor is None:
            pool.shutdown(wait=True, cancel_futures=True)
