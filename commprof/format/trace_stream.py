"""Streaming a PyTorch-profiler (Kineto) trace: its ``traceEvents`` one dict at a time.

:func:`open_trace` returns a :class:`TraceStream`: ``events`` yields each element of the top-level
``traceEvents`` array as the dict ``json.loads`` would give (integers ``int``, other numbers
``float``), parsed incrementally by ijson's C backend (yajl2_c; ijson falls back to its pure-Python
backend where the extension is missing, and this module to ``json.load`` where ijson is), so
memory grows with what the caller keeps, not with the file.  The document's other top-level keys
(``baseTimeNanoseconds``, ``distributedInfo``, ``deviceProperties``, ...) are in ``meta`` once
``events`` is exhausted: those before ``traceEvents`` come from a short first pass over the file's
head, those after it (Kineto writes ``baseTimeNanoseconds`` last) from the last bytes read.

Reading goes through :mod:`commprof.format.safe_io`: regular files only, gzip recognised by its
magic, decompressed size bounded (``COMMPROF_MAX_GZIP_RATIO``, ``COMMPROF_MAX_INPUT_BYTES``).
Anything unusable raises ``error(path, reason)`` with a one-line reason.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable, Iterator

from commprof.format import safe_io

try:  # ijson's C backend when built, else its own pure-Python one
    import ijson
except ImportError:  # pragma: no cover - ijson is a dependency; json.load is the last resort
    ijson = None

_TAIL_BYTES = 1 << 20  # the last bytes kept to read the keys after traceEvents
_STRING_CACHE = 1 << 16
_FINITE = (-9.2e15, 9.2e15)  # µs: int64 ns after scaling (ts/dur outside it read as absent)  # distinct event names/categories shared (not one copy per event)


class TraceStream:
    """One trace file being read: iterate :attr:`events`, then read :attr:`meta` and
    :attr:`json_bytes` (the size of the uncompressed JSON)."""

    def __init__(self, path: Path, error: Callable[[Path, str], Exception], ids_as_text=False):
        self.path, self.error, self.ids_as_text = path, error, ids_as_text
        self.meta: dict = {}
        self.json_bytes = 0
        self.events = self._events()

    def _events(self) -> Iterator[dict]:
        if ijson is None:
            yield from self._whole()
            return
        self.meta = self._head()
        stream = _Tail(safe_io.open_text_stream(self.path, self.error))
        names: dict = {}
        ids: dict = {}
        try:
            for ev in ijson.items(stream, "traceEvents.item", use_float=True):
                if type(ev) is dict:
                    for key in ("name", "cat"):
                        v = ev.get(key)
                        if type(v) is str and len(names) < _STRING_CACHE:
                            ev[key] = names.setdefault(v, v)
                    if self.ids_as_text:
                        for key in ("pid", "tid"):
                            v = ev.get(key)
                            if type(v) is int and len(ids) < _STRING_CACHE:
                                text = ids.get(v)
                                ev[key] = text if text is not None else ids.setdefault(v, str(v))
                    for key in ("ts", "dur"):  # a time no clock can hold reads as absent
                        v = ev.get(key)
                        if type(v) in (int, float) and not _FINITE[0] < v < _FINITE[1]:
                            ev[key] = None
                yield ev
        except Exception as exc:  # noqa: BLE001 - ijson's and gzip's errors become one line
            raise self.error(self.path, self._reason(exc)) from None
        finally:
            stream.close()
        self.json_bytes = stream.count
        self.meta.update(self._tail_meta(stream.tail()))

    def _head(self) -> dict:
        """The top-level keys before ``traceEvents`` (checks that it is a list)."""
        meta: dict = {}
        stream = safe_io.open_text_stream(self.path, self.error)
        try:
            events = ijson.parse(stream, use_float=True)
            first = next(events, None)
            if first is None or first[1] != "start_map":
                raise self.error(self.path, "no traceEvents list: not a PyTorch-profiler (Kineto) "
                                            "trace (not a JSON object)")
            for prefix, event, value in events:
                if prefix == "" and event == "map_key":
                    if value == "traceEvents":
                        if next(events, (None, None, None))[1] != "start_array":
                            raise self.error(self.path, "no traceEvents list: not a "
                                                        "PyTorch-profiler (Kineto) trace")
                        return meta
                    meta[value] = _value(events)
            raise self.error(self.path, "no traceEvents list: not a PyTorch-profiler (Kineto) trace")
        except Exception as exc:  # noqa: BLE001 - ijson's and gzip's errors become one line
            if isinstance(exc, type(self.error(self.path, ""))):
                raise
            raise self.error(self.path, self._reason(exc)) from None
        finally:
            stream.close()

    def _tail_meta(self, tail: bytes) -> dict:
        """The top-level keys after the ``traceEvents`` array, from the document's last bytes:
        the leftmost ``]`` after which the rest reads as the members and end of an object
        without a ``traceEvents`` key (a ``]`` inside an event leaves its ``}`` and the array's
        ``]`` unmatched, one inside a later key's value reads as a part of the keys)."""
        text = tail.decode("utf-8", "replace")
        for m in _ARRAY_END.finditer(text):
            doc = _members(text, m.end())
            if doc is not None and "traceEvents" not in doc:
                if safe_io.depth(doc) > safe_io.MAX_DEPTH:
                    raise self.error(self.path, f"JSON nested more than {safe_io.MAX_DEPTH} deep")
                return doc
        if len(tail) >= _TAIL_BYTES:  # longer than kept: read them the slow way
            return self._meta_by_parsing()
        return {}

    def _meta_by_parsing(self) -> dict:
        """Every top-level key but ``traceEvents``, by one more (slower) pass."""
        meta: dict = {}
        stream = safe_io.open_text_stream(self.path, self.error)
        try:
            events = ijson.parse(stream, use_float=True)
            for prefix, event, value in events:
                if prefix == "" and event == "map_key" and value != "traceEvents":
                    meta[value] = _value(events)
        finally:
            stream.close()
        return meta

    def _whole(self) -> Iterator[dict]:
        """Without ijson: the whole document at once (memory grows with the file)."""
        stream = safe_io.open_text_stream(self.path, self.error)
        try:
            raw = stream.read()
        except Exception as exc:  # noqa: BLE001 - the stream's errors become one line
            raise self.error(self.path, self._reason(exc)) from None
        finally:
            stream.close()
        doc = safe_io.loads(raw, self.path, self.error)
        self.json_bytes = len(raw)
        del raw
        events = doc.get("traceEvents") if isinstance(doc, dict) else None
        if not isinstance(events, list):
            raise self.error(self.path, "no traceEvents list: not a PyTorch-profiler (Kineto) trace")
        self.meta = {k: v for k, v in doc.items() if k != "traceEvents"}
        yield from events

    def _reason(self, exc: BaseException) -> str:
        why = safe_io.stream_error(exc)
        if why is not None:
            return why
        if ijson is not None and isinstance(exc, ijson.IncompleteJSONError) and "premature" in str(exc).lower():
            return "not JSON: the file ends early (truncated?)"
        if ijson is not None and isinstance(exc, (ijson.JSONError, ValueError)):
            return f"not JSON: {' '.join(str(exc).split())[:200]}"
        if isinstance(exc, (RecursionError, MemoryError, OverflowError)):
            return f"unreadable JSON ({type(exc).__name__})"
        raise exc


