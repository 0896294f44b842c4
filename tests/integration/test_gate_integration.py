"""Gates on real torchrun runs (gloo): no false failure between runs of the same job, a failure
with both values named when communication gets heavier."""
from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET

import pytest

from runner import HERE, MAX_FOREIGN_CORES, commprof, on_a_quiet_machine, torchrun

# A disturbed run is re-run (up to 3 attempts each): the fixture may take 3x its ~80 s.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
JOB = HERE / "jobs" / "gate_job.py"
STEPS = "30"
# Runs of one job on a shared 2-core machine differ by a few slow steps (a 46.8 -> 64.7 ms mean
# step was seen between two of them); the rules for "no false failure" are the ones docs/ci.md
# recommends for noisy runners: the per-step medians, under their own names.  A burst of other
# load during one run (CI saw one run at 18.8 % exposed against 7.8 % for the others, while the
# load averaged over all five stayed under the limit) makes one rank straggle and the other wait:
# each run is judged by its own load and re-run when it was disturbed.  The job's compute is a
# sleep (tests/jobs/gate_job.py): with matmuls, two runs on a quiet machine (0.03 cores of other
# load) were 6.4 % and 19.1 % exposed, from a per-step fraction that was bimodal (the ranks'
# compute competing with each other's gloo thread for the two cores) with a mix that changed
# from run to run; with the sleep, six runs spread over 4.7-6.9 %.
RULES = ["--max-regression", "exposed_comm_fraction_step_median=+5pp",
         "--max-regression", "step_time_median=+25%", "--max-regression", "bytes_per_step=+10%"]


def _run(out, extra_numel: int):
    proc = commprof("run", "-q", "--out", str(out), "--sample-hz", "0", "--",
                    *torchrun(JOB, STEPS, str(extra_numel)))
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Five runs of the same job (as baselines, plus the run directories) and one heavier run."""
    base = tmp_path_factory.mktemp("gate")
    same, loads = [], []
    for i in range(5):
        run, tried = on_a_quiet_machine(lambda attempt: _run(base / f"same{i}_{attempt}", 0))
        same.append(run)
        loads.append(tried)
        if tried[-1] > MAX_FOREIGN_CORES:  # still busy after 3 attempts: the test will skip
            return same, [], None, loads
    heavy = _run(base / "heavy", 2 * 1024 * 1024)  # + an 8 MiB all_reduce per step
    files = []
    for d in same:
        f = d.with_suffix(".baseline.json")
        proc = commprof("report", str(d), "--save-baseline", str(f))
        assert proc.returncode == 0, proc.stderr
        files.append(f)
    return same, files, heavy, loads


def test_runs_of_the_same_job_never_fail_the_gate(runs):
    same, files, _, loads = runs
    said = "; ".join(f"run {i}: " + ", ".join(f"{c:.2f}" for c in tried) + " cores"
                     for i, tried in enumerate(loads))
    if max(tried[-1] for tried in loads) > MAX_FOREIGN_CORES:  # separate runs say nothing then
        pytest.skip(f"machine too busy to judge: other processes' load per attempt: {said} "
                    f"(limit {MAX_FOREIGN_CORES})")
    outcomes = []
    for a, b in itertools.pairwise(range(5)):
        for base, cur in ((a, b), (b, a)):  # both orderings
            proc = commprof("gate", str(files[cur]), "--baseline", str(files[base]), *RULES)
            outcomes.append((base, cur, proc.returncode, proc.stdout))
    failed = [o for o in outcomes if o[2] != 0]
    assert not failed, f"other processes' load per attempt: {said}\n" + "\n".join(o[3] for o in failed)
    # A run directory against a baseline file takes the same path.
    proc = commprof("gate", str(same[1]), "--baseline", str(files[0]), *RULES)
    assert proc.returncode == 0, proc.stdout
    proc = commprof("compare", str(same[0]), str(same[1]))
    assert proc.returncode == 0
    bytes_row = next(l for l in proc.stdout.splitlines() if l.strip().startswith("bytes_per_step"))
    assert "within noise" in bytes_row or "same" in bytes_row


def test_heavier_communication_fails_and_names_the_kpi_and_both_values(runs, tmp_path):
    same, files, heavy, loads = runs
    if heavy is None:
        pytest.skip(f"machine too busy: other processes' peak load {loads[-1][-1]:.2f} cores")
    junit = tmp_path / "gate.xml"
    proc = commprof("gate", str(heavy), "--baseline", str(files[0]), *RULES, "--junit", str(junit))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    fails = [l for l in proc.stdout.splitlines() if l.startswith("FAIL --max-regression")]
    by_rule = {l.split(":")[0]: l for l in fails}
    assert "FAIL --max-regression bytes_per_step=+10%" in by_rule
    assert "FAIL --max-regression exposed_comm_fraction_step_median=+5pp" in by_rule
    line = by_rule["FAIL --max-regression bytes_per_step=+10%"]
    assert "bytes_per_step 1.05 MB -> 9.44 MB" in line  # 1 MiB, then 1 MiB + 8 MiB, per step
    # the time-weighted KPI (the report's number) fails it too
    proc = commprof("gate", str(heavy), "--baseline", str(files[0]), "--max-regression",
                    "exposed_comm_fraction=+5pp")
    assert proc.returncode == 1, proc.stdout
    suite = ET.parse(junit).getroot()
    assert int(suite.get("failures")) >= 2 and suite.get("tests") == "3"
    proc = commprof("compare", str(same[0]), str(heavy))
    row = next(l for l in proc.stdout.splitlines() if l.strip().startswith("exposed_comm_fraction "))
    assert row.rstrip().endswith("worse")
