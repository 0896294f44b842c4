"""The record region (schema 3, minor 6: ``commprof/format/region.py``) against deaths and damage.

A capture is written through a :class:`Recorder` with 4 KiB chunks (so it spans several, and one
JSON frame needs chunks of its own), then cut, zeroed, torn and corrupted.  Properties: the reader
never raises anything but ``CaptureFormatError``; whatever it returns per record kind is a
subsequence, in order, of the records written (a prefix when the damage is a cut or a zero tail) —
never a corrupted record; a zero tail is where the writer stopped, not damage.
"""
from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commprof.capture.recorder import Recorder
from commprof.errors import CaptureFormatError, TruncatedCaptureError
from commprof.format import region as region_mod
from commprof.format import schema
from commprof.format.reader import CaptureTail, capture_paths, read_capture

CHUNK = 4096
N = 25
ROOT = Path(__file__).resolve().parents[2]


def _record_everything(rec: Recorder) -> None:
    rec.wants_file = True
    rec.json.append({"type": "group", "id": 0, "name": "0", "desc": "default_pg", "size": 2})
    for i in range(N):
        rec.coll.append((i, 1, 0, i, 1, 0, -1, 4, 16, 4, 16, 77, 1000 * i, 1000 * i + 5))
        rec.wait.append((i, 77, 1000 * i + 5, 1000 * i + 9, schema.WAIT_SYNC_API))
        rec.done.append((i, 1000 * i + 9, schema.DONE_WAIT))
        rec.mark.append((schema.MARK_STEP_EXPLICIT, 1000 * i + 10, i + 1))
        if i == N // 2:  # larger than a chunk: it gets two of its own
            rec.json.append({"type": "event", "event": "big", "blob": "x" * (CHUNK + 1000)})
        if i % 10 == 0:
            rec.json.append({"type": "event", "event": "tick", "i": i})


def write_capture(directory: Path, close: bool) -> Path:
    rec = Recorder(str(directory), lambda: ("rank00000.a0.p1.cpf", {"rank": 0}), chunk_bytes=CHUNK)
    _record_everything(rec)
    if close:
        rec.close("exit")
    else:
        rec.region.abandon()  # what a SIGKILL leaves: the mapped pages, a zero tail
    (path,) = capture_paths(directory)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    closed = write_capture(tmp_path_factory.mktemp("closed"), close=True)
    dead = write_capture(tmp_path_factory.mktemp("dead"), close=False)
    return closed, dead


def _rows(cap, kind):
    return [tuple(r) for r in cap.arrays[kind].tolist()]


def assert_subsequence(cap, full, prefix: bool = False) -> None:
    for kind in full.arrays:
        got, want = _rows(cap, kind), _rows(full, kind)
        if prefix:
            assert got == want[:len(got)], kind
            continue
        it = iter(want)
        assert all(any(r == w for w in it) for r in got), kind  # in order, each a real record
    objs = cap.groups + cap.events
    it = iter(full.groups + full.events)
    assert all(any(o == w for w in it) for o in objs)


def test_round_trip_over_several_chunks(files):
    closed, dead = files
    full = read_capture(closed)
    assert full.complete and full.damage is None and full.header["region"]["chunk"] == CHUNK
    assert [len(full.arrays[k]) for k in ("coll", "wait", "done")] == [N, N, N]
    assert _rows(full, "coll")[3] == (3, 1, 0, 3, 1, 0, -1, 4, 16, 4, 16, 77, 3000, 3005)
    assert [e["event"] for e in full.events if e["type"] == "event"] == ["tick", "tick", "big", "tick"]
    assert os.path.getsize(closed) < os.path.getsize(dead)  # a clean close cuts the zero tail
    cap = read_capture(dead)
    assert not cap.complete and cap.damage is None  # the zero tail is where it stopped
    assert_subsequence(cap, full, prefix=True)
    assert len(cap.arrays["coll"]) == N and len(cap.arrays["mark"]) == N  # all but the exit mark


