"""The capture reader against damaged input: every truncation, zero tails, random bytes, bit flips.

``tests/data/real_rank0.cpf`` is rank 0's capture of a real two-rank gloo run of
``tests/data/real_capture_job.py`` (DDP + broadcast + all_reduce + send/recv, flushed every
50 ms so it holds many frames); ``real_rank0.v1.cpf`` is the same job captured by a format-v1
commprof.  Property: whatever the damage, the reader either raises a ``CaptureFormatError``
naming the file, or returns records that are exactly a prefix of the undamaged ones — never a
corrupted record, never another exception.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commprof.errors import CaptureFormatError, TruncatedCaptureError
from commprof.format import schema
from commprof.format.reader import CaptureTail, read_capture
from commprof.format.writer import CaptureWriter
from synthetic import periodic_rank, rank_frames, write_run

DATA = Path(__file__).parents[1] / "data"
REAL = DATA / "real_rank0.cpf"
REAL_V1 = DATA / "real_rank0.v1.cpf"
FULL = read_capture(REAL)
BYTES = REAL.read_bytes()
HEADER_END = schema.HEADER_PREFIX.size + schema.HEADER_PREFIX.unpack_from(BYTES)[2] + 4


def frame_ends(data: bytes, pos: int) -> list[int]:
    ends = []
    while pos < len(data):
        _, length, _ = schema.FRAME_HEADER.unpack_from(data, pos)
        pos += schema.FRAME_HEADER.size + length
        ends.append(pos)
    return ends


ENDS = frame_ends(BYTES, HEADER_END)


def assert_prefix(cap, full=FULL) -> None:
    """Every record kind read is a prefix of the undamaged file's records of that kind."""
    for kind, arr in full.arrays.items():
        got = cap.arrays[kind]
        assert len(got) <= len(arr), kind
        assert np.array_equal(got, arr[:len(got)]), kind
    assert cap.groups == full.groups[:len(cap.groups)]


def test_the_real_capture_is_whole():
    assert FULL.damage is None and FULL.complete
    assert len(ENDS) > 10 and ENDS[-1] == len(BYTES)
    rank_kinds = ("coll", "done", "wait", "mark", "span")  # what a rank's capture holds
    assert {k: len(FULL.arrays[k]) > 0 for k in rank_kinds} == dict.fromkeys(rank_kinds, True)


def test_a_version_1_real_capture_is_still_read():
    old = read_capture(REAL_V1)
    assert old.damage is None and old.complete
    assert {k: len(v) for k, v in old.arrays.items()} == {k: len(v) for k, v in FULL.arrays.items()}


def test_truncated_at_every_byte_offset(tmp_path):
    path = tmp_path / "cut.cpf"
    for n in range(len(BYTES)):
        path.write_bytes(BYTES[:n])
        if n < HEADER_END:
            with pytest.raises(TruncatedCaptureError) as info:
                read_capture(path)
            assert str(path) in str(info.value)
            continue
        cap = read_capture(path)
        assert_prefix(cap)
        at_boundary = n == HEADER_END or n in ENDS
        assert (cap.damage is None) == at_boundary, (n, cap.damage)
        if not at_boundary:
            assert "torn" in cap.damage
        # Exactly the frames that fit are read: records of every whole frame, none of the torn one.
        whole = sum(1 for e in ENDS if e <= n)
        cap_whole = read_capture_bytes(tmp_path, BYTES[:ENDS[whole - 1]] if whole else BYTES[:HEADER_END])
        for kind in FULL.arrays:
            assert len(cap.arrays[kind]) == len(cap_whole.arrays[kind])


def read_capture_bytes(tmp_path, data: bytes):
    p = tmp_path / "exact.cpf"
    p.write_bytes(data)
    return read_capture(p)


@pytest.mark.parametrize("zeros", [1, 9, 4096, 100_000])
def test_zero_filled_tail(tmp_path, zeros):
    path = tmp_path / "z.cpf"
    path.write_bytes(BYTES + b"\0" * zeros)
    cap = read_capture(path)
    assert_prefix(cap)
    assert all(len(cap.arrays[k]) == len(FULL.arrays[k]) for k in FULL.arrays)
    assert ("zero-filled" in cap.damage) if zeros >= schema.FRAME_HEADER.size else ("torn" in cap.damage)


