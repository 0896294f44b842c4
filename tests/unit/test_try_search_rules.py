"""The rules of ``commprof try auto``'s search (commprof/cli/try_search.py) on synthetic results:
what the short rung prunes on, when there is no short rung, the order of a family, and the cap.
Oracles from the definitions in the module's docstring."""
from __future__ import annotations

import pytest

from commprof.cli import try_search as ts


def _result(speedup, diverged=None, worse_by=0.0, band=0.45, spread=0.05, applied=True):
    verdict = "worse" if diverged or worse_by > band else "ok"
    return {"applied": applied, "why": "", "status": ["applied"], "bytes_ok": True, "speedup": speedup,
            "judgement": {"quality_verdict": verdict, "verdict": verdict, "worse_by": worse_by, "band": band,
                          "diverged": diverged, "spread_base": spread,
                          "time_to_target": {"target": 1.0, "reached": True, "speedup": speedup}}}


def test_the_short_rung_prunes_on_speed_and_divergence_not_on_the_loss_band():
    # 40 % worse inside a ±45 % band, or beyond it: the short rung does not judge the loss
    assert ts.short_fate(_result(2.0, worse_by=0.40)) == ""
    assert ts.short_fate(_result(2.0, worse_by=0.60)) == ""
    assert ts.short_fate(_result(2.0, diverged="diverged: x")) == "diverged: x"
    # faster per step by no more than the baseline's run-to-run spread (5 %): not faster
    assert ts.short_fate(_result(1.05)).startswith("not faster per step (1.05x")
    assert ts.short_fate(_result(1.06)) == ""
    # the spread is at least MIN_GAIN (3 %)
    assert ts.short_fate(_result(1.02, spread=0.0)).startswith("not faster")
    assert ts.short_fate(_result(1.04, spread=0.0)) == ""
    assert ts.short_fate(_result(2.0, applied=False)).startswith("did not apply")


def test_the_full_rung_falls_on_the_loss_band_and_on_a_target_not_reached_even_extrapolated():
    assert ts.full_fate(_result(2.0, worse_by=0.40)) == ""
    assert ts.full_fate(_result(2.0, worse_by=0.60)).startswith("worse beyond the noise")
    r = _result(8.0)
    r["judgement"]["time_to_target"].update(reached=False, speedup=None)
    assert "within twice the baseline's steps" in ts.full_fate(r)


def test_families_are_ordered_mildest_first():
    fixes = ["powersgd:1", "local-sgd:32", "fp16-compress", "powersgd:8", "local-sgd:2", "bf16-compress"]
    got = sorted(fixes, key=lambda f: (ts.family_of(f), ts.mildness(f)))
    assert got == ["bf16-compress", "fp16-compress", "local-sgd:2", "local-sgd:32", "powersgd:8", "powersgd:1"]


@pytest.mark.parametrize("startup,dominates", [(2.0, False), (15.0, True)])
def test_no_short_rung_when_a_short_run_costs_more_than_half_a_full_one(startup, dominates):
    # 100 steps of 0.1 s; the short rung: max(5 + 20, 20 % of 100) = 25 steps
    search = ts.Search(["bf16-compress"], None, 100, ts.Costs(startup, 0.1), 3600.0, None)
    short_cost, full_cost = startup + 25 * 0.1, startup + 100 * 0.1
    assert (short_cost > 0.5 * full_cost) is dominates
    assert search.short_steps(5) == (100 if dominates else 25)


def test_the_cap_is_a_third_of_the_exhaustive_estimate_less_the_baselines():
    costs = ts.Costs(10.0, 0.1)  # a full run of 100 steps: 20 s
    search = ts.Search(["a", "b", "c", "d"], None, 100, costs, 3600.0, None)
    search.table = [ts.Candidate(f) for f in search.candidates]
    search.table[0].full = {"speedup": 2.0}  # its full run: 10 + 10 / 2 = 15 s
    exhaustive = 2 * 20 + 2 * 15 + 3 * 2 * 20  # the baseline twice, every candidate twice
    assert search.exhaustive_estimate_s() == pytest.approx(exhaustive)
    cap = exhaustive / 3 - 2 * 20
    search.spent_s = cap - 20
    assert search._within_cap(20.0) and not search._within_cap(20.5)
