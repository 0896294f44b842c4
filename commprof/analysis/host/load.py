"""Load a run directory into per-process pandas DataFrames (the analyses' only input).

Two ways in, one per scale:

* :func:`open_run` + :meth:`RunSource.iter_ranks` stream one process at a time — what
  ``commprof report`` uses, so memory stays bounded by the largest capture file;
* :func:`load_run` reads every process into one :class:`Run` (each process kept apart, and
  its frames concatenated on demand with ``rank`` / ``attempt`` / ``pid`` columns), for the
  analyses and tests; the public, documented frames
  (``commprof.load_run``, docs/data.md) are built on it in :mod:`commprof.analysis.outcome.frames`.

Times stay in integer nanoseconds of each process's monotonic clock.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from commprof.analysis.gpu import gpu_activity as gpu_act, gpu_times
from commprof.analysis.host import capture_events, load_facts, training
from commprof.errors import RunDirError, TruncatedCaptureError
from commprof.format import layout, reader, schema

_PROC_KEYS = ["rank", "attempt", "pid"]
_OP_NAMES = pd.Index(schema.OPS, dtype=object)
_DTYPE_NAMES = pd.Index(schema.DTYPES, dtype=object)
GROUP_COLUMNS = _PROC_KEYS + ["gid", "name", "desc", "size", "group_rank", "backend", "ranks"]
DEGRADED_COLUMNS = _PROC_KEYS + ["where", "count", "error"]

SELF_SPLIT_KEYS = ("once_calls", "once_ns", "stalled_calls", "stalled_ns")  # self_cost frames


@dataclass
class RankData:
    """Everything one captured process recorded, as frames."""

    key: dict  # rank, attempt, pid
    process: dict  # one row of Run.processes
    collectives: pd.DataFrame
    waits: pd.DataFrame
    marks: pd.DataFrame
    spans: pd.DataFrame
    groups: pd.DataFrame
    degraded: pd.DataFrame
    fr: pd.DataFrame = field(default_factory=pd.DataFrame)  # Flight Recorder entries with GPU timing
    # GPU windows (``commprof run`` on CUDA jobs): kernels/memcpy/memset, and the windows themselves
    gpu_activity: pd.DataFrame = field(default_factory=lambda: gpu_act.activity_frame(None, []))
    gpu_windows: pd.DataFrame = field(default_factory=lambda: gpu_act.windows_frame([]))
    losses: pd.DataFrame = field(default_factory=lambda: training.loss_frame([])[0])  # step, t, value

    @property
    def rank(self) -> int:
        return int(self.key["rank"])


class _RunFiles:
    """The run's files beside the captures (the one place analysis reads them)."""

    def node_samples(self):
        """The node samplers' files, and notes about unreadable ones."""
        from commprof.analysis.host.load_nodes import load_node_samples
        return load_node_samples(self.dirs or [self.path])

    def probe(self) -> dict | None:
        """``probe.json`` (``commprof run --probe``), or None."""
        return reader.read_probe(self.path)


@dataclass
class RunSource(_RunFiles):
    """A run directory opened for streaming: manifest, capture files to use, notes."""

    path: Path
    manifest: dict
    paths: list[Path]
    notes: list[str] = field(default_factory=list)
    attempts: list[int] = field(default_factory=lambda: [0])  # torchrun restart counts seen
    hang: dict | None = None  # hang.json (``commprof run --hang-timeout``), if a hang was seen
    dirs: list[Path] = field(default_factory=list)  # every directory merged (path is the first)

    def iter_ranks(self) -> Iterator[RankData]:
        """Each capture file in turn (damaged files add a note)."""
        for path in self.paths:
            data = read_rank(path)
            if data.process["damage"]:
                self.notes.append(f"{path.name}: {data.process['damage']}; records before it "
                                  "were kept")
            yield data


def _concatenated(name: str, doc: str) -> cached_property:
    """A :class:`Run` attribute: every process's ``name`` frame in one, built when first read."""
    def build(self) -> pd.DataFrame:
        return self._cat(name)
    build.__doc__ = doc
    return cached_property(build)


