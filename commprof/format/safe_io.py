"""Opening and reading input files so that no input can hang, exhaust memory or trace back.

Every reader of commprof (captures, sampler files, node summaries, manifests, ``hang.json``,
``probe.json``, saved reports, PyTorch-profiler traces) opens its file through :func:`open_regular`
and reads it through :func:`read_bytes` / :func:`read_json` (traces: :func:`open_text_stream`):

* **regular files only**: a FIFO, a device (``/dev/zero``), a socket or a directory is refused
  before a byte is read (the open does not block on a FIFO); with ``within``, a symlink that
  leads out of that directory (the run directory) is refused too;
* **bounded reads**: at most :func:`max_bytes` bytes (``COMMPROF_MAX_INPUT_BYTES``, default
  16 GiB; JSON documents 256 MiB unless the variable is set), and a gzip stream decompresses to at
  most ``COMMPROF_MAX_GZIP_RATIO`` (default 100) times its compressed size, within the same bound;
* **JSON checked**: nesting at most :data:`MAX_DEPTH` deep, no ``NaN``/``Infinity``, no number that
  overflows (``1e400``) and no integer outside the signed 64-bit range.

Every refusal is the caller's one-line error (``error(path, reason)``), which the CLI turns into
``commprof: error: FILE: what is wrong`` and exit code 2.
"""
from __future__ import annotations

import gzip
import json
import os
import stat
import zlib
from pathlib import Path
from typing import Callable

from commprof.errors import CaptureFormatError

ENV_MAX_BYTES = "COMMPROF_MAX_INPUT_BYTES"
ENV_MAX_GZIP_RATIO = "COMMPROF_MAX_GZIP_RATIO"
FILE_LIMIT = 16 << 30  # captures, summaries, traces (uncompressed)
DOC_LIMIT = 256 << 20  # JSON documents: manifest, hang.json, probe.json, saved reports
GZIP_RATIO = 100
MAX_DEPTH = 100  # commprof's own documents nest < 15 deep
INT64 = (-(1 << 63), (1 << 63) - 1)

ErrorFactory = Callable[[Path, str], Exception]


def capture_error(path, reason: str) -> Exception:
    """The default error: :class:`~commprof.errors.CaptureFormatError` at offset 0."""
    return CaptureFormatError(path, 0, reason)


def max_bytes(default: int = FILE_LIMIT) -> int:
    """The largest input read: ``COMMPROF_MAX_INPUT_BYTES`` when set (bytes), else ``default``."""
    raw = os.environ.get(ENV_MAX_BYTES, "").strip()
    if raw:
        try:
            return max(1, int(float(raw)))
        except ValueError:
            pass  # an unusable setting reads as unset; the default limit still holds
    return default


def gzip_ratio() -> int:
    """How many times its compressed size a gzip input may expand (``COMMPROF_MAX_GZIP_RATIO``)."""
    raw = os.environ.get(ENV_MAX_GZIP_RATIO, "").strip()
    try:
        return max(1, int(float(raw))) if raw else GZIP_RATIO
    except ValueError:
        return GZIP_RATIO


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


def open_regular(path, within=None, error: ErrorFactory = capture_error):
    """``path`` opened for binary reading, if it is a regular file (else ``error``).

    A missing file raises :class:`FileNotFoundError` (the callers say what its absence means).
    ``within``: a directory the file must really be in (a symlink out of it is refused)."""
    path = Path(path)
    if within is not None:
        real, root = os.path.realpath(path), os.path.realpath(within)
        if os.path.commonpath([real, root]) != root:
            raise error(path, f"a symlink out of {within} (to {real}): refused")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if os.path.isdir(path):
            raise error(path, "a directory, not a file") from None
        raise error(path, f"cannot read: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            what = next((w for test, w in _KINDS if test(mode)), "not a regular file")
            raise error(path, f"{what}, not a regular file: refused")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path, limit: int | None = None, within=None,
               error: ErrorFactory = capture_error, fh=None) -> bytes:
    """All of a regular file, refused when longer than ``limit`` (default :func:`max_bytes`)."""
    limit = max_bytes() if limit is None else limit
    own = fh is None
    fh = open_regular(path, within, error) if own else fh
    too_big = error(Path(path), f"larger than the {_size(limit)} commprof reads "
                                f"(set {ENV_MAX_BYTES} to raise the limit)")
    try:
        size = os.fstat(fh.fileno()).st_size
        if size > limit:
            raise too_big
        parts = [fh.read(size)]  # what is there now, then what a writer appended since
        total = len(parts[0])
        while more := fh.read(1 << 20):
            total += len(more)
            if total > limit:
                raise too_big
            parts.append(more)
    except OSError as exc:
        raise error(Path(path), f"cannot read: {exc.strerror or exc}") from None
    finally:
        if own:
            fh.close()
    return parts[0] if len(parts) == 1 else b"".join(parts)


