"""``commprof try``'s decision on a real 2-rank job with a held-out metric
(tests/jobs/heldout_train.py; issue 25 acceptance):

* four baselines of the job with different seeds (``COMMPROF_SEED_OFFSET`` 0 to 3), judged two
  against two as ``commprof try --repeat 2`` judges a fix: within noise — on the job's metric and
  on the loss;
* ``commprof try --steps 12 --repeat 1`` (a window of 10 steps after the 2-step warm-up) refuses a verdict:
  "too short", with the steps it would need (the warm-up + 4 tails of MIN_TAIL steps), and the
  held-out metric is still taken (the job calls ``commprof.train_steps``).
"""
from __future__ import annotations

import json

import pytest

from commprof.analysis.outcome.convergence import MIN_TAIL
from commprof.analysis.result.model import Report
from commprof.capture.config import ENV_SEED_OFFSET
from commprof.cli.try_verdict import decide
from runner import HERE, commprof, report_json, torchrun

pytestmark = pytest.mark.slow
JOB = HERE / "jobs" / "heldout_train.py"


def test_baselines_with_different_seeds_are_within_noise(tmp_path):
    docs = []
    for offset in range(4):
        run = tmp_path / f"base{offset}"
        proc = commprof("run", "--out", str(run), "--quiet", "--sample-hz", "0", "--",
                        *torchrun(JOB, "--steps", "40"), env={ENV_SEED_OFFSET: str(offset)})
        assert proc.returncode == 0, proc.stderr[-3000:]
        docs.append(report_json(run))
    finals = [d["training"]["loss"]["values"][-1] for d in docs]
    assert len(set(finals)) == 4  # the seeds differ: so do the runs
    reports = [Report.from_dict(d) for d in docs]  # decide reads the typed report
    on_metric = decide(reports[:2], reports[2:], "baseline", 2)
    assert on_metric["metric"] == "val_acc" and on_metric["band"] is not None
    assert on_metric["quality_verdict"] == "ok", on_metric
    on_loss = decide(reports[:2], reports[2:], "baseline", 2, metric="none-reported")
    assert on_loss["metric"] is None and on_loss["basis"].startswith("training loss alone")
    assert on_loss["quality_verdict"] == "ok", on_loss


def test_a_run_too_short_to_judge_says_so_and_how_long_would_do(tmp_path):
    out = tmp_path / "try"
    proc = commprof("try", "static-graph", "--steps", "12", "--repeat", "1", "--out", str(out), "--json",
                    str(tmp_path / "try.json"), "--quiet", "--", *torchrun(JOB, "--steps", "100"),
                    timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((tmp_path / "try.json").read_text())
    (r,) = doc["results"]
    j = r["judgement"]
    assert j["verdict"] == "too short" and j["short"]["steps_needed"] == 2 + 4 * MIN_TAIL
    assert f"--steps {2 + 4 * MIN_TAIL}" in proc.stdout and "too short" in proc.stdout
    assert j["metric"] == "val_acc" and j["band"] is None  # one run a side: no band
    assert doc["chosen"] is None
