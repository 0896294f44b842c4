"""The only code that parses capture files and run directories.

:func:`read_capture` returns a :class:`RankCapture` holding numpy structured arrays, one per record
kind, with the field names of :mod:`commprof.format.schema`.  A torn or corrupt tail (a process
killed mid-write) stops reading at the last good frame and is reported in ``RankCapture.damage``;
a file that is not a capture at all raises :class:`~commprof.errors.CaptureFormatError`.
Files of version 3 (minor 6) hold a memory-mapped record region (``format/region.py``): a zero tail
there is where the writer stopped, not damage; an uncommitted or corrupt record loses itself (or
the rest of its chunk), not the rest of the file.
"""
from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from commprof.errors import CaptureFormatError, TruncatedCaptureError
from commprof.format import layout, safe_io, schema
from commprof.format.region_parse import PAD_TYPE, json_object as _json_object
from commprof.format.region_parse import parse_region as _parse_region, region_of as _region_of
from commprof.format.layout import capture_paths, sample_paths  # noqa: F401 - the files a run has

_NP_CODES = {"q": "<i8", "Q": "<u8", "i": "<i4", "I": "<u4", "H": "<u2", "B": "u1", "d": "<f8"}
DTYPES = {
    kind: np.dtype([(name, _NP_CODES[code]) for name, code in fields])
    for kind, fields in schema.FIXED_KINDS.items()
}
KIND_NAMES = {schema.KIND_COLL: "coll", schema.KIND_DONE: "done", schema.KIND_WAIT: "wait",
              schema.KIND_MARK: "mark", schema.KIND_SPAN: "span", schema.KIND_SAMPLE: "sample",
              schema.KIND_GPU: "gpu"}


@dataclass
class RankCapture:
    """Everything one capture file holds."""

    path: Path
    header: dict
    arrays: dict[str, np.ndarray]  # "coll", "done", "wait", "mark", "span", "gpu" (+ "sample")
    groups: list[dict] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    trailer: dict | None = None
    damage: str | None = None  # why reading stopped early, or None

    @property
    def rank(self) -> int:
        return int(self.header["rank"])

    @property
    def complete(self) -> bool:
        """True when the process closed the file cleanly (a trailer was written)."""
        return self.trailer is not None


def _parse_header(data: bytes, path: Path, need_rank: bool = True) -> tuple[dict, int, int]:
    """(header dict, offset of the first frame, schema version); raises CaptureFormatError."""
    prefix = schema.HEADER_PREFIX
    if not data:
        raise TruncatedCaptureError(path, 0, "empty file (its process died while creating it?)")
    if data[:len(schema.MAGIC)] != schema.MAGIC[:len(data)]:
        raise CaptureFormatError(path, 0, "not a commprof capture file (bad magic)")
    if len(data) < prefix.size:
        raise TruncatedCaptureError(path, 0, f"ends inside its header ({len(data)} bytes)")
    _, version, hlen = prefix.unpack_from(data, 0)
    if version > schema.SCHEMA_VERSION:
        raise CaptureFormatError(path, 8, f"schema version {version} is newer than this commprof "
                                          f"understands ({schema.SCHEMA_VERSION}); upgrade commprof")
    end = prefix.size + hlen
    if len(data) < end + 4:
        raise TruncatedCaptureError(path, prefix.size, f"ends inside its header ({len(data)} of "
                                                       f"{end + 4} bytes)")
    if zlib.crc32(data[prefix.size:end]) != int.from_bytes(data[end:end + 4], "little"):
        raise CaptureFormatError(path, prefix.size, "header is corrupt (checksum mismatch)")
    header = safe_io.loads(data[prefix.size:end], path, lambda p, why: CaptureFormatError(
        p, prefix.size, f"header is not valid JSON: {why}"))
    if not isinstance(header, dict):
        raise CaptureFormatError(path, prefix.size, "header is not a JSON object")
    if need_rank and not isinstance(header.get("rank"), int):
        raise CaptureFormatError(path, prefix.size, "header has no integer 'rank'")
    _check_header(header, path, prefix.size)
    return header, end + 4, version


