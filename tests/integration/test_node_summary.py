"""Node summaries (analysis/scale/node_summary.py): `commprof run` reduces the node's captures at job
end, and the report takes those reductions instead of reading the captures again — with the same
report; a capture changed since, a damaged summary or one from other analysis code is read from
the capture instead, with a note."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from commprof.analysis.scale import node_summary, reduce as reduce_mod
from commprof.analysis.outcome import summary as summary_mod
from commprof.format import layout
from commprof.analysis.outcome.assemble import assemble
from demo_run import demo_run, end_of_last_record
from runner import commprof

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return demo_run(tmp_path_factory)


def _doc(run, *args) -> dict:
    proc = commprof("report", str(run), "--format", "json", *args, timeout=240, process=True)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _copy(run_dir, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(run_dir, out)  # copy2: the captures keep their size and modification time
    return out


def test_the_run_writes_one_summary_covering_every_capture(run_dir):
    (summary,) = layout.summary_paths(run_dir)
    meta, results = node_summary.summary_file.decode(summary.read_bytes(), summary)
    names = sorted(p.name for p in layout.capture_paths(run_dir))
    assert sorted(f["name"] for f in meta["files"]) == names
    assert sorted(r.rank for r in results) == [0, 1]
    assert meta["reduction"] == node_summary.reduction_id()


def test_the_report_from_summaries_equals_the_report_from_captures(run_dir):
    assert _doc(run_dir) == _doc(run_dir, "--from-captures")


def test_no_capture_is_reduced_when_summaries_cover_them(run_dir, tmp_path, monkeypatch):
    run = _copy(run_dir, tmp_path)
    expected = assemble(summary_mod.summarize(run, node_summaries=False)).to_dict()

    def refuse(path):
        raise AssertionError(f"{path} was reduced although a summary stands for it")
    monkeypatch.setattr(reduce_mod, "reduce_file", refuse)
    got = assemble(summary_mod.summarize(run, jobs=1)).to_dict()
    assert json.dumps(got, sort_keys=True, default=str) == json.dumps(expected, sort_keys=True, default=str)


def test_a_capture_changed_after_the_summary_is_read_again(run_dir, tmp_path):
    run = _copy(run_dir, tmp_path)
    capture = sorted(layout.capture_paths(run))[1]
    capture.write_bytes(capture.read_bytes()[:end_of_last_record(capture) - 1])
    doc = _doc(run)
    assert any("changed after the summary was written" in n for n in doc["notes"]), doc["notes"]
    fresh = _doc(run, "--from-captures")
    assert doc["ranks"] == fresh["ranks"] and doc["kpis"] == fresh["kpis"]
    assert doc["ranks"] != _doc(run_dir)["ranks"]  # the torn capture's numbers, not the summary's


def test_a_damaged_summary_is_a_note_and_the_captures_are_read(run_dir, tmp_path):
    run = _copy(run_dir, tmp_path)
    (summary,) = layout.summary_paths(run)
    data = bytearray(summary.read_bytes())
    data[len(data) // 2] ^= 0xFF
    summary.write_bytes(bytes(data))
    doc = _doc(run)
    assert any(summary.name in n and "captures were read instead" in n for n in doc["notes"]), doc["notes"]
    fresh = _doc(run, "--from-captures")
    assert doc["ranks"] == fresh["ranks"] and doc["kpis"] == fresh["kpis"]


def test_a_summary_of_other_analysis_code_is_not_used(run_dir, tmp_path, monkeypatch):
    run = _copy(run_dir, tmp_path)
    monkeypatch.setattr(node_summary, "reduction_id", lambda: "another-version")
    s = summary_mod.summarize(run, jobs=1)
    assert any("another version of commprof's analysis" in n.text for n in s.notes)


def test_a_forged_summary_is_not_trusted(run_dir, tmp_path):
    """issue 26 item 6: a .cpsum re-encoded with 999,999 calls per op (the captures' size and time
    unchanged) by someone without the run's key is refused; the report is the captures'."""
    import os

    run = _copy(run_dir, tmp_path)
    (summary,) = layout.summary_paths(run)
    meta, results = node_summary.summary_file.decode(summary.read_bytes(), summary)
    for r in results:
        assert "count" in r.part.ops.columns and len(r.part.ops)
        r.part.ops["count"] = 999_999
        r.part.collectives = 999_999 * len(r.part.ops)
    fresh = _doc(run, "--from-captures")
    for key in (None, os.urandom(node_summary.KEY_BYTES)):  # no MAC; a MAC under a guessed key
        summary.write_bytes(node_summary.summary_file.encode(results, meta, key=key))
        doc = _doc(run)
        assert any(summary.name in n and "not authenticated" in n for n in doc["notes"]), doc["notes"]
        assert doc["ops"] == fresh["ops"] and doc["ranks"] == fresh["ranks"]
        assert all(op["count"] < 999_999 for op in doc["ops"])


def test_a_capture_edited_with_its_size_and_time_kept_is_read_again(run_dir, tmp_path):
    import os

    run = _copy(run_dir, tmp_path)
    capture = sorted(layout.capture_paths(run))[1]
    st = capture.stat()
    data = bytearray(capture.read_bytes())
    data[end_of_last_record(capture) - 2] ^= 0xFF  # inside the last collective record
    capture.write_bytes(bytes(data))
    os.utime(capture, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert capture.stat().st_size == st.st_size and capture.stat().st_mtime_ns == st.st_mtime_ns
    doc = _doc(run)
    assert any("changed after the summary was written" in n for n in doc["notes"]), doc["notes"]
    fresh = _doc(run, "--from-captures")
    assert doc["ranks"] == fresh["ranks"] and doc["kpis"] == fresh["kpis"]


@pytest.mark.parametrize("dir_mode, key_mode", [(0o700, 0o600), (0o750, 0o640)])
def test_the_summary_key_is_private_and_made_once(tmp_path, dir_mode, key_mode):
    # a run's directories are 0700 (0750 with --share-group); the key follows its directory
    (tmp_path / layout.SUMMARIES).mkdir()
    os.chmod(tmp_path / layout.SUMMARIES, dir_mode)
    first = node_summary.summary_key(tmp_path, create=True)
    assert first is not None and len(first) == node_summary.KEY_BYTES
    assert node_summary.summary_key(tmp_path, create=True) == first == node_summary.summary_key(tmp_path)
    import stat
    assert stat.S_IMODE(layout.summary_key_path(tmp_path).stat().st_mode) == key_mode
