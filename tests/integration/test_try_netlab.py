"""`commprof try` on the shaped 200 Mbit/s link (issue 17): the demo on two "nodes"
(tests/netlab/pair.py), the unmodified script, fixes applied by commprof.

* one interleaved invocation (baseline, bf16-compress, local-sgd:4, twice: ``--repeat 2``, seed
  offsets 0 and 1): both cut step time, each measured step time is within the what-if's
  validated ±15 % of its projection (docs/whatif.md), the bytes change as each fix says, and
  bf16's loss curve stays within 1 % of the baseline's (the band docs/try.md documents);
* the choice: of the fixes judged ``ok`` within the measured noise band that reach the
  baseline's final loss sooner, the one with the largest effective speed-up (recomputed here from
  the judgements), its code line printed; with ``--loss-tolerance`` below every fix's difference
  (``--resume``: the same runs), none is chosen.

Skips, saying how busy, when other processes used more than a quarter of a core during the runs
(the same rule as tests/integration/test_whatif_netlab.py: wall-time ratios cannot be judged then).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from netlab import netlab_available
from runner import MAX_FOREIGN_CORES, ForeignLoad, commprof

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parents[1]
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


def test_the_choice_is_the_fastest_to_target_within_the_noise(tried):
    out, (doc, text, _) = tried
    eligible = [r for r in doc["results"] if r["applied"] and r["bytes_ok"] is not False
                and r["judgement"]["verdict"] == "ok" and r["judgement"]["time_to_target"]["reached"]
                and (r["judgement"]["time_to_target"]["speedup"] or 0) > 1]
    expected = max(eligible, key=lambda r: r["judgement"]["time_to_target"]["speedup"])["fix"] if eligible else None
    assert doc["chosen"] == expected
    for r in doc["results"]:
        assert "(noise ±" in text or "no noise band" in text
        assert r["judgement"]["baseline_runs"] == 2 and r["judgement"]["runs"] == 2
    if expected:
        assert "apply " in text and ("register_comm_hook" in text or "DDP(" in text)
        lowest = min(r["judgement"]["worse_by"] for r in doc["results"])
        tight, _, _ = _try(out, "bf16-compress/local-sgd:4", "--resume",
                           f"--loss-tolerance={lowest - 0.01:.6f}")
        assert tight["chosen"] is None
