"""The capture file's layout: every byte-level constant lives here.

A capture file (one per rank process and attempt, ``*.cpf``) is::

    header:  MAGIC (8 bytes) | u16 schema version | u32 json length | json | u32 crc32(json)
    frames:  u8 kind | u32 payload length | u32 crc32(kind, length, payload) | payload  (repeated)

Fixed-size record kinds (``COLL``, ``DONE``, ``WAIT``, ``MARK``, ``SPAN``) carry a batch of packed
little-endian structs; ``JSON`` frames carry one UTF-8 JSON object (process groups, events,
the trailer).  Nothing is pickled.  A frame whose length or checksum does not verify ends the
readable part of the file (a torn tail from a killed process) and is reported, never fatal.
"""
from __future__ import annotations

import struct
import zlib

MAGIC = b"COMMPROF"
SCHEMA_VERSION = 3  # major: a reader refuses files of a newer major (v1, v2 still read)
# 3: the record region (a v2 reader would find only the header's zero padding: no records, so a
# new major, which it refuses with "upgrade commprof"); stream files are as in v2.
# 2: frame CRCs cover kind and length (v1: the payload only; see frame_crc).
# minor (header key "schema_minor", counted on across majors): additive changes only (new header keys, JSON frame types,
# record kinds appended at the end of a frame list); readers of any minor read every file of
# their major, taking a missing key as unknown.
SCHEMA_MINOR = 6  # 2: SAMPLE frames (node sampler files); 3: clock-sync marks, run id;
# 4: header intra_op_threads and cpus (oversubscription check); 5: GPU frames (GPU windows) and
# their JSON frames (gpu_window, gpu_names), self_cost gpu_windows / gpu_window_ns;
# 6: the record region (header key "region"): frames written one record each through a memory
# map, in chunks, zero-filled past the last record (format/region.py, docs/format.md)

# Record region (version 3, minor 6): header key "region" = {"start": offset of the first chunk (a page
# multiple), "chunk": bytes per chunk}.  Frames start at "start"; a frame never crosses a chunk
# boundary unless it is larger than a chunk (then it starts one); a zero kind byte ends a chunk's
# records (the writer went on in the next chunk, or stopped there).
REGION_KEY = "region"
REGION_CHUNK_BYTES = 1 << 20  # the writer's default chunk (1 MiB: ~10,000 records)

HEADER_PREFIX = struct.Struct("<8sHI")  # magic, version, json length
FRAME_HEADER = struct.Struct("<BII")  # kind, payload length, crc32

# Frame kinds.
KIND_COLL = 1  # one collective / P2P call, written once its host-side call returned
KIND_DONE = 2  # completion time of a record (from a Work future callback or a wait)
KIND_WAIT = 3  # a span during which a thread waited on communication (Work.wait, wait_tensor)
KIND_MARK = 4  # an instant: step boundary, process-group init/teardown, ...
KIND_SPAN = 5  # an interval on one thread: autograd backward calls
KIND_JSON = 6  # one JSON object: {"type": "group"|"event"|"trailer", ...}
KIND_SAMPLE = 7  # node sampler: one value of one series (a counter or a gauge) at one instant
KIND_GPU = 8  # GPU windows: one kernel / memcpy / memset that torch.profiler (Kineto) recorded

# Struct layouts (little-endian, no padding).  Field names are the reader's column names.
COLL_FIELDS = (
    ("id", "q"), ("op", "H"), ("group", "I"), ("seq", "q"), ("dtype", "B"), ("flags", "B"),
    ("peer", "i"), ("in_numel", "q"), ("in_bytes", "q"), ("out_numel", "q"), ("out_bytes", "q"),
    ("thread", "Q"), ("t_issue", "q"), ("t_return", "q"),
)
DONE_FIELDS = (("id", "q"), ("t_done", "q"), ("source", "B"))
WAIT_FIELDS = (("id", "q"), ("thread", "Q"), ("t_start", "q"), ("t_end", "q"), ("source", "B"))
MARK_FIELDS = (("kind", "B"), ("t", "q"), ("value", "q"))
SPAN_FIELDS = (("kind", "B"), ("thread", "Q"), ("t_start", "q"), ("t_end", "q"))
SAMPLE_FIELDS = (("series", "I"), ("t", "q"), ("value", "d"))
# Times on the capture's clock (Kineto's timestamps aligned: capture/gpu_convert.py); launch_ns is
# the start of the launching CUDA runtime call (NO_LAUNCH when the window has none); name indexes
# the process's name table (``gpu_names`` JSON frames); category indexes GPU_CATEGORIES.
GPU_FIELDS = (
    ("start_ns", "q"), ("end_ns", "q"), ("launch_ns", "q"), ("correlation", "q"), ("stream", "q"),
    ("name", "I"), ("window", "I"), ("step", "i"), ("device", "i"), ("category", "B"),
)