@dataclass
class Run(_RunFiles):
    """One run directory, loaded whole: each process's :class:`RankData` kept apart (``parts``),
    and every process's frames concatenated (``rank`` / ``attempt`` / ``pid`` columns), built
    when first asked for."""

    path: Path
    manifest: dict
    parts: list[RankData]  # one per capture file used, in file order
    notes: list[str] = field(default_factory=list)  # damaged files, bootstrap failures, ...
    hang: dict | None = None  # hang.json, if ``commprof run --hang-timeout`` saw a hang
    dirs: list[Path] = field(default_factory=list)

    def iter_ranks(self) -> Iterator[RankData]:
        """Each process's frames, as read."""
        yield from self.parts

    @cached_property
    def processes(self) -> pd.DataFrame:
        """One row per captured process (rank, attempt, host, pid, ...)."""
        return pd.DataFrame([p.process for p in self.parts])

    def _cat(self, name: str) -> pd.DataFrame:
        frames = [getattr(p, name) for p in self.parts if len(getattr(p, name))]
        return (pd.concat(frames, ignore_index=True) if frames
                else getattr(self.parts[0], name).iloc[0:0].reset_index(drop=True))

    collectives = _concatenated("collectives", "One row per collective / P2P call, with completion merged in.")
    waits = _concatenated("waits", "rank, thread, t_start, t_end, source, id.")
    marks = _concatenated("marks", "rank, kind, t, value.")
    spans = _concatenated("spans", "rank, kind, thread, t_start, t_end.")
    groups = _concatenated("groups", "rank, gid, name, desc, size, backend, ranks.")
    degraded = _concatenated("degraded", "rank, where, count, error.")
    gpu_activity = _concatenated("gpu_activity", "rank, start_ns, end_ns, name, category, ... (GPU windows).")
    losses = _concatenated("losses", "rank, attempt, pid, step, t, value (capture/loss.py).")


def _check_dir(run_dir: Path) -> None:
    if not run_dir.exists():
        raise RunDirError(f"{run_dir}: no such run directory")
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: not a directory")


def _merge_dirs(dirs: list[Path]) -> tuple[list[Path], list[str]]:
    """Capture files of several directories of one run (e.g. one per node), after checking that
    they are the same run: every directory's captures must carry the same run id."""
    ids: dict[Path, str | None] = {}
    paths = []
    for d in dirs:
        _check_dir(d)
        reader.read_manifest(d)
        mine = layout.capture_paths(d)
        found = {reader.first_run_id(p) for p in mine} - {None}
        if len(found) > 1:
            raise RunDirError(f"{d}: holds captures of {len(found)} different runs")
        ids[d] = next(iter(found), None)
        paths += mine
    known = {d: i for d, i in ids.items() if i is not None}
    first = next(iter(known.items()), None)
    for d, i in known.items():
        if i != first[1]:
            raise RunDirError(f"{d}: a different run (run id {i[:12]}…) from {first[0]} "
                              f"(run id {first[1][:12]}…): give directories of one run only")
    notes = [f"merged {len(dirs)} run directories: {', '.join(str(d) for d in dirs)}"]
    if len(known) < len(dirs):
        notes.append("some directories' captures carry no run id (no process group, or an older "
                     "commprof): their belonging to this run was not checked")
    return paths, notes


