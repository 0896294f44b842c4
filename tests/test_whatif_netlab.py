"""What-if projections checked by making the change for real (2 "nodes" over a shaped veth).

Baseline: the DDP demo (0.8 M parameters) on a 200 Mbit/s link. Each projection is then compared
with a real run with the change made: the link at 400 Mbit/s (bandwidth x2), DDP's
fp16_compress_hook (bytes /2), and gradient accumulation over 4 micro-batches with no_sync
(sync every 4 steps; commprof's step is then 4 micro-batches, compared per micro-batch).
Tolerance: ±15 % of the projected step time (the mean of two baseline runs' projections).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from netlab import Lab, netlab_available
from runner import report_json

pytestmark = pytest.mark.slow
DEMO = Path(__file__).resolve().parent.parent / "commprof" / "examples" / "demo_train.py"


def _run(tmp: Path, name: str, rate: int, *args: str) -> dict:
    with Lab(rate_mbit=rate) as lab:
        wrap = [[sys.executable, "-m", "commprof", "run", "-q", "--out", str(tmp / f"{name}{i}"),
                 "--sample-hz", "0", "--"] for i in (0, 1)]
        a, b = lab.torchrun_pair([str(DEMO), "--steps", "30", "--width", "512", *args],
                                 wrapper_a=wrap[0], wrapper_b=wrap[1], cwd=tmp, timeout=300)
        assert a.returncode == 0 and b.returncode == 0, a.stderr[-2000:] + b.stderr[-2000:]
    return report_json(tmp / f"{name}0")


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    """Two baseline runs: this machine's run-to-run noise is about ±5 % of the step time, and a
    projection inherits its baseline's; the projections of both are averaged."""
    why = netlab_available()
    if why:
        pytest.skip(f"netlab unavailable: {why}")
    tmp = tmp_path_factory.mktemp("whatif")
    return tmp, [_run(tmp, f"base{i}_", 200) for i in range(2)]


@pytest.mark.parametrize("scenario, rate, args, per_step", [
    ("bandwidth x2", 400, (), 1),
    ("bytes /2", 200, ("--compress", "fp16"), 1),
    ("sync every 4 steps", 200, ("--accumulate", "4"), 4),
])
def test_projection_matches_the_real_change(baseline, scenario, rate, args, per_step):
    tmp, bases = baseline
    projected = sum({w["name"]: w for w in b["whatif"]}[scenario]["step_time_s"] for b in bases) / len(bases)
    base = bases[0]
    doc = _run(tmp, scenario.replace(" ", "_").replace("/", "div"), rate, *args)
    measured = doc["steps"]["median_s"] / per_step
    print(f"{scenario}: baseline {base['steps']['median_s'] * 1e3:.1f} ms, projected "
          f"{projected * 1e3:.1f} ms, measured {measured * 1e3:.1f} ms ({measured / projected:.3f})")
    assert measured == pytest.approx(projected, rel=0.15)
