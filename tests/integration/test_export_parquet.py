"""``commprof export RUN --parquet DIR`` on a real demo run: the files round-trip to the frames of
``commprof.load_run`` (dtypes included), carry the schema version, the usage errors are one line
with exit status 2, and the DuckDB questions of docs/data.md run on frames and files alike."""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

import commprof
from commprof.analysis.outcome.frames import COLUMNS, FRAMES, SCHEMA
from commprof.format import parquet as pq_files
from demo_run import capture_of_rank, end_of_last_record

pytestmark = pytest.mark.slow
pq = pytest.importorskip("pyarrow.parquet")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from demo_run import demo_run
    return demo_run(tmp_path_factory)


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory):
    from runner import commprof as cli
    out = tmp_path_factory.mktemp("export") / "parquet"
    proc = cli("export", str(run_dir), "--parquet", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "commprof: export: calls" in proc.stderr and f"wrote {out}" in proc.stderr
    return out


def test_the_files_round_trip_to_the_frames(run_dir, exported):
    run = commprof.load_run(run_dir)
    ranks = sorted(run.calls["rank"].unique())
    assert sorted(p.name for p in (exported / "calls").iterdir()) == [f"rank={r}" for r in ranks]
    assert not pq.read_schema(exported / "calls" / "rank=0" / "part-0.parquet").get_field_index("rank") >= 0
    for name in FRAMES:
        back = pq_files.read_frame(exported, name, COLUMNS[name])
        pd.testing.assert_frame_equal(back, run.frame(name), check_categorical=False, obj=name)
        # without the dtypes: a non-empty frame's categoricals are categoricals already
        raw = pq_files.read_frame(exported, name)
        if len(raw):
            cats = [c for c, t in run.frame(name).dtypes.items() if isinstance(t, pd.CategoricalDtype)]
            assert all(isinstance(raw[c].dtype, pd.CategoricalDtype) for c in cats), name
        numeric = [c for c, t in COLUMNS[name].items() if t not in ("object", "category")]
        assert {c: str(raw[c].dtype) for c in numeric} == {c: COLUMNS[name][c] for c in numeric}


def test_every_file_carries_the_schema_version(exported):
    files = sorted(exported.rglob("*.parquet"))
    assert len(files) == len(FRAMES) - 1 + 2  # calls: one file per rank
    for f in files:
        meta = pq.read_schema(f).metadata
        assert meta[b"commprof.schema"] == SCHEMA.encode(), f
        assert meta[b"commprof.frame"].decode() in FRAMES
    assert '"schema": "commprof.data/1"' in (exported / pq_files.INDEX_FILE).read_text()


def test_plain_pandas_reads_the_partitioned_calls(run_dir, exported):
    calls = pd.read_parquet(exported / "calls")  # rank comes from the directory names
    assert isinstance(calls["rank"].dtype, pd.CategoricalDtype)
    assert len(calls) == len(commprof.load_run(run_dir).calls)


def test_usage_errors_are_one_line_and_exit_2(run_dir, exported, tmp_path, capsys):
    from commprof.cli import main  # in-process: main() is where errors become exit codes
    cases = [
        (["export", str(tmp_path / "nope"), "--parquet", str(tmp_path / "o")],
         f"{tmp_path / 'nope'}: no such run directory"),
        (["export", str(run_dir), "--parquet", str(exported)], f"{exported}: exists and is not empty"),
        (["export", str(run_dir)], "--parquet DIR is required"),
        (["export", str(run_dir), "--parquet", str(run_dir / "export")], "inside the run directory"),
        (["export", str(tmp_path), "--parquet", str(tmp_path / "o")], str(tmp_path)),
    ]
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    cases += [(["export", str(run_dir), "--parquet", str(blocker)], f"{blocker}: exists and is not a directory"),
              (["export", str(run_dir), "--parquet", str(blocker / "sub")], f"{blocker / 'sub'}: cannot write")]
    for args, message in cases:
        capsys.readouterr()
        assert main(args) == 2, args
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("commprof: error: ") and message in lines[0], lines
    assert not (tmp_path / "o").exists()  # nothing written for a bad run
    assert main(["export", str(run_dir), "--parquet", str(exported), "--force", "-q"]) == 0
    assert capsys.readouterr().err == ""
    assert pq_files.file_schema(exported / "steps.parquet") == SCHEMA


def test_the_duckdb_examples_run_on_frames_and_on_parquet(run_dir, exported):
    pytest.importorskip("duckdb")
    import subprocess
    script = [sys.executable, "-m", "commprof.examples.query_run", str(run_dir)]
    frames_out = subprocess.run(script, capture_output=True, text=True, timeout=120)
    files_out = subprocess.run(script + ["--parquet", str(exported)], capture_output=True, text=True,
                               timeout=120)
    assert frames_out.returncode == 0 and files_out.returncode == 0, frames_out.stderr + files_out.stderr
    assert frames_out.stdout == files_out.stdout
    assert "== slowest (10 rows)" in frames_out.stdout and "== last_arrival" in frames_out.stdout
    from commprof.examples.query_run import connect, run_queries
    res = run_queries(connect(parquet=str(exported)), rank=1)
    run = commprof.load_run(run_dir)
    assert res["slowest"]["duration_ms"].is_monotonic_decreasing
    assert res["slowest"]["duration_ms"].iloc[0] == pytest.approx(
        run.calls.loc[run.calls["peer"] < 0, "duration_ns"].max() / 1e6, abs=1e-3)
    meas = run.steps[(run.steps["rank"] == 1) & run.steps["measured"]]
    assert res["exposed"]["step"].tolist() == meas["step"].tolist()
    assert res["exposed"]["exposed_ms"].tolist() == pytest.approx((meas["exposed_s"] * 1e3).tolist(), abs=1e-3)
    last = res["last_arrival"]
    assert len(last) and set(last["last_rank"]) <= {0, 1} and (last["all_reduces"] >= 1).all()


def test_without_pyarrow_the_export_says_so(run_dir, tmp_path, monkeypatch, capsys):
    from commprof.cli import main
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow raises ImportError
    assert main(["export", str(run_dir), "--parquet", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["commprof: error: pyarrow is not installed: `pip install pyarrow` (needed for Parquet)"]
    assert not (tmp_path / "o").exists()


def test_damage_found_while_exporting_is_said_and_kept_in_the_index(run_dir, tmp_path):
    """The index is written after the frames, so it holds what reading found (a bad checksum
    here), and the same note goes to stderr, as the report shows it."""
    import json
    import shutil

    from runner import commprof as cli
    damaged = tmp_path / "damaged"
    shutil.copytree(run_dir, damaged)
    capture = capture_of_rank(damaged, 1)
    data = bytearray(capture.read_bytes())
    end = end_of_last_record(capture)
    data[end - 8:end] = bytes(b ^ 0xFF for b in data[end - 8:end])  # inside the last collective
    capture.write_bytes(bytes(data))
    out = tmp_path / "parquet"
    proc = cli("export", str(damaged), "--parquet", str(out), "-q")
    assert proc.returncode == 0, proc.stderr
    notes = json.loads((out / pq_files.INDEX_FILE).read_text())["notes"]
    assert any(capture.name in n for n in notes), notes
    assert f"commprof: warning: {capture.name}" in proc.stderr