# Header keys the readers use, with their types and ranges (None/absent is always allowed: an
# older minor, or unknown); a header that breaks one is refused in one line, not used.
_INT_RANGES = {"rank": (0, (1 << 31) - 1), "world_size": (1, 1 << 20), "pid": (0, (1 << 31) - 1),
               "restart": (0, (1 << 31) - 1), "local_rank": (0, (1 << 31) - 1)}
_TYPES = {"host": str, "clock": dict, "missing_ops": list, "torch_version": str,
          "nccl_version": str, "kind": str, "run_id": str}


def _check_header(header: dict, path: Path, offset: int) -> None:
    """Type and range of every header key a reader uses (raises CaptureFormatError)."""
    def bad(key: str, want: str):
        raise CaptureFormatError(path, offset, f"header key {key!r} is {_shown(header[key])}, "
                                               f"expected {want}")
    for key, (lo, hi) in _INT_RANGES.items():
        v = header.get(key)
        if v is not None and (type(v) is not int or not lo <= v <= hi):
            bad(key, f"an integer in [{lo}, {hi}]")
    for key, typ in _TYPES.items():
        if header.get(key) is not None and not isinstance(header[key], typ):
            bad(key, f"a JSON {'string' if typ is str else 'object' if typ is dict else 'list'}")
    clock = header.get("clock") or {}
    for key in ("wall_ns", "mono_ns"):
        if clock.get(key) is not None and type(clock[key]) is not int:
            raise CaptureFormatError(path, offset, f"header key 'clock.{key}' is "
                                                   f"{_shown(clock[key])}, expected an integer")
    if not all(isinstance(m, str) for m in header.get("missing_ops") or []):
        raise CaptureFormatError(path, offset, "header key 'missing_ops' holds a non-string")


def _shown(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:40] + "…"


def read_header(path: str | os.PathLike, within=None) -> dict:
    """Only the header of a capture file (cheap: reads its first bytes).  ``within``: the run
    directory the file must be in (a symlink out of it is refused)."""
    path = Path(path)
    try:
        with safe_io.open_regular(path, within) as fh:
            data = fh.read(schema.HEADER_PREFIX.size)
            if len(data) == schema.HEADER_PREFIX.size and data[:8] == schema.MAGIC:
                data += fh.read(schema.HEADER_PREFIX.unpack_from(data, 0)[2] + 4)
    except OSError as exc:
        raise CaptureFormatError(path, 0, f"cannot read: {exc.strerror}") from exc
    return _parse_header(data, path)[0]


def read_capture(path: str | os.PathLike, need_rank: bool = True, within=None) -> RankCapture:
    """Parse one capture file (see the module docstring for the torn-tail behaviour).

    ``need_rank=False`` reads a node sampler file (``*.cps``: same framing, no rank).  Records
    whose fields are out of range (an op or dtype code this commprof does not know, a negative
    sequence number) are kept: :func:`drop_impossible` drops them.
    """
    path = Path(path)
    try:
        data = safe_io.read_bytes(path, within=within)
    except FileNotFoundError as exc:
        raise CaptureFormatError(path, 0, f"cannot read: {exc.strerror}") from exc
    header, pos, version = _parse_header(data, path, need_rank)
    cap = RankCapture(path=path, header=header, arrays={})
    region = _region_of(header, pos, path)
    if region is None:
        chunks, objects, _, cap.damage = _parse_frames(memoryview(data), pos, version)
    else:
        chunks, objects, _, cap.damage = _parse_region(memoryview(data), region[0], region)
    for obj in objects:
        typ = obj.get("type")
        if typ == "group":
            cap.groups.append(obj)
        elif typ == PAD_TYPE:
            continue
        elif typ == "trailer":
            cap.trailer = obj
        else:
            cap.events.append(obj)
    cap.arrays = _join(chunks)
    return cap


def drop_impossible(cap: RankCapture) -> RankCapture:
    """``cap`` without the records an analysis cannot use safely, named in ``damage``: fields
    out of range (an op or dtype code this commprof does not know, a negative sequence number or
    record id, an unknown GPU category) and group/degraded frames of the wrong
    shape.  A CRC-valid forged or corrupted record must not index past a table or size an
    allocation (``read_capture`` itself returns what the file holds)."""
    cap.arrays, dropped = _in_range(cap.arrays)
    cap.groups, bad_groups = _valid_objects(cap.groups)
    cap.events, bad_events = _valid_objects(cap.events)
    dropped += bad_groups + bad_events
    if dropped:
        why = (f"{dropped} record(s) with out-of-range fields (op, dtype, seq, category; a "
               "group or degraded frame of the wrong shape) dropped")
        cap.damage = f"{cap.damage}; {why}" if cap.damage else why
    return cap