def open_run(path: str | Path | list | None = None) -> RunSource:
    """Check a run directory (or several directories of one run, e.g. one per node) and list the
    capture files to analyse (each rank's last attempt)."""
    if isinstance(path, (list, tuple)) and len(path) > 1:
        dirs = [Path(p) for p in path]
        run_dir = dirs[0]
        paths, merge_notes = _merge_dirs(dirs)
        manifest = reader.read_manifest(run_dir)
    else:
        if isinstance(path, (list, tuple)):
            path = path[0] if path else None
        run_dir = Path(path) if path is not None else layout.latest_run()
        _check_dir(run_dir)
        dirs, merge_notes = [run_dir], []
        manifest = reader.read_manifest(run_dir)
        paths = layout.capture_paths(run_dir)
    if not paths:
        errs = layout.bootstrap_errors(run_dir)
        why = (f"; {errs[0].name}: {load_facts.bootstrap_error(errs[0])}" if errs else
               " (see docs/troubleshooting.md: python -I/-E, a job that never imports torch, ...)")
        raise RunDirError(f"{layout.ranks_dir(run_dir)}: no capture files: no process of the job was "
                          f"captured, or none initialised a process group, called a collective or "
                          f"stepped an optimizer{why}")
    headers, notes = {}, list(merge_notes)
    seen = set()
    for p in paths:
        try:
            h = reader.read_header(p, within=p.parent.parent)
        except TruncatedCaptureError as exc:  # a process that died while creating its file
            notes.append(f"{p.name}: {exc.reason}: left out")
            continue
        ident = (h.get("rank"), h.get("restart"), h.get("pid"), h.get("host"))
        if ident not in seen:  # the same file reached through two directories counts once
            seen.add(ident)
            headers[p] = h
    if not headers:
        raise RunDirError(f"{layout.ranks_dir(run_dir)}: no readable capture file ({'; '.join(notes)})")
    world = max((int(h.get("world_size") or 0) for h in headers.values()), default=0)
    absent = load_facts.absent_spans({int(h["rank"]) for h in headers.values()}, world)
    if absent:
        notes.append(f"no capture from rank(s) {absent} of world size {world}: the "
                     "KPIs cover the ranks captured (a process that never imported torch, or ran "
                     "on a node without `commprof run`?)")
    joined = layout.joined_manifests(run_dir)
    if joined:
        notes.append(f"{len(joined) + 1} `commprof run` processes shared this directory (--join); "
                     f"the run's exit status is the one in {layout.MANIFEST}")
    full = [r for r in (layout.stopped_reason(p) for p in headers) if r]
    if manifest.get("status") == "running" and full:
        notes.append(f"the manifest was not finished and {len(full)} capture(s) stopped "
                     f"({', '.join(sorted(set(full)))}): the run directory's storage filled up, "
                     "so the job's exit status is unknown; the workers went on")
    elif manifest.get("status") == "running":
        notes.append("the run has not finished, or its `commprof run` was killed: this covers what "
                     "the workers had flushed so far")
    missing = sorted({m for h in headers.values() for m in h.get("missing_ops") or []})
    if missing:
        notes.append("this torch has no " + ", ".join(missing) + " operator(s): such calls are not "
                     "captured")
    for err in layout.bootstrap_errors(run_dir):
        notes.append(f"{err.name}: {load_facts.bootstrap_error(err)}")
    attempts = sorted({int(h.get("restart", 0) or 0) for h in headers.values()})
    if len(attempts) > 1:
        notes.append(f"torchrun ran {len(attempts)} attempts (restart counts "
                     f"{', '.join(map(str, attempts))}): the KPIs cover each rank's last attempt; "
                     f"earlier attempts' captures are kept in {layout.RANKS}/*.a<N>.*")
    return RunSource(run_dir.resolve(), manifest, _latest_attempts(headers), notes,
                     attempts=attempts, hang=reader.read_hang(run_dir),
                     dirs=[d.resolve() for d in dirs])


def load_run(path: str | Path | None = None) -> Run:
    """Load ``path`` (default: the latest run under ./commprof-runs) whole."""
    src = open_run(path)
    return Run(path=src.path, manifest=src.manifest, parts=list(src.iter_ranks()), notes=src.notes,
               hang=src.hang, dirs=src.dirs)


def _latest_attempts(headers: dict[Path, dict]) -> list[Path]:
    """Each rank's last torchrun attempt (earlier attempts are not mixed into the KPIs)."""
    def attempt(h):
        return int(h.get("restart", 0) or 0)
    last: dict[int, int] = {}
    for h in headers.values():
        last[int(h["rank"])] = max(last.get(int(h["rank"]), -1), attempt(h))
    return [p for p, h in headers.items() if attempt(h) == last[int(h["rank"])]]


