"""Unit tests of the readers' bounds (issue 26 items 8 and 9): the streaming trace reader gives
the document's other keys exactly as ``json.loads`` does, wherever they are; the safe reader
refuses what is not a regular file; a full disk is named, not reported as deaths."""
from __future__ import annotations

import gzip
import json
import os

import pytest

from commprof.analysis.host.load import open_run
from commprof.errors import CaptureFormatError, TraceFileError
from commprof.format import layout, safe_io, trace_stream
from synthetic import capture_file, periodic_rank, write_run

EV = [{"ph": "X", "cat": "kernel", "name": "k]", "ts": 1.5, "dur": 2.0, "pid": 0, "tid": 7,
       "args": {"grid": [1, 2, 3]}}, {"ph": "i", "name": "a ] , \"x\": 1}"}]


@pytest.mark.parametrize("doc", [
    {"traceEvents": EV},
    {"traceEvents": EV, "baseTimeNanoseconds": 17, "traceName": "t ] }"},
    {"deviceProperties": [{"id": 0}], "distributedInfo": {"rank": 2}, "traceEvents": EV,
     "displayTimeUnit": "ms", "baseTimeNanoseconds": 17},
    {"traceEvents": [], "after": [[1], {"b": "]"}]},
    {"a": "traceEvents", "traceEvents": EV, "z": {"traceEvents": 1}},
])
@pytest.mark.parametrize("gz", [False, True])
def test_the_stream_gives_what_json_loads_gives(tmp_path, doc, gz):
    text = json.dumps(doc).encode()
    path = tmp_path / ("t.json.gz" if gz else "t.json")
    path.write_bytes(gzip.compress(text) if gz else text)
    ts = trace_stream.open_trace(path, TraceFileError)
    events = list(ts.events)
    assert events == doc["traceEvents"]
    assert ts.meta == {k: v for k, v in doc.items() if k != "traceEvents"}
    assert ts.json_bytes == len(text)


def test_keys_after_a_long_tail_are_read_the_slow_way(tmp_path):
    tail = "x" * (trace_stream._TAIL_BYTES + 10)
    doc = {"traceEvents": EV, "long": tail, "baseTimeNanoseconds": 5}
    path = tmp_path / "t.json"
    path.write_text(json.dumps(doc))
    ts = trace_stream.open_trace(path, TraceFileError)
    list(ts.events)
    assert ts.meta == {"long": tail, "baseTimeNanoseconds": 5}


def test_not_a_regular_file_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "f"
    os.mkfifo(fifo)
    with pytest.raises(CaptureFormatError, match="FIFO"):
        safe_io.read_bytes(fifo)
    with pytest.raises(CaptureFormatError, match="character device"):
        safe_io.read_bytes("/dev/zero")
    link = tmp_path / "run" / "manifest.json"
    link.parent.mkdir()
    link.symlink_to("/etc/hostname")
    with pytest.raises(CaptureFormatError, match="symlink out of"):
        safe_io.read_bytes(link, within=link.parent)


def test_the_read_limit_is_stated_and_can_be_raised(tmp_path, monkeypatch):
    p = tmp_path / "x"
    p.write_bytes(b"0123456789")
    monkeypatch.setenv(safe_io.ENV_MAX_BYTES, "5")
    with pytest.raises(CaptureFormatError, match="COMMPROF_MAX_INPUT_BYTES"):
        safe_io.read_bytes(p)
    monkeypatch.setenv(safe_io.ENV_MAX_BYTES, "10")
    assert safe_io.read_bytes(p) == b"0123456789"


@pytest.mark.parametrize("text, words", [
    ("[" * 150 + "]" * 150, "nested more than 100"), ('{"a": NaN}', "NaN"),
    ('{"a": -1e400}', "overflows"), ('{"a": 9223372036854775808}', "64-bit"),
])
def test_json_depth_and_numbers_are_checked(text, words):
    with pytest.raises(CaptureFormatError, match=words):
        safe_io.loads(text.encode(), "f")
    assert safe_io.loads(b'{"a": [9223372036854775807, -1.5e300]}', "f") == {
        "a": [9223372036854775807, -1.5e300]}


def test_a_full_disk_is_named_not_an_unfinished_run(tmp_path):
    run = write_run(tmp_path / "run", [periodic_rank(0), periodic_rank(1)],
                    manifest={"status": "running"})
    plain = open_run(run).notes
    assert any("has not finished" in n for n in plain)
    for rank in (0, 1):
        layout.stopped_marker(capture_file(run, rank), "ENOSPC").touch()
    notes = open_run(run).notes
    assert not any("has not finished" in n for n in notes)
    assert any("storage filled up" in n and "ENOSPC" in n for n in notes), notes
