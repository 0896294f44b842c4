"""Synthetic run directories for unit tests, written through commprof's real writer.

A run is described compactly, per rank: collectives (:class:`Coll`), waits (:class:`Wait`), marks
(``(kind, t, value)`` tuples, e.g. from :func:`step_marks`), backward spans (:class:`Span`) and a
few lifecycle instants (capture start, process-group init/teardown, exit).  :func:`write_run`
turns that into ``manifest.json`` (via :func:`commprof.launch.rundir.write_manifest`) and
``ranks/*.cpf`` (via :class:`commprof.format.writer.CaptureWriter`), exactly the files
``commprof run`` leaves behind, so every test of the analysis also exercises the format.

All times are integer nanoseconds; :data:`MS` converts milliseconds.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from commprof.format import layout, schema
from commprof.format.writer import CaptureWriter, encode_batch, encode_json
from commprof.launch import rundir

MS = 1_000_000  # nanoseconds per millisecond
MAIN_THREAD = 0x7F00_0000_1000  # the training thread of every synthetic rank
OTHER_THREAD = 0x7F00_0000_2000  # e.g. a side thread issuing a few collectives


@dataclass
class Coll:
    """One collective / P2P call of one rank."""

    op: str
    n: int = 2  # group size
    in_bytes: int = 0
    out_bytes: int | None = None  # default: in_bytes
    t_issue: int = 0
    t_return: int | None = None  # default: t_issue (host call returned at once)
    t_done: int | None = None  # completion (a DONE record); None: no completion record
    thread: int = MAIN_THREAD
    in_backward: bool = False
    dtype: str = "float32"
    peer: int = -1
    failed: bool = False
    done_source: int = schema.DONE_FUTURE
    itemsize: int = 4  # numel = bytes // itemsize


@dataclass
class Wait:
    """A span during which a thread waited on communication."""

    t_start: int
    t_end: int
    thread: int = MAIN_THREAD
    coll: int | None = None  # index into the rank's collectives (its Work); None: unmatched
    source: int = schema.WAIT_WORK


@dataclass
class Span:
    """An autograd backward call on one thread."""

    t_start: int
    t_end: int
    thread: int = MAIN_THREAD
    kind: int = schema.SPAN_BACKWARD


@dataclass
class Kernel:
    """One GPU op a GPU window recorded (a ``commprof run`` on CUDA), on the capture's clock."""

    name: str
    start: int
    end: int
    step: int  # the step it was launched in
    window: int = 0
    category: str = "kernel"  # schema.GPU_CATEGORIES
    launch: int | None = None  # the launching runtime call's start (None: no launch matched)
    stream: int = 7
    correlation: int = 0


@dataclass
class Rank:
    """Everything one rank process recorded."""

    rank: int
    collectives: list[Coll] = field(default_factory=list)
    waits: list[Wait] = field(default_factory=list)
    marks: list[tuple[int, int, int]] = field(default_factory=list)
    spans: list[Span] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)  # extra JSON frames, e.g. "degraded"
    host: str = "node0"
    world_size: int | None = None  # default: the run's world size
    start: int | None = 0  # MARK_START instant (None: no such mark)
    pg_init: int | None = None  # MARK_PG_INIT instant
    pg_destroy: int | None = None  # MARK_PG_DESTROY (value 0: the default group) instant
    exit: int | None = None  # MARK_EXIT instant
    complete: bool = True  # a trailer closes the file
    exit_reason: str = "exit"
    backend: str = "gloo"
    groups: bool = True  # write process-group frames (False: a job without init_process_group)
    restart: int = 0
    pid: int | None = None  # default: 10000 + rank
    batch: int = 3  # records per frame (several frames per kind exercise the reader's joining)
    gpu: list[Kernel] = field(default_factory=list)  # GPU window records
    gpu_windows: list[tuple[int, int, int]] = field(default_factory=list)  # (window, first step, steps)


def step_marks(times, kind: int = schema.MARK_STEP_OPTIMIZER, value: int = 0) -> list[tuple[int, int, int]]:
    """Marks of ``kind`` at each of ``times`` (optimizer ordinal / explicit counter = ``value``)."""
    if kind == schema.MARK_STEP_EXPLICIT:
        return [(kind, int(t), i + 1) for i, t in enumerate(times)]
    return [(kind, int(t), value) for t in times]


def _chunks(rows: list, size: int):
    for i in range(0, len(rows), max(size, 1)):
        yield rows[i:i + max(size, 1)]