def read_json(path, limit: int | None = None, within=None, error: ErrorFactory = capture_error):
    """A JSON document (UTF-8, checked as :func:`loads`).  Missing: FileNotFoundError."""
    data = read_bytes(path, max_bytes(DOC_LIMIT) if limit is None else limit, within, error)
    return loads(data, Path(path), error)


def loads(data, path, error: ErrorFactory = capture_error):
    """``data`` (bytes or str) parsed as JSON, with depth and number ranges checked."""
    try:
        text = bytes(data).decode("utf-8") if not isinstance(data, str) else data
    except UnicodeDecodeError as exc:
        raise error(Path(path), f"not UTF-8 text (byte {exc.start})") from None
    try:
        doc = json.loads(text, parse_constant=_constant, parse_float=_float, parse_int=_int)
    except RecursionError:
        raise error(Path(path), f"JSON nested more than {MAX_DEPTH} deep") from None
    except _BadNumber as exc:
        raise error(Path(path), f"invalid JSON: {exc}") from None
    except json.JSONDecodeError as exc:
        raise error(Path(path), f"invalid JSON at line {exc.lineno} column {exc.colno}: "
                                f"{exc.msg}") from None
    if depth(doc) > MAX_DEPTH:
        raise error(Path(path), f"JSON nested more than {MAX_DEPTH} deep")
    return doc


def try_loads(data):
    """``data`` as a checked JSON value (:func:`loads`), or None when it is not one."""
    try:
        return loads(data, Path(""), _Refused)
    except _Refused:
        return None


class _Refused(Exception):
    def __init__(self, path, reason):
        super().__init__(reason)


class _BadNumber(ValueError):
    pass


def _constant(name: str):
    raise _BadNumber(f"the non-standard constant {name}")


def _float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _BadNumber(f"the number {text[:40]} overflows")
    return value


def _int(text: str) -> int:
    if len(text) > 20:
        raise _BadNumber(f"the integer {text[:40]}… is out of range")
    value = int(text)
    if not INT64[0] <= value <= INT64[1]:
        raise _BadNumber(f"the integer {text} is out of the 64-bit range")
    return value


def depth(doc) -> int:
    """How deep ``doc`` nests (a scalar: 0), without recursion."""
    deepest, stack = 0, [(doc, 1)]
    while stack:
        obj, d = stack.pop()
        if isinstance(obj, dict):
            obj = obj.values()
        elif not isinstance(obj, list):
            continue
        deepest = max(deepest, d)
        if d > MAX_DEPTH:
            return d
        stack.extend((v, d + 1) for v in obj if isinstance(v, (dict, list)))
    return deepest


class InputTooLarge(Exception):
    """Raised by a :class:`BoundedReader` past its limit (the caller names the file)."""


class BoundedReader:
    """A binary stream that raises :class:`InputTooLarge` once more than ``limit`` bytes came."""

    def __init__(self, raw, limit: int, what: str):
        self.raw, self.limit, self.what, self.count = raw, limit, what, 0

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:  # all of it, a piece at a time (never one buffer of the limit)
            parts = []
            while piece := self.read(1 << 20):
                parts.append(piece)
            return b"".join(parts)
        data = self.raw.read(min(n, self.limit + 1 - self.count))
        self.count += len(data)
        if self.count > self.limit:
            raise InputTooLarge(f"{self.what} is larger than {_size(self.limit)}")
        return data

    def close(self) -> None:
        self.raw.close()


def open_text_stream(path, error: ErrorFactory = capture_error) -> BoundedReader:
    """A regular file's bytes, gunzipped when they start with the gzip magic, as a bounded
    stream (:class:`BoundedReader`; errors of the gzip stream surface from its ``read``)."""
    try:
        fh = open_regular(path, error=error)
    except FileNotFoundError as exc:
        raise error(Path(path), f"cannot read: {exc.strerror}") from None
    size = os.fstat(fh.fileno()).st_size
    if fh.read(2) != b"\x1f\x8b":
        fh.seek(0)
        return BoundedReader(fh, max_bytes(), "the file")
    fh.seek(0)
    limit = min(max_bytes(), max(1 << 20, size * gzip_ratio()))
    return BoundedReader(gzip.GzipFile(fileobj=fh, mode="rb"), limit,
                         f"the decompressed data (a gzip bomb? set {ENV_MAX_GZIP_RATIO} or "
                         f"{ENV_MAX_BYTES} to raise the limit)")


def stream_error(exc: BaseException) -> str | None:
    """The one-line reason of an error raised while reading a :func:`open_text_stream`, or None
    when ``exc`` is not one of them."""
    if isinstance(exc, InputTooLarge):
        return str(exc)
    if isinstance(exc, EOFError):
        return "truncated gzip: the compressed data ends before its end marker"
    if isinstance(exc, (gzip.BadGzipFile, zlib.error)):
        return f"corrupt gzip: {exc}"
    if isinstance(exc, OSError):
        return f"cannot read: {exc.strerror or exc}"
    return None


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):g} {unit}"
    return f"{n} bytes"