def test_truncated_at_every_byte_offset(files, tmp_path):
    closed, dead = files
    full = read_capture(closed)
    data = dead.read_bytes()
    start = read_capture(dead).header["region"]["start"]
    end = len(data.rstrip(b"\0")) + 64
    path = tmp_path / "cut.cpf"
    for n in range(0, end):
        path.write_bytes(data[:n])
        if n < start - 3000:  # inside the header (its JSON is far shorter than the page)
            try:
                cap = read_capture(path)
            except TruncatedCaptureError:
                continue
        cap = read_capture(path)
        assert_subsequence(cap, full, prefix=True)
        assert cap.damage is None or "torn" in cap.damage


def _frame_starts(path: Path) -> list[int]:
    """Offsets of the frames of a region file (walking its chunks as the writer filled them)."""
    data = path.read_bytes()
    region = read_capture(path).header["region"]
    start, chunk = region["start"], region["chunk"]
    out, pos = [], start
    while pos + 9 <= len(data):
        kind, length, _ = schema.FRAME_HEADER.unpack_from(data, pos)
        boundary = start + ((pos - start) // chunk + 1) * chunk
        if kind == 0:
            pos = boundary
            continue
        out.append(pos)
        pos += 9 + length
    return out


def test_a_zero_tail_from_any_frame_is_a_clean_stop(files, tmp_path):
    closed, dead = files
    full = read_capture(closed)
    data = dead.read_bytes()
    path = tmp_path / "zeroed.cpf"
    for pos in _frame_starts(dead):
        path.write_bytes(data[:pos] + bytes(len(data) - pos))
        cap = read_capture(path)
        assert cap.damage is None, pos
        assert_subsequence(cap, full, prefix=True)


def test_an_uncommitted_record_is_skipped_alone(files, tmp_path):
    """Killed between a record's copy and its commit byte: that record is lost, not the rest."""
    closed, dead = files
    full = read_capture(closed)
    data = bytearray(dead.read_bytes())
    victim = _frame_starts(dead)[7]
    assert data[victim] == schema.KIND_WAIT  # the 8th frame: i = 1's WAIT record
    data[victim] = 0
    path = tmp_path / "torn.cpf"
    path.write_bytes(bytes(data))
    cap = read_capture(path)
    assert "never committed" in cap.damage and str(victim) in cap.damage
    assert_subsequence(cap, full)
    whole = read_capture(dead)
    assert {k: len(a) for k, a in cap.arrays.items()} == {
        k: len(a) - (k == "wait") for k, a in whole.arrays.items()}
    assert 1 not in cap.arrays["wait"]["id"] and cap.events == whole.events


def test_a_lost_page_loses_the_rest_of_its_chunk_only(files, tmp_path):
    """A machine crash that lost one page in the middle: later chunks are still read."""
    closed, dead = files
    full = read_capture(closed)
    data = bytearray(dead.read_bytes())
    start = full.header["region"]["start"]
    lost = start + 2048  # the second half of the first chunk
    data[lost:lost + 1024] = bytes(1024)
    path = tmp_path / "lost.cpf"
    path.write_bytes(bytes(data))
    cap = read_capture(path)
    assert cap.damage is not None
    assert_subsequence(cap, full)
    assert _rows(cap, "coll")[-1] == _rows(full, "coll")[-1]  # the last chunk was read


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(offset=st.integers(0, 4 * CHUNK), flips=st.lists(st.tuples(st.integers(0, 300), st.integers(1, 255)),
                                                        min_size=1, max_size=4))
def test_corrupted_bytes_never_yield_a_corrupted_record(files, tmp_path, offset, flips):
    closed, _ = files
    full = read_capture(closed)
    data = bytearray(closed.read_bytes())
    start = full.header["region"]["start"]
    for delta, xor in flips:
        i = min(start + offset + delta, len(data) - 1)
        data[i] ^= xor
    path = tmp_path / "flipped.cpf"
    path.write_bytes(bytes(data))
    try:
        cap = read_capture(path)
    except CaptureFormatError:
        return
    assert_subsequence(cap, full)


def test_an_invalid_region_in_the_header_is_a_format_error(tmp_path):
    from commprof.format.writer import encode_header
    path = tmp_path / "bad.cpf"
    path.write_bytes(encode_header({"rank": 0, "region": {"start": 3, "chunk": 0}}))
    with pytest.raises(CaptureFormatError, match="record region"):
        read_capture(path)


def test_capture_tail_follows_a_region_as_it_is_written(files, tmp_path):
    """Replays the writer's stores on a preallocated file: each frame copied with kind 0, then
    committed.  The tail never returns an uncommitted record, and in the end returns them all."""
    closed, dead = files
    full = read_capture(dead)
    data = dead.read_bytes()
    starts = _frame_starts(dead)
    path = tmp_path / "live.cpf"
    live = bytearray(data[:starts[0]] + bytes(len(data) - starts[0]))
    path.write_bytes(bytes(live))
    tail = CaptureTail(path)
    got = {k: [] for k in full.arrays}
    objects = []

    def poll():
        arrays, objs = tail.poll()
        for k, a in arrays.items():
            got[k].extend(tuple(r) for r in a.tolist())
        objects.extend(objs)

    for pos in starts:
        length = schema.FRAME_HEADER.unpack_from(data, pos)[1]
        live[pos + 1:pos + 9 + length] = data[pos + 1:pos + 9 + length]
        path.write_bytes(bytes(live))
        poll()
        live[pos] = data[pos]
        path.write_bytes(bytes(live))
        poll()
    assert tail.damage is None
    assert got == {k: _rows(full, k) for k in full.arrays}
    assert objects == full.groups + full.events


def sigkill_after_recording(tmp_path, native_so: str | None = None) -> None:
    """A process (no torch, unless the native writer's module is loaded) appends through a
    Recorder, then SIGKILLs itself; every record it appended is in the file."""
    load = (f"import torch\nfrom commprof.capture import native\nmod = native.load({native_so!r})\n"
            if native_so else "mod = None\n")
    code = (f"import os, signal, sys; sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
            + load +
            "from test_reader_region import _record_everything\n"
            "from commprof.capture.recorder import Recorder\n"
            f"rec = Recorder({str(tmp_path)!r}, lambda: ('rank00003.a0.p1.cpf', {{'rank': 3}}), chunk_bytes={CHUNK})\n"
            "rec.region_native = mod\n"
            "rec.start()\n_record_everything(rec)\nos.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    (path,) = capture_paths(tmp_path)
    cap = read_capture(path)
    assert not cap.complete and cap.damage is None
    assert cap.header.get("region") is not None
    assert [len(cap.arrays[k]) for k in ("coll", "wait", "done", "mark")] == [N, N, N, N]
    assert [e["event"] for e in cap.events] == ["tick", "tick", "big", "tick"]


def test_a_sigkilled_process_keeps_every_record_appended(tmp_path):
    sigkill_after_recording(tmp_path)


def test_a_full_disk_at_growth_stops_recording_and_keeps_the_rest(tmp_path, monkeypatch, capsys):
    calls = {"n": 0}
    original = region_mod.RegionWriter._grow

    def grow(self, nbytes):
        calls["n"] += 1
        if calls["n"] > 1:  # the first chunk is there, the disk is full for the next
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, nbytes)

    monkeypatch.setattr(region_mod.RegionWriter, "_grow", grow)
    rec = Recorder(str(tmp_path), lambda: ("rank00000.a0.p1.cpf", {"rank": 0}), chunk_bytes=CHUNK)
    _record_everything(rec)  # never raises
    assert not rec.enabled
    rec.close("exit")
    assert "commprof: stopped recording in pid" in capsys.readouterr().err
    cap = read_capture(capture_paths(tmp_path)[0])
    assert not cap.complete and cap.damage is None and 0 < len(cap.arrays["coll"]) < N
    assert np.array_equal(cap.arrays["coll"]["id"], np.arange(len(cap.arrays["coll"])))
