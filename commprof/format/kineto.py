"""PyTorch-profiler (Kineto) Chrome-trace files, ``.json`` or ``.json.gz``: one rank's GPU timeline.

:func:`read_trace` parses one file into a :class:`KinetoTrace`: metadata (rank, world size, device)
and the frames the GPU timeline needs (``ph: "X"`` events unless said):

* ``gpu`` — one row per GPU activity: ``cat`` "kernel", "gpu_memcpy", "gpu_memset" (older
  spellings too) as ``category`` "kernel"/"memcpy"/"memset"; ``stream``, ``device``,
  ``correlation``, ``external_id`` from the args, and the collective args Kineto puts on NCCL
  kernels (``coll_name``, ``in_nelems``, ``out_nelems``, ``dtype``, ``group_size``, ``pg_name``,
  and ``seq``: the collective's sequence number on its group, ``Seq``, where Kineto copies it).
  ``user_annotation``/``gpu_user_annotation`` ranges are never rows here.
* ``launches`` — runtime/driver calls with a correlation id (``cuda_runtime``, ``cuda_driver``,
  any ``*_runtime``/``*_driver``: ``hipLaunchKernel`` too).
* ``steps`` — ``ProfilerStep#N`` spans on the CPU (not their ``gpu_user_annotation`` copies).
* ``comms_params`` — ``record_param_comms`` CPU ops with their collective args and ``Seq``.
* ``flows`` — ``ac2g`` flow ends (``ph`` "s"/"f"), kept only when some GPU op needs them.
* ``comm_ranges`` — CPU ranges (ops, annotations, Python frames) whose launches are communication
  (:func:`commprof.format.comm_ops.comm_range_family`: ``c10d::``, ``_c10d_functional::``,
  ``symm_mem::``, ``record_param_comms``, NVSHMEM, DeepEP, ``nccl:``), with ``family``.

Times are int64 nanoseconds on the trace's own clock: ``baseTimeNanoseconds + ts × 1000`` (Kineto
writes ``ts`` in µs relative to ``baseTimeNanoseconds`` where it has one, so this is Unix time).
``ts`` is split into whole µs and the fraction before scaling, so a ns is never lost to float64
(ends are ``start + dur × 1000``).  Integer columns use -1 for "absent", string columns "".
Anything unusable raises :class:`~commprof.errors.TraceFileError`: one line naming the file and
what is wrong (truncated gzip, not JSON, no ``traceEvents``, no kernels, no rank).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from commprof.errors import TraceFileError, UsageError
from commprof.format import comm_ops, trace_jobs, trace_stream

GPU_COLUMNS = ["start_ns", "end_ns", "name", "category", "stream", "device", "correlation",
               "external_id", "pid", "tid", "coll_name", "in_nelems", "out_nelems", "dtype",
               "group_size", "pg_name", "seq"]
LAUNCH_COLUMNS = ["correlation", "start_ns", "end_ns", "name", "pid", "tid"]
STEP_COLUMNS = ["step", "start_ns", "end_ns", "pid", "tid"]
COMMS_COLUMNS = ["start_ns", "end_ns", "pid", "tid", "external_id", "coll_name", "in_nelems",
                 "out_nelems", "dtype", "group_size", "pg_name", "seq"]
FLOW_COLUMNS = ["id", "phase", "ts_ns", "pid", "tid"]
RANGE_COLUMNS = ["start_ns", "end_ns", "name", "family", "pid", "tid", "external_id"]

# Kineto's categories (lower case); older traces spell them "Kernel", "Memcpy", "Runtime", ...
_GPU_CATEGORIES = {"kernel": "kernel", "gpu_memcpy": "memcpy", "memcpy": "memcpy",
                   "gpu_memset": "memset", "memset": "memset"}
_GPU_ROLES = set(_GPU_CATEGORIES.values())
_GPU_SIDE = {"gpu_user_annotation"}  # ranges on the GPU rows that are not activity
_STEP = re.compile(r"^ProfilerStep\s*#\s*(\d+)$")
# rank-3.json, worker3.1623143089861.pt.trace.json (tensorboard_trace_handler's worker_name), x_3.json
_RANK_IN_NAME = (re.compile(r"rank[-_]?(\d+)", re.I),
                 re.compile(r"(?:^|[^a-z])worker[-_]?(\d+)(?=[._-])", re.I),
                 re.compile(r"[-_](\d+)\.json(?:\.gz)?$", re.I))
# args of record_param_comms and of the kernels Kineto tags with them (torch/csrc/profiler/util.h)
_COLL_ARGS = ("Collective name", "In msg nelems", "Out msg nelems", "dtype", "Group size",
              "Process Group Name")


@dataclass
class KinetoTrace:
    """One trace file.  ``gpu``/``launches``/``steps``/``comms_params``/``flows``: see the module.

    ``flows`` (``ac2g``) is kept only when some GPU op has no launch with its correlation id.
    """

    path: str
    rank: int
    world_size: int | None
    device_type: str | None          # "cuda", "rocm" or None (not said by the trace)
    device_name: str | None          # deviceProperties' name of the GPU the activity ran on
    backend: str | None              # distributedInfo.backend ("nccl", ...)
    base_time_ns: int
    json_bytes: int                  # size of the uncompressed JSON
    gpu: pd.DataFrame
    launches: pd.DataFrame
    steps: pd.DataFrame
    comms_params: pd.DataFrame
    flows: pd.DataFrame
    pg_config: list = field(default_factory=list)
    comm_ranges: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)
    host: str | None = None          # the trace's ``host_name`` (torch >= 2.4 writes it), if any
    nccl_version: str | None = None  # distributedInfo.nccl_version (RCCL's too), if recorded


def read_trace(path, *, rank: int | None = None) -> KinetoTrace:
    """Read one Kineto trace.  ``rank`` overrides what the trace and its file name say."""
    path = Path(path)
    # streamed (format/trace_stream.py); pid/tid come as shared strings, as the frames keep them
    stream = trace_stream.open_trace(path, TraceFileError, ids_as_text=True)
    events = _Counted(stream.events)
    rows = _scan(events)
    doc, json_bytes = stream.meta, stream.json_bytes  # the keys beside traceEvents, once read
    base = _int(doc.get("baseTimeNanoseconds"), 0)
    launched = {r[2] for r in rows["launch"]} - {-1}
    if all(r[6] in launched for r in rows["gpu"]):
        rows["flow"] = []  # every GPU op has its launch by correlation: flows are not needed
    gpu, launches, steps, comms, flows, ranges = (_frame(k, rows[k], base) for k in
                                                  ("gpu", "launch", "step", "comms", "flow", "range"))
    if not (gpu["category"] == "kernel").any():
        raise TraceFileError(path, f"no GPU kernels (cat \"kernel\") among {len(events)} events: "
                             "a CPU-only profile, or GPU activity was not recorded")
    notes = []
    dist = doc.get("distributedInfo") if isinstance(doc.get("distributedInfo"), dict) else {}
    dist = _plausible_dist(dist, notes)
    rank = _rank(path, rank, dist, notes)
    steps = steps.drop_duplicates("step", keep="first").sort_values("start_ns", kind="stable")
    devices = sorted(int(d) for d in gpu["device"].unique() if d >= 0)
    if len(devices) > 1:
        notes.append(f"GPU activity on {len(devices)} devices {devices}: one timeline for all")
    if rows["skipped"]:
        notes.append(f"{rows['skipped']} GPU/runtime events without a numeric ts/dur left out")
    dtype, dname = _device(doc, devices, launches)
    pg = dist.get("pg_config") if isinstance(dist.get("pg_config"), list) else []
    return KinetoTrace(path=str(path), rank=rank, world_size=_int(dist.get("world_size"), None),
                       device_type=dtype, device_name=dname, backend=dist.get("backend"),
                       base_time_ns=base, json_bytes=json_bytes, gpu=gpu, launches=launches,
                       steps=steps.reset_index(drop=True), comms_params=comms, flows=flows,
                       pg_config=pg, notes=notes, comm_ranges=ranges,
                       host=_text(doc.get("host_name") or doc.get("hostname")),
                       nccl_version=_text(dist.get("nccl_version")))


def raw_events(path) -> list:
    """The ``traceEvents`` of a trace as they are (for merging traces into one)."""
    return list(trace_stream.open_trace(path, TraceFileError).events)


class _Counted:
    """An iterator of events that counts them (``len`` once exhausted)."""

    def __init__(self, events):
        self.events, self.n = events, 0

    def __iter__(self):
        for ev in self.events:
            self.n += 1
            yield ev

    def __len__(self) -> int:
        return self.n


def looks_like_trace(path) -> bool:
    """A ``.json.gz`` file, or a ``.json`` file whose first 64 kB mention ``traceEvents`` (a
    saved commprof report names its ``schema`` instead)."""
    path = Path(path)
    if path.name.endswith(".json.gz") or path.name.endswith(".pt.trace.json"):
        return True
    if not path.name.endswith(".json") or not path.is_file():
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(1 << 16)
    except OSError:
        return False
    return b'"traceEvents"' in head and b'"commprof.report/' not in head


def trace_files(path) -> list[Path]:
    """A trace file as given, or a directory's ``*.json``/``*.json.gz`` files (sorted, not recursive)."""
    path = Path(path)
    if not path.is_dir():
        return [path]
    return sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith((".json", ".json.gz")))