_ARRAY_END = re.compile(r"\]\s*(?:,\s*(?=\")|(?=\}))")
_SPACE = re.compile(r"\s*")
_DECODER = json.JSONDecoder(parse_constant=safe_io._constant, parse_float=safe_io._float,
                            parse_int=safe_io._int)


def _members(text: str, pos: int) -> dict | None:
    """``"key": value, ...}`` from ``pos`` to the end of ``text`` as a dict, or None."""
    out: dict = {}
    try:
        while text[pos] != "}":
            key, pos = _DECODER.raw_decode(text, pos)
            pos = _SPACE.match(text, pos).end()
            if not isinstance(key, str) or text[pos] != ":":
                return None
            out[key], pos = _DECODER.raw_decode(text, _SPACE.match(text, pos + 1).end())
            pos = _SPACE.match(text, pos).end()
            if text[pos] == ",":
                pos = _SPACE.match(text, pos + 1).end()
            elif text[pos] != "}":
                return None
    except (IndexError, ValueError, RecursionError):
        return None
    return out if not text[pos + 1:].strip() else None


def _value(events):
    """The value that starts at the next parse event (as ``json.loads`` would build it)."""
    builder = ijson.ObjectBuilder()
    depth = 0
    for _, event, value in events:
        builder.event(event, value)
        if event in ("start_map", "start_array"):
            depth += 1
        elif event in ("end_map", "end_array"):
            depth -= 1
        if depth == 0:
            return builder.value
    return builder.value


class _Tail:
    """A stream that keeps its last :data:`_TAIL_BYTES` bytes read."""

    def __init__(self, raw: safe_io.BoundedReader):
        self.raw, self.parts, self.kept = raw, [], 0

    @property
    def count(self) -> int:
        return self.raw.count

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        if data:
            self.parts.append(data)
            self.kept += len(data)
            while len(self.parts) > 1 and self.kept - len(self.parts[0]) >= _TAIL_BYTES:
                self.kept -= len(self.parts.pop(0))
        return data

    def tail(self) -> bytes:
        return b"".join(self.parts)[-_TAIL_BYTES:] if self.kept > _TAIL_BYTES else b"".join(self.parts)

    def close(self) -> None:
        self.raw.close()


def open_trace(path, error: Callable[[Path, str], Exception], ids_as_text: bool = False) -> TraceStream:
    """A :class:`TraceStream` over ``path`` (nothing is read until ``events`` is iterated).

    ``ids_as_text``: integer ``pid``/``tid`` come as their ``str()``, one shared string per
    value (for readers that keep them as text: a string per kept row costs ~50 bytes)."""
    return TraceStream(Path(path), error, ids_as_text)


def raw_document(path, error: Callable[[Path, str], Exception]) -> tuple[dict, list]:
    """``(meta, traceEvents)`` of a trace as they are (for merging traces into one)."""
    ts = open_trace(path, error)
    events = list(ts.events)
    return ts.meta, events


__all__ = ["TraceStream", "open_trace", "raw_document", "json"]
