"""`commprof try`'s fixes on the unmodified demo job (issue 17): each runs from the plain script,
and the bytes per step are what the fix's arithmetic says — computed here from the demo's layer
shapes, independently of commprof (real torchrun, real gloo, 2 ranks).

* bf16/fp16-compress: every gradient all_reduce carries 2 bytes per parameter, in that dtype;
* powersgd:R: after the warm-up, Σ over layers of (m + n)·R for the matrices it compresses
  (PowerSGD's rule: when (m + n)·R · 2 < m·n) and m·n for the others, in float32;
* local-sgd:K: after the warm-up, no gradient all-reduce; the parameters, averaged once every K steps;
* bucket-cap:MB: bytes unchanged; all_reduce calls per step = DDP's bucket count for that cap;
* a job that registers its own comm hook, or builds no DDP model: the fix is skipped, said why,
  and the job runs unchanged; ``--max-steps`` ends the job after that many steps.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from commprof.analysis.host.load import load_run
from demo_run import fsdp2_run, shared_report
from runner import HERE, commprof, side_by_side, torchrun

pytestmark = pytest.mark.slow
DEMO = HERE.parent / "commprof" / "examples" / "demo_train.py"
WARMUP = 3
STEPS = 12


def _shapes(width: int) -> list[tuple[int, ...]]:
    """The demo MLP's parameters (commprof/examples/demo_train.py: build_mlp), in order."""
    dims = [(256, width), (width, width), (width, width), (width, 10)]
    out = []
    for d_in, d_out in dims:
        out += [(d_out, d_in), (d_out,)]
    return out


def _params(width: int) -> int:
    return sum(int(np.prod(s)) for s in _shapes(width))


def _powersgd_values(width: int, rank: int) -> int:
    total = 0
    for s in _shapes(width):
        if len(s) < 2:
            total += s[0]
            continue
        m, n = s[0], int(np.prod(s[1:]))
        total += (m + n) * rank if (m + n) * rank * 2 < m * n else m * n
    return total


def _buckets(width: int, cap_mb: float) -> int:
    """DDP's bucket count: parameters in reverse order; a bucket closes once it reaches its limit
    (the first one 1 MiB, the others cap_mb MiB)."""
    limits, count, size = [1024 * 1024, int(cap_mb * 1024 * 1024)], 0, 0
    for s in reversed(_shapes(width)):
        size += 4 * int(np.prod(s))
        if size >= limits[min(count, 1)]:
            count, size = count + 1, 0
    return count + (size > 0)


def _run(base, name, *fix_args, width=64, steps=STEPS, job=None):
    run = base / name
    job = job or [str(DEMO), "--steps", str(steps), "--width", str(width)]
    proc = commprof("run", "--out", str(run), "--sample-hz", "0", "--quiet", *fix_args,
                    "--", *torchrun(*job))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One run of the demo per fix, two at a time (runner.side_by_side: the tests count bytes,
    calls and dtypes, never time)."""
    base = tmp_path_factory.mktemp("try")
    fw = ("--fix-warmup", str(WARMUP))
    own_hook = [str(DEMO), "--steps", "6", "--width", "64", "--compress", "fp16"]
    return side_by_side({
        "baseline": lambda: _run(base, "baseline", "--max-steps", "9", steps=40),
        "bf16": lambda: _run(base, "bf16", "--fix", "bf16-compress"),
        "fp16": lambda: _run(base, "fp16", "--fix", "fp16-compress"),
        "powersgd": lambda: _run(base, "powersgd", "--fix", "powersgd:2", *fw),
        "localsgd": lambda: _run(base, "localsgd", "--fix", "local-sgd:4", *fw),
        "options": lambda: _run(base, "options", "--fix",
                                "bucket-cap:8,static-graph,grad-as-bucket-view", width=1024, steps=6),
        "own_hook": lambda: _run(base, "own_hook", "--fix", "bf16-compress", job=own_hook),
        "no_ddp": lambda: _run(base, "no_ddp", "--fix", "local-sgd:4",
                               job=[str(HERE / "jobs" / "allreduce_loop.py"), "5", "1000"]),
    })


def _per_step(run) -> pd.DataFrame:
    """Rank 0's world-group all_reduce calls per step: count, bytes, dtypes (steps from its marks)."""
    data = load_run(run)
    c = data.collectives[(data.collectives["rank"] == 0) & (data.collectives["op"].astype(str) == "all_reduce")]
    c = c[c["group_size"] == 2]
    m = data.marks[(data.marks["rank"] == 0) & (data.marks["kind"] == 1) & (data.marks["value"] == 0)]
    ends = np.sort(m["t"].to_numpy())
    step = np.searchsorted(ends, c["t_issue"].to_numpy())
    d = pd.DataFrame({"step": step, "bytes": c["in_bytes"].to_numpy(), "dtype": c["dtype"].astype(str).to_numpy()})
    g = d.groupby("step").agg(calls=("bytes", "size"), bytes=("bytes", "sum"),
                              dtypes=("dtype", lambda x: sorted(set(x))))
    return g.reindex(range(len(ends))).assign(calls=lambda x: x["calls"].fillna(0),
                                                bytes=lambda x: x["bytes"].fillna(0))


