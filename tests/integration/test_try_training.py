"""The loss commprof records is what the job optimizes, and the job's own metric is recorded
(issue 25, items 2 and 10).

* A real 2-rank job with gradient accumulation (tests/jobs/heldout_train.py, ``loss / N`` per
  micro-batch) logs its own loss of every step; commprof's curve equals the mean over ranks of
  those logs (the sum of the scaled micro-batch losses), and names the convention "scaled-sum".
* ``commprof run --max-steps N`` (``try --steps``) on a job that calls ``commprof.train_steps``:
  training ends at step N and the job's evaluation still runs — ``commprof.metric``'s value is the
  one the job printed, recorded at step N.
* :func:`step_losses` on synthetic frames: unscaled accumulation is averaged ("mean").
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from commprof.analysis.host.training import step_losses
from runner import HERE, commprof, report_json, torchrun

JOB = HERE / "jobs" / "heldout_train.py"


@pytest.mark.slow
def test_accumulated_loss_is_what_the_job_optimizes_and_the_metric_survives_max_steps(tmp_path):
    run, log = tmp_path / "run", tmp_path / "own"
    proc = commprof("run", "--out", str(run), "--quiet", "--sample-hz", "0", "--max-steps", "12",
                    "--", *torchrun(JOB, "--steps", "40", "--accumulate", "3", "--log-loss", str(log)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    own = [dict(np.loadtxt(f"{log}.rank{r}", ndmin=2)) for r in (0, 1)]
    assert len(own[0]) == 12  # training stopped at step 12 (train_steps), the job went on
    training = report_json(run)["training"]
    loss = training["loss"]
    assert loss["convention"] == "scaled-sum"
    expected = [np.mean([o[s] for o in own]) for s in sorted(own[0])]
    assert loss["steps"] == list(range(12))
    assert loss["values"] == pytest.approx(expected, rel=1e-6)
    printed = float(re.search(r"val_acc ([0-9.]+)", proc.stdout + proc.stderr).group(1))
    (metric,) = training["metrics"]
    assert metric["name"] == "val_acc" and metric["higher_is_better"] is True
    assert metric["steps"] == [12] and metric["final"] == pytest.approx(printed, abs=5e-5)


def test_unscaled_accumulation_is_averaged_and_single_backward_is_itself():
    frame = pd.DataFrame({"step": [0, 0, 1, 1, 2], "value": [2.0, 4.0, 1.0, 3.0, 5.0],
                          "scale": [np.nan] * 5, "t": range(5)})
    steps, convention = step_losses(frame)
    assert convention == "mean" and steps["value"].tolist() == [3.0, 2.0, 5.0]
    scaled = frame.assign(scale=[2.0, 2.0, 2.0, 2.0, np.nan])
    steps, convention = step_losses(scaled)
    assert convention == "scaled-sum" and steps["value"].tolist() == [6.0, 4.0, 5.0]
    single = frame[frame["step"] == 2]
    assert step_losses(single)[1] == "single"