def rank_frames(spec: Rank, world_size: int) -> tuple[str, dict, list[bytes]]:
    """(file name, header, encoded frames) of one rank's capture file."""
    pid = spec.pid if spec.pid is not None else 10000 + spec.rank
    world = spec.world_size if spec.world_size is not None else world_size
    header = {
        "rank": spec.rank, "world_size": world, "rank_source": "env", "local_rank": spec.rank,
        "group_rank": 0, "restart": spec.restart, "run_id": "synthetic", "host": spec.host,
        "pid": pid, "argv": ["train.py"], "clock": {"wall_ns": 0, "mono_ns": 0,
                                                   "name": "perf_counter_ns"},
        "torch_version": "synthetic", "python": "3", "commprof_version": "test",
        "missing_ops": [],
    }
    # One process group per distinct group size; the world-sized one gets id 0.
    sizes = sorted({c.n for c in spec.collectives} | {world})
    gids = {world: 0}
    for n in sizes:
        gids.setdefault(n, len(gids))
    frames = []
    for n, gid in sorted(gids.items(), key=lambda kv: kv[1]) if spec.groups else ():
        frames.append(encode_json({"type": "group", "id": gid, "name": str(gid),
                                   "desc": "default_pg" if gid == 0 else f"group{gid}",
                                   "size": n, "rank": min(spec.rank, n - 1),
                                   "backend": spec.backend, "ranks": list(range(n))}))
    coll_rows, done_rows, seq = [], [], {}
    for i, c in enumerate(spec.collectives):
        out_bytes = c.in_bytes if c.out_bytes is None else c.out_bytes
        gid = gids[c.n]
        seq[gid] = seq.get(gid, 0) + 1
        flags = ((schema.FLAG_HAS_FUTURE if c.t_done is not None and c.done_source == schema.DONE_FUTURE else 0)
                 | (schema.FLAG_IN_BACKWARD if c.in_backward else 0)
                 | (schema.FLAG_FAILED if c.failed else 0))
        t_return = c.t_issue if c.t_return is None else c.t_return
        coll_rows.append((i, schema.OP_INDEX[c.op], gid, seq[gid], schema.DTYPE_INDEX[c.dtype], flags,
                          c.peer, c.in_bytes // c.itemsize, c.in_bytes, out_bytes // c.itemsize,
                          out_bytes, c.thread, c.t_issue, t_return))
        if c.t_done is not None:
            done_rows.append((i, c.t_done, c.done_source))
    wait_rows = [(-1 if w.coll is None else w.coll, w.thread, w.t_start, w.t_end, w.source)
                 for w in spec.waits]
    marks = list(spec.marks)
    for kind, t in ((schema.MARK_START, spec.start), (schema.MARK_PG_INIT, spec.pg_init),
                    (schema.MARK_PG_DESTROY, spec.pg_destroy), (schema.MARK_EXIT, spec.exit)):
        if t is not None:
            marks.append((kind, int(t), pid if kind == schema.MARK_START else 0))
    marks.sort(key=lambda m: m[1])
    span_rows = [(s.kind, s.thread, s.t_start, s.t_end) for s in spec.spans]
    for kind, rows in ((schema.KIND_COLL, coll_rows), (schema.KIND_DONE, done_rows),
                       (schema.KIND_WAIT, wait_rows), (schema.KIND_MARK, marks),
                       (schema.KIND_SPAN, span_rows)):
        for chunk in _chunks(rows, spec.batch):
            frames.append(encode_batch(kind, chunk))
    frames += _gpu_frames(spec)
    for event in spec.events:
        frames.append(encode_json(event))
    name = layout.capture_name(spec.rank, spec.restart, pid)
    return name, header, frames


def _gpu_frames(spec: Rank) -> list[bytes]:
    """The name table, GPU records and ``gpu_window`` frames of a rank's GPU windows."""
    if not spec.gpu and not spec.gpu_windows:
        return []
    names = sorted({k.name for k in spec.gpu})
    index = {n: i for i, n in enumerate(names)}
    rows = [(k.start, k.end, schema.NO_LAUNCH if k.launch is None else k.launch, k.correlation,
             k.stream, index[k.name], k.window, k.step, 0, schema.GPU_CATEGORY_INDEX[k.category])
            for k in spec.gpu]
    frames = [encode_json({"type": "gpu_names", "first": 0, "names": names})]
    frames += [encode_batch(schema.KIND_GPU, chunk) for chunk in _chunks(rows, spec.batch)]
    for window, first, n in spec.gpu_windows:
        mine = [k for k in spec.gpu if k.window == window]
        frames.append(encode_json({
            "type": "gpu_window", "window": window, "first_step": first, "steps": n,
            "steps_ended": n, "end_reason": "scheduled", "activity": "cuda",
            "t_open": min((k.start for k in mine), default=0), "t_close": max((k.end for k in mine), default=0),
            "clock": {"offset_ns": 0, "error_ns": 0}, "stats": {"records": len(mine)},
            "cost_ns": {"start_ns": MS, "stop_ns": MS}, "trace": None}))
    return frames


def write_capture(path: str | Path, spec: Rank, world_size: int = 1) -> Path:
    """Write one rank's capture file at ``path`` through :class:`CaptureWriter`."""
    _, header, frames = rank_frames(spec, world_size)
    writer = CaptureWriter(str(path), header)
    for frame in frames:
        writer.write(frame)
    if spec.complete:
        writer.close({"reason": spec.exit_reason, "records": len(spec.collectives)})
    else:
        writer.close(None)
    return Path(path)