def _small_int(v) -> bool:
    return type(v) is int and 0 <= v < 1 << 31


_SHAPES = {  # JSON frames the loaders index into: their keys' types
    "group": lambda o: (_small_int(o.get("id")) and (o.get("size") is None or _small_int(o["size"]))
                        and (o.get("rank") is None or type(o["rank"]) is int)
                        and (o.get("ranks") is None or (isinstance(o["ranks"], list) and all(
                            _small_int(r) for r in o["ranks"])))),
    "degraded": lambda o: (isinstance(o.get("where"), str) and type(o.get("count")) is int
                           and isinstance(o.get("error"), str)),
}


def _valid_objects(objects: list[dict]) -> tuple[list[dict], int]:
    """The JSON frames of a known type whose keys have the types the loaders use, and how many
    others were dropped."""
    keep = [o for o in objects if _SHAPES.get(o.get("type"), lambda o: True)(o)]
    return keep, len(objects) - len(keep)


def _in_range(arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
    """The records whose codes and counters are possible (a CRC-valid forged or corrupted record
    must not index past a table or size an allocation), and how many others were dropped."""
    dropped = 0
    checks = {"coll": lambda a: (a["op"] < len(schema.OPS)) & (a["dtype"] < len(schema.DTYPES))
              & (a["seq"] >= 0) & (a["id"] >= 0),
              "gpu": lambda a: a["category"] < len(schema.GPU_CATEGORIES)}
    for name, ok in checks.items():
        arr = arrays.get(name)
        if arr is not None and len(arr):
            keep = ok(arr)
            if not keep.all():
                dropped += int((~keep).sum())
                arrays[name] = arr[keep]
    return arrays, dropped


def _join(chunks: dict[int, list]) -> dict[str, np.ndarray]:
    return {KIND_NAMES[kind]: np.frombuffer(b"".join(parts), dtype=DTYPES[kind])
            for kind, parts in chunks.items()}


def _parse_frames(view: memoryview, pos: int, version: int, live: bool = False):
    """Frames from ``pos`` on: (record bytes per kind, JSON objects, end offset, damage).

    Stops at the first frame that is torn or does not verify.  With ``live`` (a file still being
    written), a frame cut short by the end of the data is not damage: reading resumes there later.
    """
    chunks: dict[int, list] = {k: [] for k in schema.FIXED_KINDS}
    objects: list[dict] = []
    fh = schema.FRAME_HEADER
    size = len(view)
    damage = None
    while pos < size:
        if pos + fh.size > size:
            damage = None if live else f"torn frame header at byte {pos}"
            break
        kind, length, crc = fh.unpack_from(view, pos)
        if kind == 0 and length == 0 and not any(view[pos:pos + 4096]):
            damage = f"zero-filled from byte {pos} (data lost in a crash before reaching disk?)"
            break
        body = view[pos + fh.size: pos + fh.size + length]
        if len(body) < length:
            damage = None if live else f"torn frame at byte {pos} ({len(body)} of {length} bytes)"
            break
        if schema.frame_crc(kind, body, version) != crc:
            damage = f"checksum mismatch in frame at byte {pos}"
            break
        if kind in chunks:
            if length % DTYPES[kind].itemsize:
                damage = f"frame at byte {pos} has a partial record"
                break
            chunks[kind].append(body)
        elif kind == schema.KIND_JSON:
            obj = _json_object(body)
            if obj is None:
                damage = f"frame at byte {pos} is not a JSON object"
                break
            objects.append(obj)
        else:
            damage = f"unknown frame kind {kind} at byte {pos}"
            break
        pos += fh.size + length
    return chunks, objects, pos, damage


class CaptureTail:
    """Follows a capture file that is still being written: each :meth:`poll` returns the new frames.

    Used by ``commprof run``'s hang watch.  A frame not yet completely written is left for the
    next poll; a frame that does not verify stops the tail for good (``damage`` says why).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.header: dict | None = None
        self.damage: str | None = None
        self._pos = 0
        self._version = schema.SCHEMA_VERSION
        self._region: tuple[int, int] | None = None  # a minor-6 file's record region

    def poll(self) -> tuple[dict[str, np.ndarray], list[dict]]:
        """(new records per kind, new JSON objects) since the last poll."""
        if self.damage is not None:
            return {}, []
        try:
            with safe_io.open_regular(self.path) as fh:
                fh.seek(self._pos)
                data = fh.read()
        except OSError as exc:
            self.damage = f"cannot read: {exc.strerror}"
            return {}, []
        except CaptureFormatError as exc:
            self.damage = exc.reason
            return {}, []
        base = self._pos
        start = 0
        if self.header is None:
            try:
                self.header, start, self._version = _parse_header(data, self.path)
                self._region = _region_of(self.header, start, self.path)
            except TruncatedCaptureError:
                return {}, []  # the header is still being written
            except CaptureFormatError as exc:
                self.header, self.damage = None, exc.reason
                return {}, []
        if self._region is not None:
            first = max(base + start, self._region[0])
            chunks, objects, self._pos, _ = _parse_region(memoryview(data), first, self._region,
                                                          live=True, base=base)
        else:
            chunks, objects, end, self.damage = _parse_frames(memoryview(data), start,
                                                              self._version, live=True)
            self._pos = base + end
        objects = [o for o in objects if o.get("type") != PAD_TYPE]
        return _join(chunks), objects


def read_manifest(run_dir: str | os.PathLike) -> dict:
    """The run manifest written by ``commprof run``."""
    path = layout.manifest_path(run_dir)
    try:
        doc = safe_io.read_json(path, within=run_dir)
    except FileNotFoundError as exc:
        raise CaptureFormatError(path, 0, "missing: not a commprof run directory") from exc
    if not isinstance(doc, dict):
        raise CaptureFormatError(path, 0, f"not a JSON object (a {type(doc).__name__}): "
                                          "not a commprof manifest")
    return doc


def first_run_id(path: str | os.PathLike, max_bytes: int = 1 << 20) -> str | None:
    """The run id a capture recorded (its ``run`` JSON frame, written right after process-group
    init), reading at most ``max_bytes`` from the start; None when there is none."""
    path = Path(path)
    try:
        with safe_io.open_regular(path) as fh:
            data = fh.read(max_bytes)
        header, pos, version = _parse_header(data, path)
        region = _region_of(header, pos, path)
    except (OSError, CaptureFormatError):
        return None
    if region is None:
        _, objects, _, _ = _parse_frames(memoryview(data), pos, version, live=True)
    else:
        _, objects, _, _ = _parse_region(memoryview(data), region[0], region, live=True)
    return next((o.get("run_id") for o in objects if o.get("type") == "run"), None)


HANG_SCHEMA_PREFIX = "commprof.hang/"


def _read_json_document(path: Path, schema_prefix: str, what: str, lists: tuple[str, ...],
                        within=None) -> dict | None:
    """A JSON document of ``schema_prefix`` with ``lists`` holding lists; None when absent."""
    try:
        doc = safe_io.read_json(path, within=within)
    except FileNotFoundError:
        return None
    if not isinstance(doc, dict) or not str(doc.get("schema", "")).startswith(schema_prefix):
        raise CaptureFormatError(path, 0, f"not a commprof {what} (no {schema_prefix.rstrip('/')} schema)")
    missing = [k for k in lists if not isinstance(doc.get(k), list)]
    if missing:
        raise CaptureFormatError(path, 0, f"{what} lacks its {' and '.join(repr(k) for k in missing)} list")
    return doc


def read_hang(run_dir: str | os.PathLike) -> dict | None:
    """The hang report ``commprof run --hang-timeout`` wrote, or None when there is none."""
    return _read_json_document(layout.hang_path(run_dir), HANG_SCHEMA_PREFIX, "hang report",
                               ("blocked", "ranks"), within=run_dir)


def read_probe(path: str | os.PathLike) -> dict | None:
    """A probe result (``commprof probe -o``, or ``RUN/probe.json``); None when absent."""
    path, within = Path(path), None
    if path.is_dir():
        path, within = layout.probe_path(path), path
    return _read_json_document(path, "commprof.probe/", "probe result", ("results",), within)
