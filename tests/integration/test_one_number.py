"""One number per KPI, everywhere (real gloo run with a straggler and uneven steps).

The same KPI read from the terminal report, the JSON document, ``commprof compare``,
``commprof gate --json`` and ``commprof whatif`` (no change) is the same number; the verdict's
bound is at least every what-if speed-up; the parts of the step add up; and the verdict's words
are the same in the terminal, HTML, JSON and the ``commprof run`` closing line.
"""
from __future__ import annotations

import json

import pytest

from commprof.format.units import fmt_pct
from runner import HERE, commprof, report_json, torchrun

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("one")
    run_dir = tmp / "run"
    proc = commprof("run", "--out", str(run_dir), "--",
                    *torchrun(HERE / "jobs" / "uneven_straggler.py", "24"))
    assert proc.returncode == 0, proc.stderr
    return tmp, run_dir, proc.stderr


def test_the_same_kpi_everywhere(run):
    tmp, run_dir, _ = run
    doc = report_json(run_dir)
    k = doc["kpis"]
    assert [s for s in doc["stragglers"] if s["significant"]], doc["stragglers"]  # the setup holds
    text = commprof("report", str(run_dir), "--width", "200").stdout
    assert (f"in flight {fmt_pct(k['comm_fraction'])} of step time, exposed "
            f"{fmt_pct(k['exposed_comm_fraction'])}") in text
    gate = tmp / "gate.json"
    proc = commprof("gate", str(run_dir), "--max-comm-fraction", "0.99",
                    "--max-exposed-comm-fraction", "0.99", "--max-step-time", "60s", "--json", str(gate))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    gate_doc = json.loads(gate.read_text())
    assert gate_doc["assessment"]["sentence"] == doc["verdict"]  # the gate's verdict: the same words
    assert f"verdict: {doc['verdict']}" in " ".join(proc.stdout.split())
    measured = {r["metric"]: r["measured"] for r in gate_doc["rules"]}
    assert measured == {"comm_fraction": k["comm_fraction"],
                        "exposed_comm_fraction": k["exposed_comm_fraction"],
                        "step_time": k["step_time_s"]}
    same = json.loads(commprof("whatif", str(run_dir), "-f", "json").stdout)
    assert same["step_time_s"] == pytest.approx(k["step_time_s"], rel=1e-12)
    assert same["comm_fraction"] == pytest.approx(k["comm_fraction"], rel=1e-12)
    assert same["exposed_comm_fraction"] == pytest.approx(k["exposed_comm_fraction"], rel=1e-12)
    cmp = commprof("compare", str(run_dir), str(run_dir), "--width", "200").stdout
    row = next(line for line in cmp.splitlines() if line.strip().startswith("exposed_comm_fraction "))
    assert f"{k['exposed_comm_fraction'] * 100:.2f}%" in row  # the gate tables show 2 decimals


def test_bound_and_parts_add_up(run):
    _, run_dir, _ = run
    doc = report_json(run_dir)
    k, v = doc["kpis"], doc["assessment"]
    assert v["speedup_bound"] >= max(w["speedup"] for w in doc["whatif"]) - 1e-9
    assert k["compute_s_per_step"] + k["comm_s_per_step"] == pytest.approx(k["step_time_s"])
    assert k["exposed_comm_s_per_step"] + k["hidden_comm_s_per_step"] == pytest.approx(k["comm_s_per_step"])
    # the straggler's cost is in flight; the part that blocked the others is within exposed
    note = next(n for n in doc["note_items"] if n["kind"] == "straggler")
    blocked_ms = float(note["text"].split("at most ")[1].split(" ms")[0])
    assert blocked_ms <= k["exposed_comm_s_per_step"] * 1e3 + 0.05


def test_verdict_words_are_the_same_everywhere(run):
    tmp, run_dir, run_stderr = run
    doc = report_json(run_dir)
    sentence = doc["verdict"]
    assert doc["assessment"]["sentence"] == sentence
    text = commprof("report", str(run_dir), "--width", "400").stdout
    assert text.rstrip().splitlines()[-1].strip() == sentence
    html = tmp / "r.html"
    commprof("report", str(run_dir), "-o", str(html))
    import html as html_lib
    assert html_lib.escape(sentence) in html.read_text()
    assert sentence in " ".join(run_stderr.split())