def read_rank(path: Path) -> RankData:
    """One capture file as frames (its JSON events sorted by kind once: :mod:`capture_events`)."""
    path = Path(path)
    cap = reader.drop_impossible(reader.read_capture(path, within=path.parent.parent))
    ev = capture_events.sort_events(cap.events)
    h = cap.header
    clock = h.get("clock") or {}
    key = {"rank": cap.rank, "attempt": int(h.get("restart", 0) or 0), "pid": int(h.get("pid", -1))}
    a = cap.arrays
    process = dict(key, host=h.get("host"), world_size=h.get("world_size"),
                   local_rank=h.get("local_rank"), complete=cap.complete,
                   exit_reason=(cap.trailer or {}).get("reason") or load_facts.stopped(cap.path, ev.stopped),
                   damage=cap.damage,
                   torch_version=h.get("torch_version"), nccl_version=h.get("nccl_version"),
                   file=cap.path.name,
                   clock_wall_ns=clock.get("wall_ns"), clock_mono_ns=clock.get("mono_ns"),
                   missing_ops=",".join(h.get("missing_ops") or []),
                   intra_op_threads=h.get("intra_op_threads"), cpus=h.get("cpus"),
                   **_self_cost(ev.self_cost),
                   **gpu_act.window_stats(ev.gpu_windows, ev.gpu_windows_yielded, ev.gpu_windows_off),
                   fixes=training.fix_events(ev.fixes), metrics=training.metric_events(ev.metrics),
                   capture_path=training.capture_path(ev.capture_path))
    losses, process["losses_lost"] = training.loss_frame(ev.losses)
    groups = pd.DataFrame([dict(key, gid=g["id"], name=g.get("name"), desc=g.get("desc"),
                                size=g.get("size"), group_rank=g.get("rank"),
                                backend=g.get("backend"), ranks=g.get("ranks"))
                           for g in cap.groups], columns=GROUP_COLUMNS)
    degraded = [dict(key, where=e["where"], count=e["count"], error=e["error"]) for e in ev.degraded]
    stopped = not cap.complete and str(process["exit_reason"]).startswith(load_facts.STOPPED)
    if stopped:
        degraded.append(dict(key, where="capture", count=1, error=(
            f"{process['exit_reason']}: the records after it were not written; the process "
            "went on (not dead)")))
    degraded_df = (pd.DataFrame(degraded).groupby(_PROC_KEYS + ["where"], as_index=False)
                   .agg(count=("count", "max"), error=("error", "first"))
                   if degraded else pd.DataFrame(columns=DEGRADED_COLUMNS))
    coll = attach_groups(collectives_frame(a["coll"], a["done"], a["wait"]), groups)
    fr, fr_stats = gpu_times.fr_frame(ev.fr)
    process.update(fr_seen=fr_stats["seen"], fr_lost=fr_stats["lost"])
    if len(fr) and clock.get("wall_ns") is not None and clock.get("mono_ns") is not None:
        names = dict(zip(groups["gid"], groups["name"].astype(str)))
        coll["gpu_duration_ns"] = gpu_times.attach(coll, fr, names, clock["wall_ns"] - clock["mono_ns"])
    return RankData(key, process, _with_key(coll, key), _with_key(pd.DataFrame(a["wait"]), key),
                    _with_key(pd.DataFrame(a["mark"]), key), _with_key(pd.DataFrame(a["span"]), key),
                    groups, degraded_df, fr,
                    _with_key(gpu_act.activity_frame(a.get("gpu"), ev.gpu_names), key),
                    gpu_act.windows_frame(ev.gpu_windows), _with_key(losses, key))


def _self_cost(last: dict | None) -> dict:
    """The last self-reported cost of a process (calls recorded, ns spent; GPU windows; the
    native kernel's split of the ns, SELF_SPLIT_KEYS: None where a capture has none)."""
    last = last or {}
    return {"self_calls": last.get("calls", 0), "self_record_ns": last.get("record_ns", 0),
            "self_gpu_windows": last.get("gpu_windows", 0), "self_gpu_window_ns": last.get(
                "gpu_window_ns", 0), **{f"self_{k}": last.get(k) for k in SELF_SPLIT_KEYS}}


def _with_key(df: pd.DataFrame, key: dict) -> pd.DataFrame:
    for name, value in key.items():
        if name not in df:
            df.insert(0, name, value)
    return df


