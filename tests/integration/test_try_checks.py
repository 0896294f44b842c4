"""`commprof try`'s checks around a fix (issue 25 items 6, 8, 9), on synthetic report documents
and facts, plus one short real job for the rule-out:

* applicability: a fix whose target the baseline lacks (no DDP model, no fully_shard, several
  buckets for PowerSGD on gloo) is ruled out, with the reason; unknown never rules out;
* bytes per op: each op against what the fix says it does to it (FSDP2 bf16-reduce: reduce_scatter
  x0.5 and all_gather x1, not one x0.83 total);
* PowerSGD's bytes: from the layer shapes, computed here independently of commprof;
* local SGD: averaging steps, the ranks' loss spread.
"""
from __future__ import annotations

import math

import pytest
import torch

from commprof.fixes import parse
from commprof.fixes.checks import (applicable, bytes_checks, bytes_ok, check_text, local_sgd_checks,
                                   local_sgd_lines, projected_bytes_div)
from runner import HERE, commprof, torchrun


def _doc(ops=("all_reduce",), backend="gloo") -> dict:
    return {"run": {"backend": backend}, "ops": [{"op": o} for o in ops], "steps": {"per_step": []}}


def _facts(ops: dict, ddp=None, fsdp=False, buckets=None, backend="gloo", steps=10, **extra) -> dict:
    """``ops``: op -> (bytes per step, of which in backward)."""
    grads = ops.get("all_reduce", (0, 0))[1]
    return {"backend": backend, "measured_steps": steps, "last_step": extra.get("last_step"),
            "ops": {k: {"bytes": float(a), "backward": float(b)} for k, (a, b) in ops.items()},
            "ddp": grads > 0 if ddp is None else ddp, "fsdp": fsdp, "ddp_buckets": buckets,
            "gradient_bytes": float(grads) if grads else None, "fixes": extra.get("fixes", []),
            "loss_by_rank": extra.get("loss_by_rank")}


DDP_3_BUCKETS = _facts({"all_reduce": (9_490_472, 9_490_472)}, buckets=3)
FSDP2 = _facts({"all_gather": (16_988_240, 8_494_120), "reduce_scatter": (8_494_120, 8_494_120)}, fsdp=True)
NO_DDP = _facts({"all_to_all": (2_000_000, 0), "all_reduce": (4, 0)})


# -- item 8: rule out before running --------------------------------------------------------------

def test_a_ddp_fix_on_a_job_without_ddp_is_ruled_out_saying_why():
    for spec in ("bf16-compress", "powersgd:2", "local-sgd:4", "bucket-cap:25", "static-graph"):
        ok, why = applicable(parse(spec), _doc(("all_to_all", "all_reduce")), NO_DDP)
        assert not ok and "no DistributedDataParallel model" in why and "all_to_all" in why, (spec, why)
    # the report document alone: no all_reduce at all is enough to rule DDP out
    ok, why = applicable(parse("bf16-compress"), _doc(("all_to_all",)))
    assert not ok and "no DistributedDataParallel" in why
    # ... but an all_reduce it cannot place (in backward or not) is not, nor one from a run whose
    # backward was never recorded (runfacts: ddp None, the in-backward flag cannot be trusted)
    assert applicable(parse("bf16-compress"), _doc(("all_reduce",))) == (True, "")
    assert applicable(parse("bf16-compress"), _doc(("all_to_all", "all_reduce")), dict(NO_DDP, ddp=None)) == (True, "")


def test_an_fsdp_fix_needs_fully_shard_and_a_ddp_fix_needs_ddp():
    ok, why = applicable(parse("bf16-reduce"), _doc(), DDP_3_BUCKETS)
    assert not ok and "fully_shard" in why
    assert applicable(parse("bf16-reduce"), _doc(("all_gather", "reduce_scatter")), FSDP2) == (True, "")
    assert not applicable(parse("bf16-compress"), _doc(("all_gather", "reduce_scatter")), FSDP2)[0]