def read_traces(paths, rank: int | None = None) -> tuple[list[KinetoTrace], list[TraceFileError]]:
    """Every readable trace of ``paths`` (files or directories), and one error per bad file.

    A second trace of the same rank is an error too (the first one read is kept).  ``rank`` is
    the rank of a single trace file (``commprof report --rank``), overriding what it says.
    """
    traces, errors, seen = [], [], {}
    files = [f for p in ([paths] if isinstance(paths, (str, Path)) else paths) for f in trace_files(p)]
    if rank is not None and rank < 0:
        raise UsageError(f"--rank {rank}: must be >= 0")
    if rank is not None and len(files) != 1:
        raise UsageError(f"--rank {rank}: gives the rank of one trace file, not of {len(files)}")
    read = []
    for path in files:
        try:
            read.append(read_trace(path, rank=rank))
        except TraceFileError as e:
            errors.append(e)
    trace_jobs.check_one_job(read, paths if isinstance(paths, (str, Path)) else paths[0])
    for t in read:
        path = t.path
        if t.rank in seen:
            errors.append(TraceFileError(path, f"rank {t.rank} again (already read from {seen[t.rank]})"))
            continue
        seen[t.rank] = path
        traces.append(t)
    return sorted(traces, key=lambda t: t.rank), errors


