"""Per-node summary files: :class:`~commprof.analysis.host.rank.RankResult` objects, safely serialized.

Reading one never executes code (no pickle, no eval): it is JSON, Arrow IPC and raw numeric
arrays, each checked before use.  Layout (integers little-endian)::

    MAGIC      6 bytes   b"CPSUM\\0"
    n          u16       length of the schema string
    schema     n bytes   ASCII, "commprof.summary/<major>[.<minor>]" (this module writes SCHEMA)
    length     u64       payload length
    crc        u32       zlib.crc32 of the payload
    payload    length    u32 section count, then per section a u64 length and its bytes

Section 0 is a UTF-8 JSON document ``{"meta": ..., "results": [...]}``; the other sections are
blobs it refers to by index: Arrow IPC streams (DataFrames) and raw array bytes.  Values in the
document are plain JSON where that is lossless; otherwise a one-key object whose key starts with
``$`` says what it is:

* ``{"$float": "nan" | "inf" | "-inf"}``, ``{"$tuple": [...]}``, ``{"$set": [...]}``,
  ``{"$dict": [[key, value], ...]}`` (keys that are not strings, or start with ``$``),
  ``{"$np": [dtype, value]}`` (numpy scalar, numeric/bool dtypes only);
* ``{"$nd": [blob, dtype descr, shape]}``: a numpy array (no object dtypes), C order;
* ``{"$df": {"arrow": blob, "json": [[position, label, values], ...], "range_columns": ...}}``:
  a DataFrame as an Arrow IPC stream (pandas metadata keeps dtypes, categoricals and the index);
  object columns Arrow cannot restore exactly (lists, mixed ints and None, ...) are left out of it
  and stored as JSON values; ``range_columns`` is ``[start, stop, step]`` when the column labels
  are a RangeIndex (e.g. ``pd.DataFrame()``), which Arrow does not keep.  Each frame is decoded
  again when written, and one that would not come back equal (values, dtypes, index, element
  types of object columns) is refused (ValueError);
* ``{"$latency": {...}}``: a :class:`~commprof.analysis.measures.latency.Latency`: count, min, max and its
  DDSketch's whole state (relative accuracy, zero count, count, sum, min, max, and per store
  offset, min/max key, count and its dense bins as a float64 ``$nd``), rebuilt identically, so
  quantiles and merges of the decoded sketch equal the original's.

Any damage — wrong magic, another or a newer major schema, truncation, CRC mismatch, a document
not shaped as above — raises :class:`~commprof.errors.CaptureFormatError`.  A change to what is
stored (e.g. a new RankPart field) needs a new major version; files of a minor version of this
major (``commprof.summary/1.x``) are read as 1.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import re
import struct
import zlib

from commprof.analysis.host.rank import RankResult
from commprof.analysis.scale.summary_codec import Bad, Decoder, Encoder
from commprof.errors import CaptureFormatError

MAGIC = b"CPSUM\0"
SCHEMA = "commprof.summary/1"
MAJOR = 1
_SCHEMA_RE = re.compile(r"commprof\.summary/(\d+)(?:\.(\d+))?")
_FIXED = struct.Struct("<QI")  # payload length, crc32


def encode(results: list[RankResult], meta: dict, key: bytes | None = None) -> bytes:
    """The summary file holding ``results`` and ``meta`` (a dict of plain values); with ``key``,
    authenticated: ``meta["mac"]`` says so and the payload's last section is the HMAC-SHA256,
    under ``key``, of everything before it (:func:`authentic`).

    Raises TypeError for a value this format cannot store and ValueError for a DataFrame it cannot
    store exactly — never writes a file that would not decode equal."""
    blobs: list[bytes] = []
    enc = Encoder(blobs)
    meta = dict(meta, **({"mac": MAC} if key is not None else {}))
    doc = {"meta": enc.value(meta), "results": [enc.result(r) for r in results]}
    sections = [json.dumps(doc, allow_nan=False, separators=(",", ":")).encode()] + blobs
    payload = struct.pack("<I", len(sections) + (key is not None)) + b"".join(
        struct.pack("<Q", len(s)) + s for s in sections)
    if key is not None:
        payload += struct.pack("<Q", _MAC_BYTES) + hmac.new(key, payload, hashlib.sha256).digest()
    schema = SCHEMA.encode("ascii")
    return (MAGIC + struct.pack("<H", len(schema)) + schema
            + _FIXED.pack(len(payload), zlib.crc32(payload)) + payload)

MAC = "hmac-sha256"  # meta["mac"] of an authenticated summary
_MAC_BYTES = 32


def authentic(data: bytes, key: bytes, path) -> bool:
    """Whether ``data`` (an intact summary file, else CaptureFormatError) carries a valid
    HMAC-SHA256 under ``key`` of its whole payload but the MAC: written by someone who held
    ``key``, and not changed since."""
    payload = _payload(bytes(data), path)
    if len(payload) < 8 + _MAC_BYTES:
        return False
    body, tail = payload[:-8 - _MAC_BYTES], payload[-8 - _MAC_BYTES:]
    if struct.unpack_from("<Q", tail)[0] != _MAC_BYTES:
        return False
    return hmac.compare_digest(hmac.new(key, body, hashlib.sha256).digest(), tail[8:])


def decode(data: bytes, path, meta_only: bool = False) -> tuple[dict, list[RankResult]]:
    """``(meta, results)`` of a summary file's bytes; ``path`` names it in errors.  With
    ``meta_only`` the file is checked whole but only ``meta`` is decoded (results: ``[]``).

    Raises :class:`CaptureFormatError` (with the byte offset where known) for anything that is
    not an intact summary file of a major version this module reads."""
    data = bytes(data)
    payload = _payload(data, path)
    pos = len(data) - len(payload)
    try:
        sections = _sections(payload)
        doc = json.loads(sections[0].decode("utf-8"), parse_constant=_no_constant)
        dec = Decoder(sections)
        if not isinstance(doc, dict) or set(doc) != {"meta", "results"}:
            raise Bad("the document is not {meta, results}")
        meta = dec.value(doc["meta"])
        if not isinstance(meta, dict) or not isinstance(doc["results"], list):
            raise Bad("meta is not a dict or results not a list")
        return meta, ([] if meta_only else [dec.result(r) for r in doc["results"]])
    except CaptureFormatError:
        raise
    except Exception as exc:  # noqa: BLE001 -- any inconsistency of a file whose CRC matched
        raise CaptureFormatError(path, pos, f"malformed summary: {type(exc).__name__}: {exc}") from None


def _payload(data: bytes, path) -> bytes:
    """The payload of a summary file, its header and CRC checked (CaptureFormatError)."""
    if not data:
        raise CaptureFormatError(path, 0, "empty file: not a commprof summary")
    if not data.startswith(MAGIC):
        if MAGIC.startswith(data):
            raise CaptureFormatError(path, len(data), "truncated in the file's magic")
        raise CaptureFormatError(path, 0, "not a commprof summary file (bad magic)")
    pos = len(MAGIC)
    if len(data) < pos + 2:
        raise CaptureFormatError(path, len(data), "truncated in the header")
    (n,) = struct.unpack_from("<H", data, pos)
    pos += 2
    if len(data) < pos + n + _FIXED.size:
        raise CaptureFormatError(path, len(data), "truncated in the header")
    try:
        schema = data[pos:pos + n].decode("ascii")
    except UnicodeDecodeError:
        schema = None
    m = _SCHEMA_RE.fullmatch(schema or "")
    if not m:
        raise CaptureFormatError(path, pos, f"unknown schema {data[pos:pos + n]!r} "
                                            f"(expected {SCHEMA})")
    if int(m.group(1)) != MAJOR:
        newer = "newer than" if int(m.group(1)) > MAJOR else "not"
        raise CaptureFormatError(path, pos, f"schema {schema} is {newer} the version this "
                                            f"commprof reads ({SCHEMA}): upgrade commprof")
    pos += n
    length, crc = _FIXED.unpack_from(data, pos)
    pos += _FIXED.size
    if len(data) - pos < length:
        raise CaptureFormatError(path, len(data), f"truncated: the payload is {length} bytes, "
                                                  f"the file holds {len(data) - pos}")
    if len(data) - pos > length:
        raise CaptureFormatError(path, pos + length, f"{len(data) - pos - length} unexpected bytes "
                                                     "after the payload")
    payload = data[pos:]
    if zlib.crc32(payload) != crc:
        raise CaptureFormatError(path, pos, "damaged: the payload's CRC32 does not match")
    return payload


def _no_constant(name):
    raise Bad(f"non-standard JSON constant {name}")


def _sections(payload: bytes) -> list[bytes]:
    if len(payload) < 4:
        raise Bad("no section count")
    (count,) = struct.unpack_from("<I", payload, 0)
    pos, out = 4, []
    for i in range(count):
        if pos + 8 > len(payload):
            raise Bad(f"section {i} has no length")
        (n,) = struct.unpack_from("<Q", payload, pos)
        pos += 8
        if pos + n > len(payload):
            raise Bad(f"section {i} runs past the payload")
        out.append(payload[pos:pos + n])
        pos += n
    if pos != len(payload) or not out:
        raise Bad("sections do not fill the payload")
    return out
