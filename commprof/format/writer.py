"""Append-only writer of one capture file.  Used inside workers: standard library only.

Each :meth:`CaptureWriter.write_batch` / :meth:`write_json` call appends whole frames with one
``os.write`` on an ``O_APPEND`` descriptor, so a process killed at any instant leaves every
earlier frame intact and at most one torn frame at the end (which the reader detects).
"""
from __future__ import annotations

import json
import os
import threading
import zlib

from commprof.format import layout, schema

_STRUCTS = {kind: schema.struct_for(fields) for kind, fields in schema.FIXED_KINDS.items()}


def encode_header(meta: dict) -> bytes:
    """Bytes of a file header holding ``meta`` (JSON-serialisable)."""
    body = json.dumps(meta, sort_keys=True).encode()
    return (schema.HEADER_PREFIX.pack(schema.MAGIC, schema.SCHEMA_VERSION, len(body)) + body
            + zlib.crc32(body).to_bytes(4, "little"))


def encode_frame(kind: int, payload: bytes) -> bytes:
    """One framed payload."""
    return schema.FRAME_HEADER.pack(kind, len(payload), schema.frame_crc(kind, payload)) + payload


def encode_records(kind: int, rows) -> bytes:
    """The packed fixed-size records of ``kind`` (an iterable of tuples in field order)."""
    pack = _STRUCTS[kind].pack
    return b"".join([pack(*row) for row in rows])


def encode_batch(kind: int, rows) -> bytes:
    """A frame holding fixed-size records of ``kind`` (an iterable of tuples in field order)."""
    return encode_frame(kind, encode_records(kind, rows))


def encode_json(obj: dict) -> bytes:
    """A frame holding one JSON object."""
    return encode_frame(schema.KIND_JSON, json.dumps(obj, sort_keys=True, default=str).encode())


class CaptureWriter:
    """Writes one capture file; creates it (with its header) on the first write."""

    def __init__(self, path: str, meta: dict):
        self.path = path
        self._meta = meta
        self._fd: int | None = None
        self._lock = threading.Lock()
        self.bytes_written = 0
        self.closed = False

    def _open(self) -> int:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_EXCL | os.O_NOFOLLOW,
                     layout.file_mode(os.path.dirname(self.path) or "."))
        self._fd = fd
        self._write_all(encode_header(self._meta))
        return fd

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self.bytes_written += len(data)

    def write(self, data: bytes) -> None:
        """Append already-encoded frames (raises OSError on I/O failure)."""
        if not data:
            return
        with self._lock:
            if self.closed:
                return
            if self._fd is None:
                self._open()
            self._write_all(data)

    def close(self, trailer: dict | None = None) -> None:
        """Write the trailer (marks a clean end) and close the file."""
        with self._lock:
            if self.closed:
                return
            if trailer is not None:
                if self._fd is None:
                    self._open()
                self._write_all(encode_json(dict(trailer, type="trailer")))
            if self._fd is not None:
                os.close(self._fd)
            self.closed = True
