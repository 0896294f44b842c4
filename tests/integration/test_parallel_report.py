"""`commprof report --jobs N` and `--scheduler` (analysis/scale/reduce.py, docs/scaling.md): the capture
files of a real run reduced in this process, by a pool of local processes and on a Dask
LocalCluster give the same report, notes about damaged files included, in the same order."""
from __future__ import annotations

import json
import shutil

import pytest

from demo_run import capture_of_rank, demo_run, end_of_last_record
from runner import commprof

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def damaged_run(tmp_path_factory):
    """The demo run with rank 1's last collective torn (a note the report must keep)."""
    src = demo_run(tmp_path_factory)
    run = tmp_path_factory.mktemp("parallel") / "run"
    shutil.copytree(src, run)
    capture = capture_of_rank(run, 1)
    capture.write_bytes(capture.read_bytes()[:end_of_last_record(capture) - 1])
    return run


def _report(run, *args) -> dict:
    proc = commprof("report", str(run), "--format", "json", *args, timeout=240, process=True)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def sequential(damaged_run):
    doc = _report(damaged_run, "--jobs", "1")
    assert any("records before it were kept" in n for n in doc["notes"]), doc["notes"]
    return doc


def test_a_local_pool_gives_the_same_report(damaged_run, sequential):
    assert _report(damaged_run, "--jobs", "2") == sequential


def test_a_dask_cluster_gives_the_same_report(damaged_run, sequential):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None, silence_logs=40) as cluster:
        doc = _report(damaged_run, "--scheduler", cluster.scheduler_address)
        ran = cluster.scheduler.task_prefixes.get("reduce_files")
        assert ran is not None and sum(ran.state_counts.values()) > 0  # the cluster did the work
    assert doc == sequential


@pytest.mark.parametrize("args, message", [
    (["--jobs", "0"], "--jobs 0: must be >= 1"),
    (["--jobs", "2", "--scheduler", "tcp://127.0.0.1:9"], "give one"),
    (["--scheduler", "tcp://127.0.0.1:9"], "cannot reach the Dask scheduler"),
    (["--scheduler", "/nonexistent/scheduler.json"], "no such scheduler file"),
    (["--scheduler", "no-port-here"], "cannot reach the Dask scheduler"),
])
def test_bad_reduction_options_are_one_line_errors(damaged_run, args, message):
    proc = commprof("report", str(damaged_run), *args, timeout=120, process=True)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0], proc.stderr