def _fix_rows(run) -> list[dict]:
    return (shared_report(run).get("training") or {}).get("fixes") or []


def test_the_baseline_synchronizes_every_parameter_each_step(runs):
    s = _per_step(runs["baseline"])
    assert len(s) == 9  # --max-steps 9 ended the 40-step job after 9 steps
    assert (s["bytes"].iloc[2:] == 4 * _params(64)).all()
    doc = shared_report(runs["baseline"])
    assert doc["training"]["loss"]["steps"] == list(range(9)) and doc["training"]["fixes"] == []


@pytest.mark.parametrize("name, dtype", [("bf16", "bfloat16"), ("fp16", "float16")])
def test_compression_halves_the_bytes_in_its_dtype(runs, name, dtype):
    s = _per_step(runs[name]).iloc[1:]  # step 0 holds DDP's initial parameter broadcast as well
    assert (s["bytes"] == 2 * _params(64)).all(), s
    assert all(d == [dtype] for d in s["dtypes"])
    rows = _fix_rows(runs[name])
    assert [(r["fix"], r["status"], r["ranks"]) for r in rows] == [(f"{name}-compress", "applied", [0, 1])]
    manifest = load_run(runs[name]).manifest  # the fix and the loss values are in it as well
    assert manifest["fixes"] == [f"{name}-compress"] and manifest["loss"]["steps"] == list(range(STEPS))


def test_powersgd_sends_the_low_rank_factors_after_its_warm_up(runs):
    s = _per_step(runs["powersgd"])
    assert (s["bytes"].iloc[1:WARMUP] == 4 * _params(64)).all(), s
    assert (s["bytes"].iloc[WARMUP:] == 4 * _powersgd_values(64, 2)).all(), s
    assert (s["calls"].iloc[WARMUP:] == 3).all()  # vectors whole, then P, then Q


def test_local_sgd_syncs_one_step_in_k_after_its_warm_up(runs):
    s = _per_step(runs["localsgd"])
    assert (s["bytes"].iloc[1:WARMUP] == 4 * _params(64)).all(), s
    after = s["bytes"].iloc[WARMUP:]
    # the averager runs after the optimizer step of steps WARMUP, WARMUP+4, ...: in the step after
    averaged = [k for k in after.index if (k - 1 - WARMUP) % 4 == 0 and k > WARMUP]
    assert (after[averaged] == 4 * _params(64)).all(), s
    assert (after.drop(averaged) == 0).all(), s


def test_ddp_options_keep_the_bytes_and_change_the_buckets(runs):
    s = _per_step(runs["options"]).iloc[2:]  # from step 2: DDP rebuilt its buckets after step 0
    assert (s["bytes"] == 4 * _params(1024)).all()
    assert _buckets(1024, 8) < _buckets(1024, 1)  # the demo's own bucket_cap_mb=1, replaced
    assert (s["calls"] == _buckets(1024, 8)).all(), s
    rows = {r["fix"]: r for r in _fix_rows(runs["options"])}
    assert set(rows) == {"bucket-cap:8", "static-graph", "grad-as-bucket-view"}
    assert all(r["status"] == "applied" for r in rows.values())


def test_a_job_with_its_own_hook_or_no_ddp_runs_unchanged(runs):
    s = _per_step(runs["own_hook"]).iloc[1:]
    assert all(d == ["float16"] for d in s["dtypes"])  # the job's fp16 hook, not the fix's bf16
    (row,) = _fix_rows(runs["own_hook"])
    assert row["status"] == "skipped" and "its own DDP comm hook" in row["why"]
    (row,) = _fix_rows(runs["no_ddp"])
    assert row["status"] == "skipped" and "no DistributedDataParallel" in row["why"]
    assert load_run(runs["no_ddp"]).manifest["fixes"] == ["local-sgd:4"]


FSDP_JOB = HERE / "jobs" / "fsdp2_mlp.py"  # units l1, l2 and the root; 3 steps


