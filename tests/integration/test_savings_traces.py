"""The savings model on every real GPU trace (../shared/gpu_traces/): the verdict's bound is at least
every what-if speed-up, and every what-if speed-up is at most the physical bound computed here,
straight from the trace's own intervals (not from commprof's numbers).

Physical bound (per rank-step, the GPU ops launched inside its ``ProfilerStep#N``): the step spans
its ops (first start → last end); no change to communication can make it shorter than the union
of its computation kernels, nor — for overlap, which hides communication behind work that exists
— shorter than max(computation, communication).  So every speed-up ≤ Σ span ÷ Σ |∪ computation|,
and perfect overlap's ≤ Σ span ÷ Σ max(|∪ computation|, |∪ communication|).  Communication here is
named broadly (a superset of what any classifier calls it), which can only loosen the first bound.
"""
from __future__ import annotations

import gzip
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from shared_reports import report_cli

# ../shared/gpu_traces beside the checkout (GPU_TRACES_DIR overrides it, e.g. from a worktree)
SHARED = Path(os.environ.get("GPU_TRACES_DIR")
              or Path(__file__).resolve().parents[2].parent / "shared" / "gpu_traces")
TRACES = sorted([*SHARED.glob("*.json.gz"), *[d for d in SHARED.iterdir() if d.is_dir()]]) \
    if SHARED.is_dir() else []
COMM = re.compile(r"nccl|rccl|msccl|nvshmem|multimem|one_?shot|two_?shot|all_?reduce|all_?gather|"
                  r"reduce_?scatter|all_?to_?all|sendrecv|deep_?ep|dispatch|combine|onerankreduce|"
                  r"cross_?device|custom_?ar", re.I)
pytestmark = pytest.mark.skipif(not TRACES, reason=f"{SHARED} (real GPU traces) is absent")


def _ns(us) -> int:
    return int(round(float(us) * 1000))


def _union(intervals: list[tuple[int, int]]) -> int:
    total, end = 0, None
    for s, e in sorted(intervals):
        if end is None or s > end:
            total += e - s
            end = e
        elif e > end:
            total += e - end
            end = e
    return total


def rank_steps(path: Path) -> list[tuple[int, int, int]]:
    """(span, |∪ computation kernels|, |∪ communication kernels|) per step of one rank's trace."""
    doc = json.loads(gzip.decompress(path.read_bytes()))
    runtime, steps, ops = {}, {}, []
    for e in doc["traceEvents"]:
        if not isinstance(e, dict) or e.get("ph") != "X" or "ts" not in e:
            continue
        cat, a = str(e.get("cat", "")).lower(), e.get("args") or {}
        if (cat.endswith("runtime") or cat.endswith("driver")) and "correlation" in a:
            runtime.setdefault(a["correlation"], _ns(e["ts"]))
        elif not cat.startswith("gpu_") and re.fullmatch(r"ProfilerStep#\d+", str(e.get("name"))):
            steps[e["name"]] = (_ns(e["ts"]), _ns(e["ts"]) + _ns(e.get("dur", 0)))
        elif cat in ("kernel", "gpu_memcpy", "gpu_memset"):
            comm = cat == "kernel" and (COMM.search(str(e["name"])) is not None
                                        or "Collective name" in a)
            kind = "comm" if comm else "comp" if cat == "kernel" else "mem"
            s = _ns(e["ts"])
            ops.append((s, s + _ns(e.get("dur", 0)), kind, a.get("correlation")))
    out = []
    for lo, hi in steps.values():
        mine = [o for o in ops if o[3] in runtime and lo <= runtime[o[3]] <= hi]
        if not mine:
            continue
        span = max(o[1] for o in mine) - min(o[0] for o in mine)
        comp = _union([(s, e) for s, e, k, _ in mine if k == "comp"])
        comm = _union([(s, e) for s, e, k, _ in mine if k == "comm"])
        if span > 0:
            out.append((span, comp, comm))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("trace", TRACES, ids=[t.name for t in TRACES])
def test_no_what_if_beats_the_verdict_or_the_timeline(trace):
    proc = report_cli(trace)  # run once per session: test_golden_reports reads the same report
    if proc.returncode == 2:  # a trace commprof refuses (one clear line): nothing to project
        assert proc.stderr.startswith("commprof: error: ") and proc.stderr.count("\n") == 1
        pytest.skip(proc.stderr.strip())
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    a = doc["assessment"]
    for w in doc["whatif"]:
        if a["speedup_bound"] is not None:
            assert w["speedup"] <= a["speedup_bound"] * (1 + 1e-9), (w["name"], a)
        if w["name"] == "perfect overlap" and a["speedup_if_hidden"] is not None:
            assert w["speedup"] <= a["speedup_if_hidden"] * (1 + 1e-9)
    if not doc["whatif"]:
        return
    files = sorted(p for p in trace.iterdir() if p.name.endswith(".json.gz")) if trace.is_dir() else [trace]
    rows = [r for f in files for r in rank_steps(f)]
    span = np.array([r[0] for r in rows], dtype="float64")
    comp = np.array([r[1] for r in rows], dtype="float64")
    comm = np.array([r[2] for r in rows], dtype="float64")
    # the steps are the same: commprof's mean step is the mean span of the ops each step launched
    assert doc["kpis"]["step_time_s"] == pytest.approx(span.mean() / 1e9, rel=1e-3)
    physical = span.sum() / comp.sum() if comp.sum() > 0 else np.inf
    hidden = span.sum() / np.maximum(comp, comm).sum()
    for w in doc["whatif"]:
        assert w["speedup"] <= physical * (1 + 1e-6), (w["name"], physical)
    overlap = next(w for w in doc["whatif"] if w["name"] == "perfect overlap")
    assert overlap["speedup"] <= hidden * (1 + 1e-6), hidden
    if a["speedup_bound"] is not None:  # and the verdict's own figures are physical
        assert a["speedup_bound"] <= physical * (1 + 1e-6)
        assert a["speedup_if_hidden"] <= hidden * (1 + 1e-6)
