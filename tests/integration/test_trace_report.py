"""`commprof report` on PyTorch-profiler traces: the same report as a run, from the GPU timeline.

The expected GPU figures are computed here with the painting oracle of tests/unit/test_gpu_timeline.py
(independent of commprof's interval code), straight from the trace JSON.
"""
from __future__ import annotations

import gzip
import json
import shutil

import pytest

from runner import commprof
from test_gpu_timeline import SHARED, expect, oracle_ops, paint

NCCL = SHARED / "hta_nccl_data_rank0.json.gz"
needs = pytest.mark.skipif(not NCCL.is_file(), reason=f"{NCCL} is absent (../shared/gpu_traces/)")


@pytest.fixture
def traces(tmp_path):
    d = tmp_path / "traces"
    d.mkdir()
    shutil.copy(NCCL, d / "rank-0.json.gz")
    (d / "rank-1.json.gz").write_bytes(NCCL.read_bytes()[:5000])           # truncated gzip
    (d / "rank-2.json").write_text("<html>not a trace</html>")             # not JSON
    (d / "rank-3.json").write_text(json.dumps({"traceEvents": [           # no kernels
        {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "ts": 1, "dur": 2, "pid": 1, "tid": 1}]}))
    (d / "trace.json").write_text(json.dumps({"traceEvents": [            # no rank
        {"ph": "X", "cat": "kernel", "name": "k", "ts": 1, "dur": 2, "pid": 0, "tid": 7,
         "args": {"correlation": 1}}]}))
    return d


@needs
def test_a_directory_of_traces_reports_the_good_ones_and_names_each_bad_one(traces):
    proc = commprof("report", str(traces), "-f", "json")
    assert proc.returncode == 0, proc.stderr
    bad = [line for line in proc.stderr.splitlines() if line.startswith("commprof: ")]
    names = {"rank-1.json.gz": "gzip", "rank-2.json": "not JSON", "rank-3.json": "no GPU kernels",
             "trace.json": "no rank"}
    for name, words in names.items():
        lines = [line for line in bad if f"/{name}: " in line]
        assert len(lines) == 1 and words in lines[0], (name, bad)
    doc = json.loads(proc.stdout)
    assert doc["run"]["source"].startswith("PyTorch-profiler") and doc["run"]["ranks_captured"] == 1
    got = doc["ranks"][0]["gpu"]
    want = expect(paint(oracle_ops(NCCL)[0]))
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-3, abs=1e-9), key
    # the headline KPIs are the GPU figures, time-weighted over the profiler steps
    k = doc["kpis"]
    assert k["comm_fraction"] == pytest.approx(k["gpu_comm_fraction"])
    assert k["exposed_comm_fraction"] == pytest.approx(k["gpu_exposed_comm_fraction"])
    assert doc["assessment"]["exposed_fraction"] == pytest.approx(k["gpu_exposed_comm_fraction"])


@needs
@pytest.mark.parametrize("fmt", ["terminal", "html"])
def test_every_format_renders_a_trace_report(traces, tmp_path, fmt):
    out = tmp_path / ("r.html" if fmt == "html" else "r.txt")
    proc = commprof("report", str(traces / "rank-0.json.gz"), "--format", fmt, "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "Communication is exposed for" in out.read_text()


@needs
def test_gate_whatif_and_the_perfetto_export_take_traces(traces, tmp_path):
    one = traces / "rank-0.json.gz"
    doc = json.loads(commprof("report", str(one), "-f", "json").stdout)
    gate = tmp_path / "g.json"
    proc = commprof("gate", str(one), "--max-exposed-comm-fraction", "0.99", "--json", str(gate))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rule = json.loads(gate.read_text())["rules"][0]
    assert rule["measured"] == doc["kpis"]["exposed_comm_fraction"]
    same = json.loads(commprof("whatif", str(one), "-f", "json").stdout)
    assert same["exposed_comm_fraction"] == pytest.approx(doc["kpis"]["exposed_comm_fraction"])
    out = tmp_path / "merged.trace.json"
    assert commprof("report", str(one), "-o", str(out)).returncode == 0
    merged = json.loads(out.read_text())["traceEvents"]
    original = json.loads(gzip.decompress(one.read_bytes()))["traceEvents"]
    assert len(merged) == len(original)
    assert all(str(e["pid"]).startswith("rank 0: ") for e in merged if "pid" in e)