def _fsdp_ops(run, op: str) -> pd.DataFrame:
    data = load_run(run)
    c = data.collectives[(data.collectives["rank"] == 0) & (data.collectives["op"].astype(str) == op)]
    m = data.marks[(data.marks["rank"] == 0) & (data.marks["kind"] == 1) & (data.marks["value"] == 0)]
    step = np.searchsorted(np.sort(m["t"].to_numpy()), c["t_issue"].to_numpy())
    return pd.DataFrame({"step": step, "bytes": c["in_bytes"].to_numpy(), "dtype": c["dtype"].astype(str).to_numpy()})


@pytest.fixture(scope="module")
def fsdp_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("fsdp")
    fixed = {name: _run(base, name, *args, job=[str(FSDP_JOB)]) for name, args in (
        ("no_reshard", ("--fix", "reshard-after-forward=false")), ("bf16", ("--fix", "bf16-reduce")))}
    return {"plain": fsdp2_run(tmp_path_factory), **fixed}  # the session's plain run, read only


def test_no_reshard_after_forward_drops_the_backward_all_gathers(fsdp_runs):
    # FSDP2: forward all-gathers each of the 3 units; with resharding (the default) the 2 non-root
    # units are resharded after forward and all-gathered again in backward.
    units, non_root = 3, 2
    plain = _fsdp_ops(fsdp_runs["plain"], "all_gather").groupby("step").size()
    fixed = _fsdp_ops(fsdp_runs["no_reshard"], "all_gather").groupby("step").size()
    assert plain.tolist() == [units + non_root] * 3, plain
    assert fixed.tolist() == [units] * 3, fixed
    (row,) = _fix_rows(fsdp_runs["no_reshard"])
    assert row["fix"] == "reshard-after-forward=false" and row["status"] == "applied"


def test_bf16_reduce_halves_the_reduce_scatter_bytes(fsdp_runs):
    plain = _fsdp_ops(fsdp_runs["plain"], "reduce_scatter")
    fixed = _fsdp_ops(fsdp_runs["bf16"], "reduce_scatter")
    assert set(plain["dtype"]) == {"float32"} and set(fixed["dtype"]) == {"bfloat16"}
    assert fixed["bytes"].sum() * 2 == plain["bytes"].sum()


def _facts(run, *extra):
    from commprof.analysis.result.model import Report
    from commprof.gate.runfacts import run_facts
    return run_facts(run, Report.from_dict(shared_report(run, *extra)))


def test_powersgd_bytes_are_checked_against_its_shapes_arithmetic(runs):
    # the worker reports PowerSGD's ratio from the model it applied to; here it equals the
    # demo's layer shapes' arithmetic, and the per-op check holds on the real bytes
    from commprof.fixes import parse
    from commprof.fixes.checks import bytes_checks, check_text, reported_details
    fixed = _facts(runs["powersgd"], "--warmup", str(WARMUP))
    (event,) = reported_details(fixed).values()
    assert event["bytes_ratio"] == pytest.approx(_powersgd_values(64, 2) / _params(64), rel=1e-12)
    (row,) = bytes_checks(parse("powersgd:2"), _facts(runs["baseline"]), fixed)
    assert row["op"] == "all_reduce" and row["ok"], row
    assert row["ratio"] == pytest.approx(_powersgd_values(64, 2) / _params(64), rel=1e-9)
    assert check_text(row).endswith("as expected")
    # the baseline (no fix) recorded its DDP model's shapes: PowerSGD is projected from it alone
    from commprof.fixes.projection import powersgd_bytes_ratio
    model = _facts(runs["baseline"])["ddp_model"]
    shapes = [tuple(r["shape"]) for r in model["params"] for _ in range(r["count"])]
    assert sorted(shapes) == sorted(_shapes(64)) and model["device"] == "cpu"
    assert powersgd_bytes_ratio(model, 2) == pytest.approx(_powersgd_values(64, 2) / _params(64), rel=1e-12)
    proc = commprof("whatif", str(runs["baseline"]), "--fix", "powersgd:2", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    change = json.loads(proc.stdout)["fix_change"]
    assert change["bytes_ratio"] == pytest.approx(_powersgd_values(64, 2) / _params(64), rel=1e-12)
    assert change["compute_known"] is True and change["compute_add_s"] > 0  # timed on this CPU


def test_bf16_reduce_bytes_are_checked_per_op(fsdp_runs):
    from commprof.fixes import parse
    from commprof.fixes.checks import bytes_checks, check_text
    rows = bytes_checks(parse("bf16-reduce"), _facts(fsdp_runs["plain"], "--warmup", "1"),
                        _facts(fsdp_runs["bf16"], "--warmup", "1"))
    assert [check_text(r) for r in rows] == ["all_gather x1.00 as expected",
                                             "reduce_scatter x0.50 as expected"], rows
