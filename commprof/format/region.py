"""The memory-mapped, append-only record region of a capture file (schema 3, minor 6): the writer.

A :class:`RegionWriter` creates the file with its versioned header (padded with zeros to a page
boundary), then appends every record straight into a shared memory map of the file: the pages
belong to the kernel's page cache, so whatever was appended survives a SIGKILL, a segfault or an
OOM kill of the process the instant the append returns.  The file grows in *chunks* (``chunk``
bytes, 1 MiB by default) with ``posix_fallocate`` (a full disk is an ``ENOSPC`` at the growth,
never a SIGBUS on a page fault) and a map of the new chunk.  Unused space reads as zeros.

Each record is one frame of the v2 framing (``u8 kind | u32 length | u32 crc32 | payload``, the
CRC over kind, length and payload: :func:`commprof.format.schema.frame_crc`), written in this
order: the whole frame with a zero kind byte (one copy, under the writer's lock), then the kind
byte, as the commit.  A frame never starts in one chunk and ends in the next (except one frame
larger than a chunk, which gets whole chunks of its own); when the next frame does not fit, the
rest of the chunk stays zero and the writer takes a new chunk.  docs/format.md ("Record region") has the rules a native writer follows.
Standard library only (it runs inside the workers).  With ``native`` (the native capture kernel's
module, commprof/capture/native/region_writer.cpp), the same writer runs in C++ after the
header: the kernel appends its records there at once, and this class's appends go through it.
"""
from __future__ import annotations

import errno
import json
import mmap
import os
import struct
import threading
import zlib

from commprof.format import layout, schema
from commprof.format.writer import encode_header

_UNCOMMITTED = struct.Struct("<xII")  # a frame header with kind 0: length and CRC, not committed
_KIND_LENGTH = struct.Struct("<BI")
_NO_FALLOCATE = {errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}
if hasattr(errno, "ENOTSUP"):
    _NO_FALLOCATE.add(errno.ENOTSUP)


class RegionClosed(Exception):
    """Raised inside an append that found the region closed (the append is then dropped)."""


