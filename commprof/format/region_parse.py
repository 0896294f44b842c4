"""The record region of a capture file (schema 3, minor 6): how its frames are read.

Used by :mod:`commprof.format.reader` (the one reader: call that, not this).  The writer is
:mod:`commprof.format.region`; the rules are in docs/format.md ("Record region").
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from commprof.errors import CaptureFormatError
from commprof.format import safe_io, schema

_ITEMSIZE = {kind: schema.struct_for(fields).size for kind, fields in schema.FIXED_KINDS.items()}

PAD_TYPE = "pad"  # a JSON frame that only fills space (never returned)


def region_of(header: dict, first: int, path: Path) -> tuple[int, int] | None:
    """(first chunk's offset, chunk bytes) of a file with a record region (minor 6), else None."""
    region = header.get(schema.REGION_KEY)
    if region is None:
        return None
    start = region.get("start") if isinstance(region, dict) else None
    chunk = region.get("chunk") if isinstance(region, dict) else None
    if not (isinstance(start, int) and isinstance(chunk, int) and start >= first and chunk > 0):
        raise CaptureFormatError(path, first, f"header has an invalid record region {region!r}")
    return start, chunk


def _zero(view: memoryview, a: int, b: int) -> bool:
    """True when ``view[a:b]`` holds only zero bytes."""
    return b <= a or not np.frombuffer(view, np.uint8, b - a, a).any()


def parse_region(view: memoryview, pos: int, region: tuple[int, int], live: bool = False,
                  base: int = 0):
    """The frames of a record region (minor 6; docs/format.md "Record region"), from file offset
    ``pos`` (``view[0]`` is file offset ``base``): (records per kind, JSON objects, offset where
    reading stopped, damage).

    Chunk by chunk: a zero kind byte ends a chunk's records.  Damage does not end the file:
    an uncommitted record (its process died writing it) is skipped by its length; a frame that
    does not verify, or bytes after a chunk's end, lose the rest of that chunk only.  ``damage``
    names the first of these and counts the others.  With ``live`` (a file still being
    written), reading stops at the first record not yet committed, to resume there later.
    """
    start, chunk = region
    chunks: dict[int, list] = {k: [] for k in schema.FIXED_KINDS}
    objects: list[dict] = []
    fh = schema.FRAME_HEADER
    size = base + len(view)
    problems: list[str] = []
    while pos < size:
        boundary = start + ((pos - start) // chunk + 1) * chunk
        if pos + fh.size > size:  # the file ends inside a frame header
            if live:
                break
            if not _zero(view, pos - base, size - base):
                problems.append(f"torn frame header at byte {pos}")
            break
        if boundary - pos < fh.size:  # room for no frame: the writer left zeros
            if not live and not _zero(view, pos - base, boundary - base):
                problems.append(f"data at byte {pos}, in the last bytes of a chunk")
            pos = boundary
            continue
        kind, length, crc = fh.unpack_from(view, pos - base)
        if kind == 0:
            if length == 0 and crc == 0:  # the end of this chunk's records
                if live:
                    nxt = boundary - base
                    if boundary + fh.size > size or view[nxt] == 0:
                        break  # nothing after it yet: the writer is still in this chunk
                elif not _zero(view, pos - base, min(boundary, size) - base):
                    problems.append(f"zero-filled at byte {pos} but data follows in its chunk "
                                    "(a page lost in a machine crash, or a torn write)")
                pos = boundary
                continue
            if live:
                break  # being written now
            problems.append(f"record at byte {pos} was never committed (its process died "
                            "writing it); skipped")
            skip = pos + fh.size + length
            if skip > boundary and (pos - start) % chunk:  # only a chunk's first frame is larger
                skip = boundary
            pos = min(skip, size)
            continue
        body = view[pos - base + fh.size: pos - base + fh.size + length]
        why, unfinished = _take_frame(kind, body, length, crc, pos, chunks, objects)
        if why is not None:
            if live and unfinished:
                break  # being written now
            problems.append(why + "; the rest of its chunk was skipped")
            pos = max(boundary, pos + fh.size) if len(body) >= length else size
            continue
        pos += fh.size + length
    damage = None
    if problems:
        damage = problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
    return chunks, objects, pos, damage


def _take_frame(kind: int, body, length: int, crc: int, pos: int, chunks: dict[int, list],
                objects: list[dict]) -> tuple[str | None, bool]:
    """Keep the frame at file offset ``pos`` in ``chunks`` (fixed-size records) or ``objects``
    (JSON).  Returns (what is wrong with it, or None; whether it may be a frame still being
    written: torn, or its checksum not matching yet)."""
    if len(body) < length:
        return f"torn frame at byte {pos} ({len(body)} of {length} bytes)", True
    # (live: on a weakly ordered CPU the commit byte can show before the payload)
    if schema.frame_crc(kind, body) != crc:
        return f"checksum mismatch in frame at byte {pos}", True
    if kind in chunks:
        if length % _ITEMSIZE[kind]:
            return f"frame at byte {pos} has a partial record", False
        chunks[kind].append(body)
    elif kind == schema.KIND_JSON:
        obj = json_object(body)
        if obj is None:
            return f"frame at byte {pos} is not a JSON object", False
        objects.append(obj)
    else:
        return f"unknown frame kind {kind} at byte {pos}", False
    return None, False


def json_object(body) -> dict | None:
    """A JSON frame's object (depth and numbers checked: format/safe_io.py), or None."""
    obj = safe_io.try_loads(body)
    return obj if isinstance(obj, dict) else None
