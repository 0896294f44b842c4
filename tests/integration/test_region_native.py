"""The record region written by the native kernel's C++ writer (capture/native/region_writer.cpp,
used when the native path records) against the Python writer (format/region.py).

The same records through a :class:`Recorder` give the same file, byte for byte, whichever writer
wrote it (framing, checksums, chunking, padding, trailer); a process SIGKILLed after appending
keeps every record; a full disk at a chunk's growth stops recording and keeps the rest.  Skipped
where the native module cannot be built (failed in CI: COMMPROF_TEST_REQUIRE_NATIVE=1).
"""
from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest

from commprof.capture.recorder import Recorder
from commprof.format.reader import capture_paths, read_capture
from test_capture_coverage import _NATIVE, require_native
from test_reader_region import CHUNK, N, _record_everything, sigkill_after_recording



@pytest.fixture(scope="module")
def native():
    require_native()
    import torch  # noqa: F401 - the module links against it

    from commprof.capture import native as native_mod
    return native_mod.load(_NATIVE["so"])


@pytest.fixture
def recorder(native, tmp_path):
    def make(directory: Path, use_native: bool) -> Recorder:
        rec = Recorder(str(directory), lambda: ("rank00000.a0.p1.cpf", {"rank": 0}), chunk_bytes=CHUNK,
                       clock=lambda: 123456789)  # the exit mark's time: the same in both files
        rec.region_native = native if use_native else None
        return rec

    yield make
    assert not native.region_is_open(), "a test left the native region open"


@pytest.mark.parametrize("close", [True, False], ids=["closed", "abandoned"])
def test_same_records_same_file_byte_for_byte(recorder, tmp_path, close):
    files = []
    for use_native in (False, True):
        rec = recorder(tmp_path / str(use_native), use_native)
        _record_everything(rec)
        assert (rec.region.native is not None) == use_native
        if close:
            rec.close("exit")
        else:
            rec.region.abandon()  # what a SIGKILL leaves: the mapped pages, a zero tail
        (path,) = capture_paths(tmp_path / str(use_native))
        files.append(path.read_bytes())
    assert len(files[1]) > 3 * CHUNK  # several chunks, one JSON frame larger than a chunk
    assert files[0] == files[1]
    cap = read_capture(capture_paths(tmp_path / "True")[0])
    assert cap.complete == close and cap.damage is None
    assert [len(cap.arrays[k]) for k in ("coll", "wait", "done")] == [N, N, N]


def test_a_sigkilled_process_keeps_every_record_appended(native, tmp_path):
    sigkill_after_recording(tmp_path, native_so=_NATIVE["so"])


def test_a_full_disk_at_growth_stops_recording_and_keeps_the_rest(native, recorder, tmp_path, capsys):
    rec = recorder(tmp_path, True)
    native.region_fail_after(1, errno.ENOSPC)  # the first chunk is there, the disk is full for the next
    try:
        _record_everything(rec)  # never raises
    finally:
        native.region_fail_after(-1, 0)
    assert not rec.enabled and not native.region_is_open()
    rec.close("exit")
    assert "commprof: stopped recording in pid" in capsys.readouterr().err
    cap = read_capture(capture_paths(tmp_path)[0])
    assert not cap.complete and cap.damage is None and 0 < len(cap.arrays["coll"]) < N
    assert np.array_equal(cap.arrays["coll"]["id"], np.arange(len(cap.arrays["coll"])))