def region_start(header_bytes: int) -> int:
    """File offset of the first chunk: the header's length rounded up to a page (mmap's unit)."""
    page = mmap.ALLOCATIONGRANULARITY
    return -(-header_bytes // page) * page


class RegionWriter:
    """One capture file written through a memory map.

    :meth:`appender` returns the hot-path function of one fixed-size record kind; every append
    runs under one re-entrant lock (so a signal handler that records, on the thread it
    interrupted, appends after the interrupted record instead of deadlocking).  ``on_error`` is
    called with the exception of a failed append (a full disk); the append is then dropped.
    """

    def __init__(self, path: str, meta: dict, chunk: int = schema.REGION_CHUNK_BYTES,
                 on_error=None, native=None):
        page = mmap.ALLOCATIONGRANULARITY
        if chunk <= 0 or chunk % page:
            raise ValueError(f"chunk of {chunk} bytes: must be a positive multiple of {page}")
        self.path = path
        self.chunk = chunk
        self.on_error = on_error
        self.closed = False
        self._lock = threading.RLock()
        self.start = 0
        while True:  # the header names where it ends (padded to a page): until that holds
            header = encode_header(dict(meta, region={"start": self.start, "chunk": chunk}))
            if region_start(len(header)) == self.start:
                break
            self.start = region_start(len(header))
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                     layout.file_mode(os.path.dirname(path) or "."))
        self._fd = fd
        self._mm: mmap.mmap | None = None
        self._base = self._end = self._pos = 0  # the mapped extent; free space from _pos
        self._file_end = self.start
        try:
            _write_all(fd, header)
            if native is None:
                self._grow(1)
            else:
                err = native.region_open(fd, self.start, chunk)  # takes the fd over when it is 0
                if err:
                    raise OSError(err, os.strerror(err), path)
        except BaseException:
            os.close(fd)
            self._fd = -1
            raise
        self.native = native
        if native is not None:
            self._fd = -1  # the native module's now
            self._become_native(native)

    def _become_native(self, native) -> None:
        """The same writer in C++ (capture/native/region_writer.cpp): one lock for the
        kernel's appends and these, which hand it the payload (it frames, checksums and commits)."""
        put = native.region_append
        failed = self._failed

        def append_frame(kind: int, payload: bytes) -> None:
            err = put(kind, payload)
            if err > 0:
                failed(OSError(err, os.strerror(err), self.path))

        def appender(kind: int):
            pack = schema.struct_for(schema.FIXED_KINDS[kind]).pack

            def append(row) -> None:
                try:
                    err = put(kind, pack(*row))
                except (TypeError, OverflowError, struct.error) as exc:
                    failed(exc)
                    return
                if err > 0:
                    failed(OSError(err, os.strerror(err), self.path))

            return append

        self.append_frame = append_frame
        self.appender = appender

    # -- growth ----------------------------------------------------------------------------
    def _grow(self, nbytes: int) -> int:
        """Map a new extent of whole chunks holding ``nbytes``; returns 0, its first free byte."""
        if self.closed:
            raise RegionClosed()
        size = -(-nbytes // self.chunk) * self.chunk
        off = self._file_end
        try:
            os.posix_fallocate(self._fd, off, size)
        except OSError as exc:
            if exc.errno not in _NO_FALLOCATE:
                raise
            os.ftruncate(self._fd, off + size)  # no fallocate here: sparse (a full disk: SIGBUS)
        mm = mmap.mmap(self._fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE,
                       offset=off)
        old, self._mm = self._mm, mm
        self._base, self._end, self._pos, self._file_end = off, size, 0, off + size
        if old is not None:
            old.close()  # its pages stay in the page cache and reach the file
        return 0

    # -- appends ---------------------------------------------------------------------------
    def appender(self, kind: int):
        """``append(row)`` for fixed-size records of ``kind`` (a tuple in field order).

        Never raises: a failure goes to ``on_error`` and the record is dropped.
        """
        rec = schema.struct_for(schema.FIXED_KINDS[kind])
        n = rec.size
        size = schema.FRAME_HEADER.size + n
        seed = zlib.crc32(_KIND_LENGTH.pack(kind, n))
        pack, crc32, head = rec.pack, zlib.crc32, _UNCOMMITTED.pack
        lock, w = self._lock, self

        def append(row) -> None:
            try:
                payload = pack(*row)
                frame = head(n, crc32(payload, seed)) + payload
                with lock:
                    pos = w._pos
                    if pos + size > w._end:
                        pos = w._grow(size)
                    w._pos = pos + size
                    mm = w._mm
                    mm[pos:pos + size] = frame  # kind byte 0: not committed yet
                    mm[pos] = kind  # the commit
            except RegionClosed:
                return
            except (OSError, ValueError, TypeError, OverflowError, struct.error) as exc:
                w._failed(exc)

        return append

    def append_frame(self, kind: int, payload: bytes) -> None:
        """One frame of any kind and length (JSON objects, batches).  Never raises."""
        size = schema.FRAME_HEADER.size + len(payload)
        try:
            frame = _UNCOMMITTED.pack(len(payload), schema.frame_crc(kind, payload)) + payload
            with self._lock:
                pos = self._pos
                if pos + size > self._end:
                    pos = self._grow(size)
                self._pos = pos + size
                mm = self._mm
                mm[pos:pos + size] = frame
                mm[pos] = kind
        except RegionClosed:
            return
        except (OSError, ValueError) as exc:
            self._failed(exc)

    def append_json(self, obj: dict) -> None:
        """One JSON frame (process groups, events, the trailer).  Never raises."""
        try:
            payload = json.dumps(obj, sort_keys=True, default=str).encode()
        except (TypeError, ValueError) as exc:
            self._failed(exc)
            return
        self.append_frame(schema.KIND_JSON, payload)

    def _failed(self, exc: BaseException) -> None:
        if self.on_error is not None:
            self.on_error(exc)

    @property
    def bytes_written(self) -> int:
        """Bytes of the file in use: header, padding, chunks before this one, and this one's
        records (the zero tail of the current chunk excluded)."""
        if self.native is not None:
            return self.native.region_bytes()
        return self._base + self._pos

    # -- the end ---------------------------------------------------------------------------
    def close(self, trailer: dict | None = None) -> None:
        """Append the trailer (a clean end), unmap, and cut the file after its last record."""
        with self._lock:
            if self.closed:
                return
            if trailer is not None:
                self.append_json(dict(trailer, type="trailer"))
                if self.closed:  # the trailer found the disk full: abandoned, as it is
                    return
            self.closed = True
            if self.native is not None:
                err = self.native.region_close()
                if err:
                    raise OSError(err, os.strerror(err), self.path)
                return
            end = self.bytes_written
            self._unmap()
            try:
                os.ftruncate(self._fd, end)  # nothing can touch a page past it any more
            finally:
                os.close(self._fd)
                self._fd = -1

    def abandon(self, locked: bool = True) -> None:
        """Stop writing and keep the file as it is (storage full).  ``locked=False`` in a forked
        child, whose copy of the lock another thread of the parent may hold forever."""
        if locked:
            with self._lock:
                self._abandon()
        else:
            self._abandon(locked=False)

    def _abandon(self, locked: bool = True) -> None:
        if self.closed:
            return
        self.closed = True
        if self.native is not None:
            self.native.region_abandon(locked)
            return
        self._unmap()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _unmap(self) -> None:
        mm, self._mm = self._mm, None
        self._base, self._pos, self._end = self._base + self._pos, 0, 0  # appends take _grow: closed
        if mm is not None:
            mm.close()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