MAX_WORLD = 1 << 20  # ranks: a larger world_size (or rank) in a trace is not believed


def _plausible_dist(dist: dict, notes: list) -> dict:
    """``distributedInfo`` without a ``world_size`` outside [1, MAX_WORLD] or a ``rank`` outside
    [0, MAX_WORLD) (a note says so): nothing is then sized by a number the file made up."""
    out = dict(dist)
    for key, lo in (("world_size", 1), ("rank", 0)):
        v = _int(out.get(key), None)
        if out.get(key) is not None and (v is None or not lo <= v <= MAX_WORLD - (key == "rank")):
            notes.append(f"distributedInfo.{key} {str(out[key])[:40]!r} is not a plausible {key}: "
                         "ignored")
            out.pop(key)
    return out


def _text(v) -> str | None:
    """A non-empty string value, else None."""
    return str(v) if isinstance(v, (str, int, float)) and str(v).strip() else None


def _int(v, default):
    """``v`` as an int64 (``"0x7f"`` too), else ``default`` (also for inf/NaN and >= 2**63)."""
    try:
        out = int(v)
    except (TypeError, ValueError, OverflowError):
        try:
            out = int(str(v), 0)  # "0x7f" streams
        except (TypeError, ValueError):
            return default
    return out if -(1 << 63) <= out < (1 << 63) else default