FIXED_KINDS = {
    KIND_COLL: COLL_FIELDS,
    KIND_DONE: DONE_FIELDS,
    KIND_WAIT: WAIT_FIELDS,
    KIND_MARK: MARK_FIELDS,
    KIND_SPAN: SPAN_FIELDS,
    KIND_SAMPLE: SAMPLE_FIELDS,
    KIND_GPU: GPU_FIELDS,
}


_KIND_LENGTH = struct.Struct("<BI")


def frame_crc(kind: int, payload, version: int = SCHEMA_VERSION) -> int:
    """The CRC32 a frame carries: over kind, length and payload (v1 files: payload only, so a
    flipped kind byte went unnoticed; found by the reader's fuzz test)."""
    if version < 2:
        return zlib.crc32(payload)
    return zlib.crc32(payload, zlib.crc32(_KIND_LENGTH.pack(kind, len(payload))))


def struct_for(fields) -> struct.Struct:
    """The packed little-endian struct of one record kind."""
    return struct.Struct("<" + "".join(code for _, code in fields))


# COLL.flags bits
FLAG_HAS_FUTURE = 1  # completion will arrive from a Work future callback
# issued while an autograd backward call was running in this process, on any thread: on GPUs the
# autograd engine runs DDP's hooks (and so issues its all-reduces) on its own device threads
FLAG_IN_BACKWARD = 2
FLAG_FAILED = 4  # the call raised (the exception went on to the caller untouched)
FLAG_INFERENCE_MODE = 8  # recorded by the Python-API fallback under torch.inference_mode()

# DONE.source / WAIT.source
DONE_FUTURE = 1  # Work future callback (backend thread)
DONE_WAIT = 2  # end of a Python Work.wait on this record's Work
WAIT_WORK = 1  # torch.distributed Work.wait() called from Python
WAIT_TENSOR = 2  # _c10d_functional::wait_tensor (functional collectives, DTensor)
WAIT_SYNC_API = 3  # Work.wait() made by a blocking torch.distributed call (async_op=False) itself

# MARK.kind
MARK_STEP_OPTIMIZER = 1  # an optimizer.step() finished (value: optimizer ordinal)
MARK_STEP_EXPLICIT = 2  # commprof.step() was called (value: user step counter)
MARK_PG_INIT = 3  # init_process_group returned
MARK_PG_DESTROY = 4  # destroy_process_group was called
MARK_START = 5  # capture started in this process
MARK_EXIT = 6  # the process is exiting (atexit or SIGTERM)
MARK_STEP_BEGIN = 7  # `with commprof.step_scope():` entered (value: user step counter + 1)
MARK_CLOCK_SYNC = 8  # a clock-probe barrier returned (value: phase * 100 + round; capture/clocksync)

# GPU.category: index into this tuple (append only).  "cpu" (a CPU op) only in windows that record
# Kineto's CPU activity: the test hook COMMPROF_GPU_ACTIVITY=cpu, never in a real run.
GPU_CATEGORIES = ("unknown", "kernel", "memcpy", "memset", "cpu")
GPU_CATEGORY_INDEX = {name: i for i, name in enumerate(GPU_CATEGORIES)}
NO_LAUNCH = -1  # GPU.launch_ns when no runtime call was matched; GPU.step is -1 when unknown

# SPAN.kind
SPAN_BACKWARD = 1  # torch.autograd.backward() / Tensor.backward()

# Canonical operation names, in a fixed order: the COLL.op field indexes this tuple.
# Append only (the order is part of the schema).
OPS = (
    "unknown", "all_reduce", "all_gather", "reduce_scatter", "broadcast", "reduce",
    "gather", "scatter", "all_to_all", "barrier", "send", "recv",
    "all_reduce_coalesced", "all_gather_coalesced", "reduce_scatter_coalesced",
    "monitored_barrier",
)
OP_INDEX = {name: i for i, name in enumerate(OPS)}

# dtype codes: index into this tuple (append only).
DTYPES = (
    "unknown", "float32", "float64", "float16", "bfloat16", "int8", "uint8", "int16", "int32",
    "int64", "bool", "complex64", "complex128", "float8_e4m3fn", "float8_e5m2", "uint16",
    "uint32", "uint64",
)
DTYPE_INDEX = {name: i for i, name in enumerate(DTYPES)}