def test_zeroed_tail_over_the_last_frames(tmp_path):
    """A crash that left the last frames' pages as zeros: the frames before are kept."""
    cut = ENDS[-4]
    path = tmp_path / "z.cpf"
    path.write_bytes(BYTES[:cut] + b"\0" * (len(BYTES) - cut))
    cap = read_capture(path)
    assert_prefix(cap)
    assert cap.damage.startswith(f"zero-filled from byte {cut}")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=600))
def test_arbitrary_bytes_never_crash_the_reader(tmp_path, data):
    for blob in (data, schema.MAGIC + data, BYTES[:HEADER_END] + data):
        path = tmp_path / "fuzz.cpf"
        path.write_bytes(blob)
        try:
            cap = read_capture(path)
        except CaptureFormatError as exc:
            assert str(path) in str(exc)
        else:
            assert cap.header is not None
        tail = CaptureTail(path)
        tail.poll()  # never raises either


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(offset=st.integers(HEADER_END, len(BYTES) - 1), flips=st.binary(min_size=1, max_size=4))
def test_corrupted_bytes_never_yield_a_corrupted_record(tmp_path, offset, flips):
    """Up to 4 bytes XOR-ed anywhere after the header: CRC32 (over kind, length and payload)
    catches every such burst, so what is read is a prefix of the real records."""
    data = bytearray(BYTES)
    for i, b in enumerate(flips):
        if offset + i < len(data):
            data[offset + i] ^= b or 0x01
    path = tmp_path / "flip.cpf"
    path.write_bytes(bytes(data))
    cap = read_capture(path)
    assert_prefix(cap)
    assert cap.damage is not None


def test_old_minor_header_with_only_a_rank(tmp_path):
    """A file from an older minor of the same major (fewer header keys) is still reported."""
    run = write_run(tmp_path / "run", [periodic_rank(0), periodic_rank(1)])
    name, _, frames = rank_frames(periodic_rank(1), 2)
    path = run / "ranks" / name
    path.unlink()
    writer = CaptureWriter(str(path), {"rank": 1})
    for frame in frames:
        writer.write(frame)
    writer.close({"reason": "exit"})
    proc = subprocess.run([sys.executable, "-m", "commprof", "report", str(run), "-f", "json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert '"ranks_captured": 2' in proc.stdout


def test_a_header_without_rank_is_a_format_error(tmp_path):
    path = tmp_path / "norank.cpf"
    CaptureWriter(str(path), {"host": "x"}).close({"reason": "exit"})
    with pytest.raises(CaptureFormatError, match="no integer 'rank'"):
        read_capture(path)


def test_real_capture_reports_through_the_cli(tmp_path):
    """The real capture file as a run directory of its own: partial (one rank of two), with a note."""
    run = write_run(tmp_path / "run", [])
    shutil.copy(REAL, run / "ranks" / REAL.name)
    proc = subprocess.run([sys.executable, "-m", "commprof", "report", str(run)],
                          capture_output=True, text=True, timeout=120, env={"COLUMNS": "200", "PATH": ""})
    assert proc.returncode == 0, proc.stderr
    assert "no capture from rank(s) 1 of world size 2" in " ".join(proc.stdout.split())


def kind_flips_read_silently(tmp_path, blob: bytes) -> list[tuple[int, int]]:
    """(frame start, new kind) of every kind-byte change that the reader does not notice."""
    full = read_capture(_write(tmp_path / "orig.cpf", blob))
    hend = schema.HEADER_PREFIX.size + schema.HEADER_PREFIX.unpack_from(blob)[2] + 4
    ends = frame_ends(blob, hend)
    silent = []
    for start in [hend] + ends[:-1]:
        for kind in range(8):
            if kind == blob[start]:
                continue
            data = bytearray(blob)
            data[start] = kind
            cap = read_capture(_write(tmp_path / "kind.cpf", bytes(data)))
            if cap.damage is None:
                silent.append((start, kind))
            else:
                assert_prefix(cap, full)
    return silent


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_a_changed_kind_byte_is_caught_in_every_frame(tmp_path):
    """Exhaustive over frames and kinds (format v2: the CRC covers kind and length)."""
    assert kind_flips_read_silently(tmp_path, BYTES) == []


def test_version_1_could_not_catch_a_changed_kind_byte(tmp_path):
    """Why v2 exists: v1's CRC covered the payload only, so a DONE frame whose kind byte turned
    into MARK (both 17-byte records) read as marks.  Also shows the test above can fail."""
    assert kind_flips_read_silently(tmp_path, REAL_V1.read_bytes())