def collectives_frame(coll: np.ndarray, done: np.ndarray, wait: np.ndarray) -> pd.DataFrame:
    """The collectives frame of one process: its COLL records (``coll``) joined with their
    completions (``done``) and their matched Python waits (``wait``), numpy joins; the arrays are
    the reader's record arrays.  Public for ``commprof run --live``, which builds the same frame
    from the records read so far (live/rankstate.py)."""
    n = len(coll)
    ids = coll["id"]
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]

    def rows_of(record_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row index, mask of record_ids that name a COLL record)."""
        pos = np.searchsorted(sorted_ids, record_ids)
        ok = pos < n
        ok[ok] = sorted_ids[pos[ok]] == record_ids[ok]
        return order[pos[ok]], ok

    t_future = np.full(n, np.nan)
    fut = done[done["source"] == schema.DONE_FUTURE]
    rows, ok = rows_of(fut["id"])
    np.fmin.at(t_future, rows, fut["t_done"][ok].astype("float64"))
    wait_start, wait_end = np.full(n, np.nan), np.full(n, np.nan)
    sync = np.zeros(n, dtype=bool)
    matched = wait[wait["id"] >= 0]
    rows, ok = rows_of(matched["id"])
    np.fmin.at(wait_start, rows, matched["t_start"][ok].astype("float64"))
    np.fmax.at(wait_end, rows, matched["t_end"][ok].astype("float64"))
    # Synchronous: torch.distributed's own blocking call waited on the Work (async_op=False).
    sync[rows[matched["source"][ok] == schema.WAIT_SYNC_API]] = True
    df = pd.DataFrame(coll)
    # Categoricals: the codes stay as they were captured, no string per record.
    df["op"] = pd.Categorical.from_codes(coll["op"].astype("int64"), categories=_OP_NAMES)
    df["dtype"] = pd.Categorical.from_codes(coll["dtype"].astype("int64"), categories=_DTYPE_NAMES)
    flags = coll["flags"]
    df["in_backward"] = (flags & schema.FLAG_IN_BACKWARD) != 0
    df["failed"] = (flags & schema.FLAG_FAILED) != 0
    # Completion: the future callback if any, else the end of a Python wait on the Work.
    has_future = ~np.isnan(t_future)
    t_done = np.where(has_future, t_future, wait_end)
    df["t_future"], df["wait_start"], df["wait_end"], df["t_done"] = t_future, wait_start, wait_end, t_done
    df["done_source"] = pd.Categorical.from_codes(
        np.where(has_future, 0, np.where(~np.isnan(wait_end), 1, 2)),
        categories=["future", "wait", "unknown"])
    df["async_op"] = ~sync
    # End of the in-flight interval: completion, or the call's return when it was not seen.
    # (Waits are added to the in-flight union separately: see analysis/host/exposure.py.)
    df["t_end"] = np.fmax(t_done, coll["t_return"].astype("float64"))
    return df


def attach_groups(coll: pd.DataFrame, groups: pd.DataFrame) -> pd.DataFrame:
    """``coll`` (:func:`collectives_frame`) with each record's group size and its peer's global
    rank, from the process's ``groups`` frame (other group facts stay there).  Public for
    ``commprof run --live`` (live/rankstate.py)."""
    gids = coll["group"].to_numpy()
    peer = coll["peer"].to_numpy().astype("int64")
    size = np.ones(len(coll), dtype="int64")
    peer_global = np.where(peer >= 0, peer, -1)
    info = {int(g["gid"]): g for g in groups.to_dict("records")}
    for gid in np.unique(gids):
        g = info.get(int(gid))
        if g is None:
            continue
        rows = gids == gid
        size[rows] = g["size"] if g["size"] is not None else 1
        ranks = g["ranks"]
        if isinstance(ranks, list) and ranks:
            table = np.asarray(ranks, dtype="int64")
            p = rows & (peer >= 0) & (peer < len(table))
            peer_global[p] = table[peer[p]]
    coll["group_size"], coll["peer_global"] = size, peer_global
    return coll
