"""One KPI registry (issue 28, item 2): each key of ``kpis`` is declared once in
commprof/analysis/measures/kpi_registry.py, and the assembler, the typed model, the gate and docs/kpis.md's
table follow from it.  The expected values here are computed from the definitions (docs/kpis.md),
on steps written by the test."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from commprof.analysis.measures import kpi_registry as registry, kpis as kpi
from commprof.gate import compare, measure, rules
from commprof.analysis.result import model

ROOT = Path(__file__).resolve().parents[2]


def test_the_docs_table_is_the_generated_one():
    """Regenerate with: python3 -m commprof.analysis.measures.kpi_registry docs/kpis.md"""
    text = (ROOT / "docs" / "kpis.md").read_text()
    assert registry.with_table(text) == text


def test_every_declaration_is_complete():
    names = [k.name for k in registry.KPIS]
    assert len(names) == len(set(names))
    for k in registry.KPIS:
        assert k.unit in registry.UNITS, k.name
        assert k.better in ("lower", "higher", ""), k.name
        assert k.definition and k.aggregation, k.name
        assert callable(kpi.compute_function(k)), k.name
        if k.gate:
            assert k.better and k.unit != "label", k.name  # the gate needs a direction and a number
    gates = [g.name for g in registry.gate_metrics()]
    assert len(gates) == len(set(gates))


def test_the_gate_takes_its_metrics_from_the_registry():
    """The gate's historical names keep working (``step_time`` reads ``kpis.step_time_s``), and
    every gate unit parses a limit."""
    assert measure.VALUES["step_time"] == "step_time_s"
    assert measure.VALUES["algbw"] == "algbw_gbps" and measure.VALUES["busbw"] == "busbw_gbps"
    assert rules.METRICS["step_time"] == ("s", True) and rules.METRICS["busbw"] == ("GB/s", False)
    assert "step_time_median" in rules.METRICS and "step_time_median" not in measure.VALUES
    assert compare.ORDER == list(rules.METRICS)
    for k in registry.KPIS:
        if k.gate:
            assert rules.METRICS[k.gate] == (k.unit, k.better == "lower")
            assert measure.VALUES[k.gate] == k.name
    examples = {"s": "250ms", "ms": "250ms", "B": "1.2GB", "frac": "30%", "GB/s": "10GB/s"}
    assert rules.parse_value(examples["s"], "s", "r") == pytest.approx(0.25)
    assert rules.parse_value(examples["ms"], "ms", "r") == pytest.approx(250.0)  # a KPI in ms
    assert rules.fmt(250.0, "ms") == rules.fmt(0.25, "s")
    for g in registry.gate_metrics():
        rules.parse_value(examples[g.unit], g.unit, "r")


def test_the_typed_model_is_the_registry():
    fields = [f.name for f in model.model_fields(model.Kpis)]
    assert set(fields) == {k.name for k in registry.KPIS} | {"host"}
    required = [f.name for f in model.model_fields(model.Kpis) if not model.is_optional(f)]
    assert required == [k.name for k in registry.KPIS if k.required]
    assert [f.name for f in model.model_fields(model.HostKpis)] == [k.name for k in registry.host_side()]
    # keys declared later are optional in the documents (the contract only adds keys)
    from commprof.analysis.result.model_kpis import HOST_KPIS_FIRST
    assert set(HOST_KPIS_FIRST) <= {k.name for k in registry.host_side()}
    for f in model.model_fields(model.HostKpis):
        assert model.is_optional(f) == (f.name not in HOST_KPIS_FIRST), f.name


def _steps(durations, comm, exposed, ranks=None):
    n = len(durations)
    ranks = ranks or [0] * n
    d = pd.Series(durations, dtype="float64")
    return pd.DataFrame({
        "rank": ranks, "step": range(n), "t_start": 0, "t_end": 0, "source": "explicit",
        "duration_s": d, "comm_s": comm, "exposed_s": exposed,
        "comm_fraction": pd.Series(comm) / d, "exposed_comm_fraction": pd.Series(exposed) / d,
        "bytes": [100.0] * n, "bus_bytes": [150.0] * n, "ops": [1.0] * n})[kpi.STEP_COLUMNS]


def test_the_headline_is_assembled_from_the_registry():
    # two ranks, two steps each: a slow step (3 s, 1.5 s in flight) and fast ones
    steps = _steps([1.0, 3.0, 1.0, 1.0], [0.5, 1.5, 0.25, 0.25], [0.25, 1.0, 0.0, 0.0],
                   ranks=[0, 0, 1, 1])
    ranks = kpi.ranks_frame([{"rank": 0, "wall_s": 10.0, "comm_fraction_wall": 0.2},
                             {"rank": 1, "wall_s": 10.0, "comm_fraction_wall": 0.1}], steps, steps)
    src = kpi.KpiSource(steps, ranks, {"algbw_gbps": 2.0, "busbw_gbps": 3.0})
    out = kpi.headline(src)
    assert list(out) == [k.name for k in registry.KPIS if not k.only_with]  # no GPU timeline
    assert out["step_time_s"] == pytest.approx(6.0 / 4)
    assert out["comm_fraction"] == pytest.approx(2.5 / 6.0)  # Σ ÷ Σ, not a median of fractions
    assert out["exposed_comm_fraction"] == pytest.approx(1.25 / 6.0)
    assert out["comm_fraction_max_rank"] == pytest.approx(2.0 / 4.0)  # rank 0: 2 s of 4 s
    assert out["comm_fraction_step_median"] == pytest.approx(0.375)  # of 0.5, 0.5, 0.25, 0.25
    assert out["hidden_comm_s_per_step"] == pytest.approx((2.5 - 1.25) / 4)
    assert out["compute_s_per_step"] == pytest.approx((6.0 - 2.5) / 4)
    assert out["comm_fraction_wall"] == pytest.approx(0.15)  # median over ranks
    assert out["busbw_gbps"] == 3.0 and out["time_basis"] == "host"
    assert out["wait_fraction_wall"] is None and out["no_comm_s_per_step"] is None  # not measured
    assert "host" not in out


def test_host_launch_nulls_communication_times_and_keeps_the_host_figures():
    steps = _steps([1.0, 1.0], [0.5, 0.5], [0.1, 0.1])
    ranks = kpi.ranks_frame([{"rank": 0, "wall_s": 2.0, "comm_fraction_wall": 0.5}], steps, steps)
    host = kpi.KpiSource(steps, ranks, {"algbw_gbps": 9.0, "busbw_gbps": 9.0})
    out = kpi.headline(kpi.KpiSource(steps, ranks, {"algbw_gbps": None, "busbw_gbps": None},
                                     registry.HOST_LAUNCH, host=host))
    for k in registry.KPIS:
        if k.comm_time:
            assert out[k.name] is None, k.name
    assert out["step_time_s"] == 1.0 and out["bytes_per_step"] == 100.0
    assert list(out["host"]) == [k.name for k in registry.host_side()]
    assert out["host"]["comm_fraction"] == pytest.approx(0.5) and out["host"]["algbw_gbps"] == 9.0


def test_gpu_figures_appear_with_a_gpu_timeline_only():
    steps = _steps([2.0], [1.0], [0.5])
    ranks = kpi.ranks_frame([{"rank": 0}], steps, steps)
    gpu = {"comm_fraction": 0.5, "exposed_comm_fraction": 0.25, "compute_fraction": 0.5,
           "memcpy_fraction": 0.0, "idle_fraction": 0.25, "overlap_ratio": 0.5, "basis": "steps"}
    out = kpi.headline(kpi.KpiSource(steps, ranks, {}, registry.GPU_TRACE, gpu=gpu,
                                     step_parts=lambda k: {"idle_s_per_step": k["gpu_idle_fraction"]
                                                           * k["step_time_s"]}))
    assert out["gpu_idle_fraction"] == 0.25 and out["gpu_basis"] == "steps"
    assert out["idle_s_per_step"] == pytest.approx(0.5)  # 0.25 of a 2 s step
    assert list(out) == [k.name for k in registry.KPIS]