def write_run(run_dir: str | Path, ranks: list[Rank], *, world_size: int | None = None,
              command: list[str] | None = None, exit_code: int | None = 0,
              manifest: dict | None = None) -> Path:
    """Create ``run_dir`` (manifest + one capture file per rank) and return it."""
    run_dir = Path(run_dir)
    layout.ranks_dir(run_dir).mkdir(parents=True, exist_ok=True)
    world = world_size if world_size is not None else max((r.rank for r in ranks), default=-1) + 1
    now = time.time_ns()
    data = {
        "schema": rundir.MANIFEST_SCHEMA, "status": "finished",
        "command": list(command if command is not None else ["torchrun", "train.py"]),
        "cwd": str(run_dir), "host": "node0", "start_wall_ns": now - 5_000_000_000,
        "end_wall_ns": now, "env": {}, "commprof_version": "test", "torch_version": "synthetic",
        "exit_code": exit_code, "signal": None,
    }
    data.update(manifest or {})
    rundir.write_manifest(run_dir, data)
    for spec in ranks:
        name, _, _ = rank_frames(spec, world)
        write_capture(layout.ranks_dir(run_dir) / name, spec, world)
    return run_dir


def capture_file(run_dir: str | Path, rank: int = 0) -> Path:
    """The capture file of ``rank`` in a run written by :func:`write_run`."""
    (path,) = [p for p in layout.capture_paths(run_dir) if p.name.startswith(f"rank{rank:05d}.")]
    return path


def periodic_rank(rank: int = 0, *, steps: int = 3, step_ms: int = 100, issue_ms: int = 50,
                  return_ms: int = 52, done_ms: int = 80, wait_ms: tuple[int, int] | None = (72, 80),
                  op: str = "all_reduce", n: int = 2, nbytes: int = 4_000_000,
                  host: str = "node0", destroy: bool = True) -> Rank:
    """A rank whose every step (``step_ms`` long, optimizer marks) holds one collective.

    In step k (starting at ``k*step_ms``): issue at +issue_ms, host return at +return_ms,
    completion at +done_ms, and a Python wait on it over +wait_ms.  Process-group init at 0 and
    teardown at the end of the last step.
    """
    colls, waits = [], []
    for k in range(steps):
        t0 = k * step_ms * MS
        colls.append(Coll(op, n=n, in_bytes=nbytes, t_issue=t0 + issue_ms * MS,
                          t_return=t0 + return_ms * MS, t_done=t0 + done_ms * MS))
        if wait_ms is not None:
            waits.append(Wait(t0 + wait_ms[0] * MS, t0 + wait_ms[1] * MS, coll=k))
    end = steps * step_ms * MS
    return Rank(rank, collectives=colls, waits=waits,
                marks=step_marks([(k + 1) * step_ms * MS for k in range(steps)]),
                host=host, start=0, pg_init=0, pg_destroy=end if destroy else None,
                exit=end + MS)


def probe_result(**extra) -> dict:
    """A commprof.probe/1 result: all_reduce at 1 MB and 16 MB, busbw growing with size."""
    return {"schema": "commprof.probe/1", "backend": "gloo", "world_size": 2, "nodes": 1,
            "latency_us": {"all_reduce": 120.0, "sendrecv": 40.0},
            "results": [{"op": "all_reduce", "size_bytes": s, "busbw_gbps": 0.5 * s / 4_000_000,
                         "algbw_gbps": 0.5 * s / 4_000_000, "time_median_s": 1e-3,
                         "time_p99_s": 2e-3, "iters": 5, "count": s // 4, "bus_factor": 1.0}
                        for s in (1_000_000, 16_000_000)], **extra}


def nccl_rank(rank: int = 0, *, steps: int = 10, step_ms: int = 100, window: tuple[int, int] | None = (5, 3),
              compute_ms: tuple[int, int] = (10, 60), comm_ms: tuple[int, int] = (40, 90),
              nbytes: int = 4_000_000) -> Rank:
    """An NCCL rank: :func:`periodic_rank` steps (the host sees each all_reduce's launch only:
    it returns at once, its future completes at once), and, in the steps of one GPU window
    ``(first step, steps)``, a compute kernel over ``compute_ms`` and an NCCL kernel over
    ``comm_ms`` of each step (ms from the step's start)."""
    spec = periodic_rank(rank, steps=steps, step_ms=step_ms, issue_ms=50, return_ms=50,
                         done_ms=50, wait_ms=None, nbytes=nbytes)
    spec.backend = "nccl"
    if window is not None:
        first, n = window
        for k in range(first, first + n):
            t0 = k * step_ms * MS
            spec.gpu += [Kernel("void at::native::gemm_kernel<float>", t0 + compute_ms[0] * MS,
                                t0 + compute_ms[1] * MS, k, launch=t0 + MS, correlation=2 * k),
                         Kernel("ncclDevKernel_AllReduce_Sum_f32_RING_LL", t0 + comm_ms[0] * MS,
                                t0 + comm_ms[1] * MS, k, launch=t0 + 50 * MS, correlation=2 * k + 1)]
        spec.gpu_windows = [(0, first, n)]
    return spec