def test_powersgd_on_gloo_with_several_buckets_is_ruled_out_unless_one_bucket_fits():
    ok, why = applicable(parse("powersgd:1"), _doc(), DDP_3_BUCKETS)
    assert not ok and "3 buckets" in why and "bucket-cap:10" in why, why  # 9.49 MB < 10 MiB
    assert applicable(parse("powersgd:1,bucket-cap:10"), _doc(), DDP_3_BUCKETS) == (True, "")
    ok, why = applicable(parse("powersgd:1,bucket-cap:5"), _doc(), DDP_3_BUCKETS)
    assert not ok and "do not fit" in why
    one = _facts({"all_reduce": (9_490_472, 9_490_472)}, buckets=1)
    assert applicable(parse("powersgd:1"), _doc(), one) == (True, "")
    nccl = _facts({"all_reduce": (9_490_472, 9_490_472)}, buckets=3, backend="nccl")
    assert applicable(parse("powersgd:1"), _doc(backend="nccl"), nccl) == (True, "")
    assert applicable(parse("powersgd:1"), _doc()) == (True, "")  # no facts: it runs


# -- item 9: bytes per op -------------------------------------------------------------------------

def test_bf16_reduce_on_fsdp2_is_checked_per_op():
    # the numbers: reduce_scatter 8,494,120 -> 4,247,060 B/step, all_gather unchanged
    after = _facts({"all_gather": (16_988_240, 8_494_120), "reduce_scatter": (4_247_060, 4_247_060)}, fsdp=True)
    rows = bytes_checks(parse("bf16-reduce"), FSDP2, after)
    text = "; ".join(check_text(r) for r in rows)
    assert text == "all_gather x1.00 as expected; reduce_scatter x0.50 as expected", text
    total = sum(r["fix"] for r in rows) / sum(r["base"] for r in rows)
    assert total == pytest.approx(1 - 4_247_060 / 25_482_360)  # the x0.833 the old total check judged
    assert bytes_ok(rows) is True
    unapplied = bytes_checks(parse("bf16-reduce"), FSDP2, FSDP2)
    assert bytes_ok(unapplied) is False
    assert "reduce_scatter x1.00 NOT as expected (the fix says x0.50)" in [check_text(r) for r in unapplied]


def test_a_ddp_fix_changes_only_the_gradient_share_of_its_op():
    # 1 MB of gradient all_reduce in backward, 1 kB of the job's own all_reduce outside it
    base = _facts({"all_reduce": (1_001_000, 1_000_000), "broadcast": (100, 0)})
    half = _facts({"all_reduce": (501_000, 500_000), "broadcast": (100, 0)})
    rows = {r["op"]: r for r in bytes_checks(parse("bf16-compress"), base, half)}
    assert rows["all_reduce"]["expected"] == [pytest.approx(501_000 / 1_001_000)] * 2
    assert rows["all_reduce"]["ok"] and rows["broadcast"]["ok"] and rows["broadcast"]["unchanged"]
    assert projected_bytes_div(list(rows.values())) == pytest.approx(1_001_100 / 501_100)
    assert projected_bytes_div(bytes_checks(parse("static-graph"), base, base)) is None  # unchanged
    # an op the baseline sent no bytes of has no factor: it weighs nothing (was a TypeError)
    assert projected_bytes_div([{"op": "all_reduce", "base": 1000, "expected": [0.5, 0.5]},
                                {"op": "barrier", "base": 0, "expected": None}]) == pytest.approx(2.0)


def test_local_sgd_bytes_are_one_step_in_k_and_its_averaging_steps():
    base = _facts({"all_reduce": (1_000_000, 1_000_000)})
    for n, k in ((10, 4), (12, 4), (9, 2)):
        syncs_lo, syncs_hi = n // k, math.ceil(n / k)
        for syncs, ok in ((syncs_lo, True), (syncs_hi, True), (n, False), (0, syncs_lo == 0)):
            fixed = _facts({"all_reduce": (1_000_000 * syncs / n, 0)}, steps=n)
            (row,) = bytes_checks(parse(f"local-sgd:{k}"), base, fixed)
            assert row["ok"] is ok, (n, k, syncs, row)
    (f,) = parse("local-sgd:4", warmup=3)
    assert [s for s in range(16) if f.averaging_step(s)] == [3, 7, 11, 15]