def _coll(args: dict) -> tuple:
    g = args.get
    return (str(g("Collective name") or ""), _int(g("In msg nelems"), -1),
            _int(g("Out msg nelems"), -1), str(g("dtype") or ""), _int(g("Group size"), -1),
            str(g("Process Group Name") if g("Process Group Name") is not None else ""))


def _scan(events: list) -> dict:
    """One pass over the events: tuples per frame (ts and dur still µs floats)."""
    gpu, launch, step, comms, flow, ranges = [], [], [], [], [], []
    roles: dict = {}
    families: dict = {}  # CPU range name -> its comm_ops family (None: not communication)
    skipped = 0
    for ev in events:
        if not isinstance(ev, dict):
            continue
        ph = ev.get("ph")
        if ph == "X":
            cat = ev.get("cat")
            role = roles.get(cat)
            if role is None:
                role = roles[cat] = _role(cat)
            if role == "other":
                continue
            name = ev.get("name")
            family = None
            if role == "cpu":
                if type(name) is not str:
                    continue
                family = families.get(name, False)
                if family is False:
                    family = families[name] = comm_ops.comm_range_family(name)
                if family is None and not name.startswith("ProfilerStep"):
                    continue
            ts, dur = ev.get("ts"), ev.get("dur", 0)
            if type(ts) not in (int, float) or type(dur) not in (int, float):
                skipped += role != "cpu"
                continue
            args = ev.get("args")
            args = args if isinstance(args, dict) else {}
            if family is not None:
                ranges.append((ts, dur, name, family, str(ev.get("pid")), str(ev.get("tid")),
                               _int(args.get("External id"), -1)))
            if role == "launch":
                c = args.get("correlation")
                if c is not None:
                    launch.append((ts, dur, _int(c, -1), str(name), str(ev.get("pid")), str(ev.get("tid"))))
            elif role in _GPU_ROLES:
                pid = ev.get("pid")
                dev = args.get("device", pid)
                gpu.append((ts, dur, str(name), role, _int(args.get("stream", ev.get("tid")), -1),
                            _int(dev, -1), _int(args.get("correlation"), -1),
                            _int(args.get("External id"), -1), str(pid), str(ev.get("tid")),
                            *(_coll(args) if "Collective name" in args or "In msg nelems" in args
                              else ("", -1, -1, "", -1, "")), _int(args.get("Seq"), -1)))
            elif role == "cpu" and name == "record_param_comms":
                comms.append((ts, dur, str(ev.get("pid")), str(ev.get("tid")),
                              _int(args.get("External id"), -1), *_coll(args), _int(args.get("Seq"), -1)))
            elif role == "cpu":
                m = _STEP.match(name)
                if m:
                    step.append((ts, dur, int(m.group(1)), str(ev.get("pid")), str(ev.get("tid"))))
        elif (ph == "s" or ph == "f") and ev.get("cat") == "ac2g":
            ts = ev.get("ts")
            if type(ts) in (int, float):
                flow.append((ts, 0, _int(ev.get("id"), -1), ph, str(ev.get("pid")), str(ev.get("tid"))))
    return {"gpu": gpu, "launch": launch, "step": step, "comms": comms, "flow": flow,
            "range": ranges, "skipped": skipped}


def _role(cat) -> str:
    c = str(cat).lower()
    if c in _GPU_CATEGORIES:
        return _GPU_CATEGORIES[c]
    if c in ("runtime", "driver") or c.endswith("_runtime") or c.endswith("_driver"):
        return "launch"
    return "other" if c in _GPU_SIDE else "cpu"


