"""`commprof try` on the shaped 200 Mbit/s link (issue 17): the demo on two "nodes"
(tests/netlab/pair.py), the unmodified script, fixes applied by commprof.

* one interleaved invocation (baseline, bf16-compress, local-sgd:4): both cut step time, each
  measured step time is within the what-if's validated ±15 % of its projection (docs/whatif.md),
  the bytes change as each fix says, and bf16's loss curve stays within 1 % of the baseline's
  (the band docs/try.md documents);
* ``try auto`` on the same runs (``--resume``; it runs only the candidates not run yet) picks a
  fix and prints its code line; with the tolerance made tighter than the winner's loss
  difference, the winner is rejected for its loss.

Skips, saying how busy, when other processes used more than a quarter of a core during the runs
(the same rule as tests/test_whatif_netlab.py: wall-time ratios cannot be judged then).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from netlab import netlab_available
from runner import MAX_FOREIGN_CORES, ForeignLoad, commprof

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parent
DEMO = HERE.parent / "commprof" / "examples" / "demo_train.py"
PAIR = [sys.executable, str(HERE / "netlab" / "pair.py"), "--rate", "200", "--",
        str(DEMO), "--steps", "30", "--width", "512"]
LOSS_BAND = 0.01


def _try(out: Path, spec: str, *flags: str) -> tuple[dict, str, float]:
    with ForeignLoad() as load:
        proc = commprof("try", spec, "--fix-warmup", "3", "--out", str(out), "--json",
                        str(out / f"{spec.replace('/', '_')}.json"), "--quiet", *flags, "--", *PAIR,
                        timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / f"{spec.replace('/', '_')}.json").read_text()), proc.stdout, load.cores


@pytest.fixture(scope="module")
def tried(tmp_path_factory):
    why = netlab_available()
    if why:
        pytest.skip(f"netlab unavailable: {why}")
    out = tmp_path_factory.mktemp("try")
    return out, _try(out, "bf16-compress/local-sgd:4")


def test_fixes_cut_step_time_as_projected(tried):
    _, (doc, text, foreign) = tried
    if foreign > MAX_FOREIGN_CORES:
        pytest.skip(f"machine too busy to judge: other processes used {foreign:.2f} cores")
    results = {r["fix"]: r for r in doc["results"]}
    for fix in ("bf16-compress", "local-sgd:4"):
        r = results[fix]
        print(f"{fix}: {r['step_time_base'] * 1e3:.1f} -> {r['step_time'] * 1e3:.1f} ms, projected "
              f"{r['projected_step_time'] * 1e3:.1f} ms ({r['measured_vs_projected']:.3f})")
        assert r["applied"] and r["bytes_ok"], r
        assert r["step_time"] < r["step_time_base"]
        assert r["measured_vs_projected"] == pytest.approx(1.0, abs=0.15), r
    assert "bytes per step" in text and "what-if projected" in text


def test_bf16_loss_stays_in_its_band(tried):
    _, (doc, _, _) = tried
    loss = {r["fix"]: r for r in doc["results"]}["bf16-compress"]["loss"]
    assert loss["common_steps"] == 30 and loss["mean_rel_diff_last_n"] <= LOSS_BAND, loss


def test_auto_picks_a_fix_and_a_tight_tolerance_rejects_it(tried):
    out, _ = tried
    doc, text, _ = _try(out, "auto", "--resume")
    assert doc["chosen"] in {r["fix"] for r in doc["results"]}
    assert "apply " in text and "register_comm_hook" in text or "DDP(" in text
    verdicts = {v["fix"]: v["verdict"] for v in doc["verdicts"]}
    # the demo's 3 DDP buckets: PowerSGD cannot run on gloo (docs/try.md): ruled out from the
    # baseline before running, and said why
    ruled = {r["fix"]: r["why"] for r in doc["ruled_out"]}
    assert "powersgd:1" not in verdicts, verdicts
    assert ruled["powersgd:1"].startswith("PowerSGD on gloo needs a single DDP bucket"), ruled
    winner = {r["fix"]: r for r in doc["results"]}[doc["chosen"]]
    diff = winner["loss"]["mean_rel_diff_last_n"]
    tight, text, _ = _try(out, "auto", "--resume", "--loss-tolerance", f"{diff / 2:.3g}")
    verdicts = {v["fix"]: v["verdict"] for v in tight["verdicts"]}
    assert verdicts[doc["chosen"]].startswith("rejected: loss differs"), verdicts
    assert tight["chosen"] != doc["chosen"]
