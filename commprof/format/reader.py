"""The only code that parses capture files and run directories.

:func:`read_capture` returns a :class:`RankCapture` holding numpy structured arrays, one per record
kind, with the field names of :mod:`commprof.format.schema`.  A torn or corrupt tail (a process
killed mid-write) stops reading at the last good frame and is reported in ``RankCapture.damage``;
a file that is not a capture at all raises :class:`~commprof.errors.CaptureFormatError`.
"""
from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from commprof.errors import CaptureFormatError
from commprof.format import schema

_NP_CODES = {"q": "<i8", "Q": "<u8", "i": "<i4", "I": "<u4", "H": "<u2", "B": "u1"}
DTYPES = {
    kind: np.dtype([(name, _NP_CODES[code]) for name, code in fields])
    for kind, fields in schema.FIXED_KINDS.items()
}
KIND_NAMES = {schema.KIND_COLL: "coll", schema.KIND_DONE: "done", schema.KIND_WAIT: "wait",
              schema.KIND_MARK: "mark", schema.KIND_SPAN: "span"}


@dataclass
class RankCapture:
    """Everything one capture file holds."""

    path: Path
    header: dict
    arrays: dict[str, np.ndarray]  # "coll", "done", "wait", "mark", "span"
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


def _parse_header(data: bytes, path: Path) -> tuple[dict, int]:
    """(header dict, offset of the first frame); raises CaptureFormatError."""
    prefix = schema.HEADER_PREFIX
    if len(data) < prefix.size or data[:8] != schema.MAGIC:
        raise CaptureFormatError(path, 0, "not a commprof capture file (bad magic)")
    _, version, hlen = prefix.unpack_from(data, 0)
    if version > schema.SCHEMA_VERSION:
        raise CaptureFormatError(path, 8, f"schema version {version} is newer than this commprof "
                                          f"understands ({schema.SCHEMA_VERSION}); upgrade commprof")
    end = prefix.size + hlen
    if len(data) < end + 4 or zlib.crc32(data[prefix.size:end]) != int.from_bytes(data[end:end + 4], "little"):
        raise CaptureFormatError(path, prefix.size, "header is truncated or corrupt")
    try:
        header = json.loads(data[prefix.size:end])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CaptureFormatError(path, prefix.size, "header is not valid JSON") from exc
    return header, end + 4


def read_header(path: str | os.PathLike) -> dict:
    """Only the header of a capture file (cheap: reads its first bytes)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(schema.HEADER_PREFIX.size)
            if len(data) == schema.HEADER_PREFIX.size and data[:8] == schema.MAGIC:
                data += fh.read(schema.HEADER_PREFIX.unpack_from(data, 0)[2] + 4)
    except OSError as exc:
        raise CaptureFormatError(path, 0, f"cannot read: {exc.strerror}") from exc
    return _parse_header(data, path)[0]


def read_capture(path: str | os.PathLike) -> RankCapture:
    """Parse one capture file (see the module docstring for the torn-tail behaviour)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CaptureFormatError(path, 0, f"cannot read: {exc.strerror}") from exc
    header, pos = _parse_header(data, path)
    chunks: dict[int, list[bytes]] = {k: [] for k in schema.FIXED_KINDS}
    cap = RankCapture(path=path, header=header, arrays={})
    fh = schema.FRAME_HEADER
    view = memoryview(data)  # frame bodies are views, not copies
    while pos < len(data):
        if pos + fh.size > len(data):
            cap.damage = f"torn frame header at byte {pos}"
            break
        kind, length, crc = fh.unpack_from(data, pos)
        body = view[pos + fh.size: pos + fh.size + length]
        if len(body) < length:
            cap.damage = f"torn frame at byte {pos} ({len(body)} of {length} bytes)"
            break
        if zlib.crc32(body) != crc:
            cap.damage = f"checksum mismatch in frame at byte {pos}"
            break
        if kind in chunks:
            if length % DTYPES[kind].itemsize:
                cap.damage = f"frame at byte {pos} has a partial record"
                break
            chunks[kind].append(body)
        elif kind == schema.KIND_JSON:
            try:
                obj = json.loads(bytes(body))
            except (UnicodeDecodeError, json.JSONDecodeError):
                cap.damage = f"frame at byte {pos} is not valid JSON"
                break
            if not isinstance(obj, dict):
                cap.damage = f"frame at byte {pos} is not a JSON object"
                break
            typ = obj.get("type")
            if typ == "group":
                cap.groups.append(obj)
            elif typ == "trailer":
                cap.trailer = obj
            else:
                cap.events.append(obj)
        else:
            cap.damage = f"unknown frame kind {kind} at byte {pos}"
            break
        pos += fh.size + length
    for kind, parts in chunks.items():
        cap.arrays[KIND_NAMES[kind]] = np.frombuffer(b"".join(parts), dtype=DTYPES[kind])
    return cap


MANIFEST = "manifest.json"


def read_manifest(run_dir: str | os.PathLike) -> dict:
    """The run manifest written by ``commprof run``."""
    path = Path(run_dir) / MANIFEST
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise CaptureFormatError(path, 0, "missing: not a commprof run directory") from exc
    except json.JSONDecodeError as exc:
        raise CaptureFormatError(path, exc.pos, f"invalid JSON: {exc.msg}") from exc


def capture_paths(run_dir: str | os.PathLike) -> list[Path]:
    """All capture files of a run, in name order."""
    return sorted((Path(run_dir) / "ranks").glob("*" + schema.FILE_SUFFIX))
