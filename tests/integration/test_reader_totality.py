"""Every reader is total (issue 26 item 8): FIFOs, devices, symlinks out of the run directory,
deep JSON, huge numbers, wrong header types, impossible records and a gzip bomb each end in one
``commprof: error: FILE: what is wrong`` line and exit 2 (or, where the rest of the data is
good, a report with a note), within :data:`reader_cases.CASE_SECONDS` seconds per case and a
:data:`reader_cases.MEMORY_LIMIT` address-space limit, never a traceback, a hang or a
MemoryError.  The cases are built and run by ``tests/reader_cases.py`` in one child process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE))
import reader_cases  # noqa: E402

ROOT = HERE.parent


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, str(HERE / "reader_cases.py"), str(root)], env=env,
                          capture_output=True, text=True, timeout=240)
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert rows, proc.stderr[-3000:]
    return {r["name"]: r for r in rows}


def test_every_case_ran(results):
    # a case that killed the child (a hang past the alarm, a crash) leaves the ones after it out
    assert len(results) >= 52, sorted(results)


def _lines(r):
    return [line for line in r["stderr"].splitlines() if line.strip()]


def test_refused_inputs_are_one_line_and_exit_2(results):
    bad = {}
    for name, r in results.items():
        if r["how"] != "refused":
            continue
        lines = _lines(r)
        if not (r["escaped"] is None and r["code"] == 2 and len(lines) == 1
                and lines[0].startswith("commprof: error: ") and "Traceback" not in r["stderr"]):
            bad[name] = r
    assert not bad, bad


def test_the_refusal_names_the_file(results):
    for name, r in results.items():
        if r["how"] == "refused":
            line = _lines(r)[0]
            assert ": " in line[len("commprof: error: "):] and "/" in line, (name, line)


def test_inputs_with_good_data_beside_the_bad_are_read_without_a_traceback(results):
    for name, r in results.items():
        if r["how"] == "read":
            assert r["escaped"] is None and r["code"] in (0, 2), (name, r)
            assert "Traceback" not in r["stderr"], (name, r["stderr"])
            if r["code"] == 2:
                assert len(_lines(r)) == 1 and _lines(r)[0].startswith("commprof: error: "), r


def test_impossible_records_are_dropped_with_a_note(results):
    for name in ("record_op_60000", "record_seq_negative", "record_dtype_250"):
        assert results[name]["code"] == 0 and results[name]["dropped_note"], results[name]
    # a possible record whose sequence number no run can have (2**40 among a few): refused
    r = results["record_seq_2_40"]
    assert r["code"] == 2 and "sequence numbers" in r["stderr"] and r["seconds"] < 10, r


def test_the_base_run_is_reported_whole(results):
    r = results["base_copy"]
    assert r["code"] == 0 and not r["dropped_note"] and '"ops": []' not in r["stdout_head"], r


@pytest.mark.parametrize("name", ["manifest_fifo", "hang_fifo", "capture_fifo", "saved_fifo",
                                  "trace_fifo", "manifest_dev_zero", "hang_dev_zero",
                                  "trace_dev_zero", "manifest_urandom", "capture_dev_zero",
                                  "rank-7.json.gz"])
def test_no_case_hangs_or_reads_unbounded(results, name):
    r = results[name]
    assert r["escaped"] is None and r["seconds"] < reader_cases.CASE_SECONDS, r
    assert r["code"] == 2, r


def test_a_summary_or_sampler_that_is_not_a_file_is_left_out_with_a_note(results):
    for name in ("sampler_fifo", "summary_fifo", "sampler_urandom", "summary_dev_zero"):
        assert results[name]["code"] == 0, results[name]


def test_a_resealed_summary_edit_falls_back_to_the_captures(results):
    """CRC-valid edits of a node summary (a list for a host name, a number for a frame, a string
    for a count) are caught by the decoder's shape check: a note, and the captures are read."""
    for name in ("summary_host_list", "summary_ops_number", "summary_backends_int",
                 "summary_rank_text"):
        r = results[name]
        assert r["code"] == 0 and r["escaped"] is None and r["summary_note"], r