def test_local_sgd_reports_the_loss_spread_and_a_run_not_ending_on_an_average():
    fixes = parse("local-sgd:4", warmup=3)
    base = _facts({}, loss_by_rank={0: 2.0, 1: 2.02})
    fixed = _facts({}, loss_by_rank={0: 2.0, 1: 2.2}, last_step=13)
    c = local_sgd_checks(fixes, base, fixed)
    assert c["spread"] == pytest.approx(0.2 / 2.1) and c["spread_base"] == pytest.approx(0.02 / 2.01)
    assert c["ends_averaged"] is False
    lines = local_sgd_lines(c)
    assert "spread 9.5% (baseline 1.0%)" in lines[0] and "not an averaging step" in lines[1]
    assert local_sgd_checks(fixes, base, dict(fixed, last_step=15))["ends_averaged"] is True
    # --max-steps ends the process inside the last optimizer step, before the averaging post-hook
    cut = local_sgd_checks(fixes, base, dict(fixed, last_step=15, max_steps_exit=True))
    assert cut["ends_averaged"] is False and "--max-steps ended it" in local_sgd_lines(cut)[1]
    assert "average_parameters(model.parameters()" in fixes[0].code()


# -- item 6: PowerSGD's bytes from the layer shapes -----------------------------------------------

def _powersgd_bytes(shapes: list[tuple[int, ...]], rank: int) -> tuple[int, int]:
    """The oracle, from PowerSGD's definition: a gradient viewed as rows x (everything else) is
    sent as two rank-r factors when that is at least 2x smaller (strictly), else whole."""
    full = after = 0
    for s in shapes:
        rows = s[0]
        cols = math.prod(s) // rows
        r = min(rows, cols, rank)
        full += 4 * rows * cols
        after += 4 * ((rows + cols) * r if 2 * (rows + cols) * r < rows * cols else rows * cols)
    return full, after


class _FakeDDP:
    def __init__(self, module):
        self.module = module


@pytest.mark.parametrize("rank", [1, 2, 4, 8])
def test_powersgd_bytes_ratio_follows_the_layer_shapes(rank):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.Flatten(), torch.nn.Linear(16 * 30 * 30, 64),
                                torch.nn.LayerNorm(64), torch.nn.Linear(64, 10), torch.nn.Linear(10, 3))
    model[0].bias.requires_grad_(False)
    shapes = [(16, 3, 3, 3), (64, 14400), (64,), (64,), (64,), (10, 64), (10,), (3, 10), (3,)]
    full, after = _powersgd_bytes(shapes, rank)
    (fix,) = parse(f"powersgd:{rank}")
    details = fix.applied_details(_FakeDDP(model))
    assert details["gradient_bytes"] == full
    assert details["bytes_ratio"] == pytest.approx(after / full, rel=1e-12)
    # checked like the others, and projected through the what-if with bytes ÷ that ratio
    base = _facts({"all_reduce": (full, full)})
    fixed = _facts({"all_reduce": (after, after)}, fixes=[{"fix": fix.spec, "status": "applied", **details}])
    rows = bytes_checks([fix], base, fixed)
    assert bytes_ok(rows) is True and projected_bytes_div(rows) == pytest.approx(full / after)
    assert bytes_checks([fix], base, _facts({"all_reduce": (after, after)}))[0]["expected"] is None


# -- one real job: ruled out before running -------------------------------------------------------

@pytest.mark.slow
def test_try_on_a_job_without_ddp_returns_at_once_with_the_reason(tmp_path):
    job = [str(HERE / "jobs" / "manual_allreduce.py"), "4"]  # backward, then all_reduce by hand
    base = tmp_path / "base"
    proc = commprof("run", "--out", str(base), "--sample-hz", "0", "--quiet", "--", *torchrun(*job))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "try"
    proc = commprof("try", "bf16-compress", "--baseline", str(base), "--out", str(out), "--", *torchrun(*job))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "not running bf16-compress: the baseline has no DistributedDataParallel model" in proc.stdout
    assert not any(p.is_dir() for p in out.iterdir()), list(out.iterdir())  # no job was run