_LAYOUT = {  # frame -> (columns after start_ns/end_ns, integer columns)
    "gpu": (GPU_COLUMNS[2:], {"stream", "device", "correlation", "external_id", "in_nelems",
                              "out_nelems", "group_size", "seq"}),
    "launch": (["correlation", "name", "pid", "tid"], {"correlation"}),
    "step": (["step", "pid", "tid"], {"step"}),
    "comms": (COMMS_COLUMNS[2:], {"external_id", "in_nelems", "out_nelems", "group_size", "seq"}),
    "flow": (["id", "phase", "pid", "tid"], {"id"}),
    "range": (RANGE_COLUMNS[2:], {"external_id"}),
}
_ORDER = {"gpu": GPU_COLUMNS, "launch": LAUNCH_COLUMNS, "step": STEP_COLUMNS,
          "comms": COMMS_COLUMNS, "flow": FLOW_COLUMNS, "range": RANGE_COLUMNS}


def _frame(kind: str, rows: list, base: int) -> pd.DataFrame:
    rest, ints = _LAYOUT[kind]
    if not rows:
        df = pd.DataFrame({c: pd.Series(dtype="int64" if c in ints or c.endswith("_ns") else object)
                           for c in _ORDER[kind]})
        return df
    cols = list(zip(*rows))
    rows.clear()  # the columns hold the values now: free the row tuples before building
    start = to_ns(cols[0], base)
    out = {"start_ns": start, "end_ns": start + np.rint(np.asarray(cols[1], "float64") * 1000).astype("int64")}
    for name, values in zip(rest, cols[2:]):
        out[name] = np.asarray(values, dtype="int64") if name in ints else np.asarray(values, dtype=object)
    df = pd.DataFrame(out)
    if kind == "flow":
        df = df.rename(columns={"start_ns": "ts_ns"}).drop(columns="end_ns")
    return df[_ORDER[kind]]


def to_ns(ts_us, base_ns: int = 0) -> np.ndarray:
    """µs timestamps (floats or ints) -> int64 ns, exact to the ns that float64 µs can hold."""
    t = np.asarray(ts_us, dtype="float64")
    whole = np.floor(t)
    return base_ns + whole.astype("int64") * 1000 + np.rint((t - whole) * 1000).astype("int64")


def _rank(path: Path, given, dist: dict, notes: list) -> int:
    if given is not None:
        notes.append(f"rank {int(given)} given by the caller")
        return int(given)
    r = _int(dist.get("rank"), None)
    if r is not None:
        return r
    for pattern in _RANK_IN_NAME:
        m = pattern.search(path.name)
        if m:
            notes.append(f"rank {int(m.group(1))} from the file name (no distributedInfo.rank)")
            return int(m.group(1))
    raise TraceFileError(path, "no rank: no distributedInfo.rank in the trace and none in the file "
                         "name (name it like rank-3.json or worker3.pt.trace.json, or give it: "
                         "`commprof report --rank 3 FILE`)")


def _device(doc: dict, devices: list, launches: pd.DataFrame) -> tuple:
    """("cuda" | "rocm" | None, the GPU's name) from deviceProperties and the runtime's API names."""
    props = doc.get("deviceProperties") if isinstance(doc.get("deviceProperties"), list) else []
    names = {_int(p.get("id"), -1): str(p.get("name", "")) for p in props if isinstance(p, dict)}
    name = names.get(devices[0]) if devices else None
    apis = {str(n)[:3].lower() for n in launches["name"].drop_duplicates()}
    text = " ".join(names.values()).lower()
    if "hip" in apis or any(w in text for w in ("amd", "radeon", "instinct")):
        return "rocm", name
    if "cud" in apis or "cul" in apis or "nvidia" in text or "cuda_runtime_version" in doc:
        return "cuda", name
    return None, name
