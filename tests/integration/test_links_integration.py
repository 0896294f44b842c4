"""Link KPIs with real processes on this machine (loopback): sampler, probe, run --probe."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from commprof.analysis.measures.collectives import bus_factor
from runner import HERE, commprof, report_json, torchrun

pytestmark = pytest.mark.slow


def test_loopback_carries_the_ring_bytes_of_the_collectives(tmp_path):
    """Single node: gloo's traffic is on `lo`, and lo's bytes ≈ Σ ranks' bus bytes (a 2-rank
    all_reduce sends S per rank).  Ground truth: the job's own tensor sizes."""
    run = tmp_path / "run"
    steps, numel = 20, 1 << 20  # 4 MiB float32 all_reduce per step
    proc = commprof("run", "--out", str(run), "--sample-hz", "20", "--",
                    *torchrun(HERE / "jobs" / "allreduce_loop.py", str(steps), str(numel)))
    assert proc.returncode == 0, proc.stderr
    doc = report_json(run, "--warmup", "0")
    (lo,) = [r for r in doc["links"]["interfaces"] if r["loopback"]]
    ideal = 2 * steps * numel * 4 * bus_factor("all_reduce", 2)
    assert lo["logical_bus_bytes"] == pytest.approx(ideal, rel=0.01)
    assert lo["tx_bytes"] / ideal == pytest.approx(1.0, abs=0.10)  # lo is shared with the machine
    assert lo["tx_peak_Bps"] >= lo["tx_mean_Bps"] > 0
    (sampler,) = doc["links"]["sampler"]
    assert sampler["hz"] == 20 and 0 < sampler["cpu_fraction_of_core"] < 0.05
    assert sampler["sources"]["nvml"]["available"] is False  # no GPU here, and it says why
    assert sampler["sources"]["nvml"]["why"]
    (tcp,) = [t for t in doc["links"]["tcp"] if t["peer"] == "127.0.0.1"]
    assert 0 < tcp["srtt_ms_median"] < 50 and tcp["connections_max"] >= 2


def test_probe_cli_writes_a_sweep(tmp_path):
    out = tmp_path / "probe.json"
    proc = commprof("probe", "--nproc", "2", "--sizes", "1K,256K", "--ops", "all_reduce,sendrecv",
                    "--iters", "5", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert doc["schema"] == "commprof.probe/1" and doc["world_size"] == 2 and doc["backend"] == "gloo"
    rows = {(r["op"], r["size_bytes"]): r for r in doc["results"]}
    assert set(rows) == {("all_reduce", 1024), ("all_reduce", 262144), ("sendrecv", 1024),
                         ("sendrecv", 262144)}
    for (op, size), r in rows.items():
        assert r["algbw_gbps"] == pytest.approx(size / r["time_median_s"] / 1e9)
        assert r["busbw_gbps"] == pytest.approx(r["algbw_gbps"] * bus_factor(op if op != "sendrecv" else "send", 2))
        assert r["time_p99_s"] >= r["time_median_s"] > 0
    assert doc["latency_us"]["all_reduce"] > 0 and doc["latency_us"]["sendrecv"] > 0
    assert "busbw" in proc.stdout and "all_reduce" in proc.stdout


def test_probe_prints_only_commprof_lines_on_stderr(tmp_path):
    """The probe's workers and launcher are commprof's: torch's deprecation warnings (all_gather and
    reduce_scatter of torch 2.13) and torchrun's OMP_NUM_THREADS banner stay out of stderr."""
    out = tmp_path / "probe.json"
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "TORCH_CPP_LOG_LEVEL")}
    proc = subprocess.run([sys.executable, "-m", "commprof", "probe", "--nproc", "2", "--sizes", "1K",
                           "--ops", "all_gather,reduce_scatter", "--iters", "3", "-o", str(out)],
                          capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines and all(l.startswith("commprof: ") for l in lines), proc.stderr
    assert {r["op"] for r in json.loads(out.read_text())["results"]} == {"all_gather", "reduce_scatter"}
    # any other warning of the worker becomes one `commprof: probe warning:` line, once
    code = ("import warnings; from commprof.probe.sweep import _route_warnings; "
            "_route_warnings(lambda m: print('commprof: probe ' + m)); "
            "[warnings.warn('old', FutureWarning) for _ in range(2)]; "
            "[warnings.warn('odd\\nmore', UserWarning) for _ in range(2)]")
    routed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert routed.stderr == "" and routed.stdout == "commprof: probe warning: UserWarning: odd\n"


def test_run_with_probe_reports_efficiency(tmp_path):
    run = tmp_path / "run"
    proc = commprof("run", "--out", str(run), "--probe", "--probe-sizes", "64K:4MiB:4", "--",
                    *torchrun(HERE / "jobs" / "allreduce_loop.py", "10", str(1 << 20)))
    assert proc.returncode == 0, proc.stderr
    assert (run / "probe.json").is_file()
    doc = report_json(run, "--warmup", "0")
    (eff,) = [e for e in doc["links"]["efficiency"] if e["op"] == "all_reduce"]
    assert eff["size_bytes"] == 4 << 20 and eff["count"] == 20  # 10 calls x 2 ranks
    assert 0 < eff["efficiency"] < 5
    assert doc["links"]["probe"]["world_size"] == 2


def test_probe_refuses_a_launcher_with_a_script(tmp_path):
    proc = commprof("probe", "--", sys.executable, "train.py")
    assert proc.returncode == 2 and "torchrun launcher" in proc.stderr
    proc = commprof("run", "--probe", "--", sys.executable, "-c", "pass")
    assert proc.returncode == 2 and "--probe needs a torchrun command" in proc.stderr
