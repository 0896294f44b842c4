"""Where GPU figures exist they are the truth (issue 15, item 5; docs/kpis.md, "Time basis").

Synthetic NCCL runs written through commprof's real writer (tests/synthetic.py): the host sees
each all_reduce's launch only (it returns and completes at once), and GPU windows hold kernels
whose times the tests choose.  The expected KPIs are painted here, on a 1 µs grid, from the
kernels the test wrote — independently of commprof's interval code:

* a ``commprof run`` with GPU windows: the headline, ranks[], steps, verdict, what-if and gate
  all use the GPU figures of the windows' measured steps, and ``kpis.host`` keeps the host's;
* an NCCL run without GPU figures: every communication time is null ("GPU timeline not
  measured"), the verdict says so, what-if refuses and the gate cannot verify, while the bytes
  stay exact;
* a gloo run is unchanged (``time_basis`` ``host``, no ``kpis.host``).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from commprof.analysis.outcome.assemble import assemble
from commprof.analysis.outcome.summary import summarize
from commprof.cli import main
from commprof.gate import measure
from synthetic import MS, Kernel, nccl_rank, periodic_rank, write_run

US = 1_000
STEP_MS = 100


def _kernels(rank: int, first: int, n: int) -> list[Kernel]:
    """Per step k: two compute kernels and two NCCL kernels (overlapping each other), of lengths
    that vary by step and rank, so time-weighting, unions and overlap all matter."""
    out = []
    for k in range(first, first + n):
        t0 = k * STEP_MS * MS
        j = (k - first) + 3 * rank
        out += [Kernel("void at::native::gemm<float>", t0 + 5 * MS, t0 + (30 + 4 * j) * MS, k,
                       launch=t0 + MS),
                Kernel("sm90_xmma_gemm_bf16", t0 + (40 + j) * MS, t0 + 55 * MS, k, launch=t0 + 2 * MS),
                Kernel("ncclDevKernel_AllReduce_Sum_f32_RING_LL", t0 + 20 * MS,
                       t0 + (45 + 3 * j) * MS, k, launch=t0 + 50 * MS),
                Kernel("ncclKernel_AllGather_RING_LL_Sum_int8_t", t0 + (50 + j) * MS,
                       t0 + (70 + 2 * j) * MS, k, launch=t0 + 50 * MS),
                Kernel("Memcpy DtoH (Device -> Pinned)", t0 + 80 * MS, t0 + 81 * MS, k,
                       category="memcpy", launch=t0 + 60 * MS)]
    return out


def _gpu_rank(rank: int, window: tuple[int, int] = (4, 4), steps: int = 10):
    spec = nccl_rank(rank, steps=steps, step_ms=STEP_MS, window=None)
    spec.gpu = _kernels(rank, *window)
    spec.gpu_windows = [(0, *window)]
    return spec


def _painted(kernels: list[Kernel]) -> tuple[float, float]:
    """(comm s, exposed comm s) of one step's kernels, painted on a 1 µs grid."""
    lo = min(k.start for k in kernels)
    hi = max(k.end for k in kernels)
    comm = np.zeros((hi - lo) // US + 1, bool)
    comp = np.zeros_like(comm)
    for k in kernels:
        if k.category != "kernel":
            continue
        target = comm if k.name.startswith("nccl") else comp
        target[(k.start - lo) // US:(k.end - lo) // US] = True
    return comm.sum() * US / 1e9, (comm & ~comp).sum() * US / 1e9


def _expected(ranks: list[int], window: tuple[int, int], warmup: int = 2) -> dict:
    per = []  # (rank, step, comm, exposed)
    for r in ranks:
        for k in range(*(window[0], window[0] + window[1])):
            if k < warmup:
                continue
            c, e = _painted([x for x in _kernels(r, *window) if x.step == k])
            per.append((r, k, c, e))
    step_s = STEP_MS / 1e3  # every host step is 100 ms
    comm = sum(p[2] for p in per)
    exposed = sum(p[3] for p in per)
    return {"steps": len(per), "comm_fraction": comm / (step_s * len(per)),
            "exposed_comm_fraction": exposed / (step_s * len(per)),
            "comm_s_per_step": comm / len(per), "exposed_comm_s_per_step": exposed / len(per),
            "per_rank": {r: sum(p[3] for p in per if p[0] == r) / (step_s * sum(p[0] == r for p in per))
                         for r in ranks}}


def _report(run):
    """The run's typed report (:class:`~commprof.analysis.result.model.Report`)."""
    return assemble(summarize(run))


def _doc(run) -> dict:
    """The run's report document, as plain JSON."""
    return json.loads(json.dumps(_report(run).to_dict()))


@pytest.fixture(scope="module")
def gpu_run(tmp_path_factory):
    return write_run(tmp_path_factory.mktemp("gpu") / "run", [_gpu_rank(0), _gpu_rank(1)])


@pytest.fixture(scope="module")
def launch_run(tmp_path_factory):
    return write_run(tmp_path_factory.mktemp("nccl") / "run",
                     [nccl_rank(r, steps=10, window=None) for r in (0, 1)])


def test_the_headline_is_the_gpu_timeline_of_the_window_steps(gpu_run):
    doc = _doc(gpu_run)
    k, want = doc["kpis"], _expected([0, 1], (4, 4))
    assert k["time_basis"] == "gpu_windows"
    for key in ("comm_fraction", "exposed_comm_fraction", "comm_s_per_step", "exposed_comm_s_per_step"):
        assert k[key] == pytest.approx(want[key], rel=1e-3), key
    assert k["step_time_s"] == pytest.approx(0.1)  # the steps' wall time
    assert k["compute_s_per_step"] + k["comm_s_per_step"] == pytest.approx(k["step_time_s"])
    assert k["exposed_comm_fraction_max_rank"] == pytest.approx(max(want["per_rank"].values()), rel=1e-3)
    for r in doc["ranks"]:
        assert r["exposed_comm_fraction"] == pytest.approx(want["per_rank"][r["rank"]], rel=1e-3)
        assert r["steps"] == 4 and r["steps_total"] == 10
    assert [row["step"] for row in doc["steps"]["per_step"]] == [4, 5, 6, 7]
    assert k["bytes_per_step"] == 4_000_000  # exact, from the host
    assert 0 < k["gpu_overlap_ratio"] < 1 and k["gpu_memcpy_fraction"] > 0


def test_host_figures_stay_labelled_host_side(gpu_run, launch_run):
    k = _doc(gpu_run)["kpis"]
    host_only = _doc(launch_run)["kpis"]["host"]  # the same host records, without GPU windows
    assert k["host"]["exposed_comm_fraction"] == host_only["exposed_comm_fraction"] == 0.0
    assert k["host"]["step_time_s"] == pytest.approx(0.1)
    assert k["host"]["comm_fraction"] == pytest.approx(host_only["comm_fraction"])


def test_verdict_whatif_and_gate_use_the_gpu_figures(gpu_run, tmp_path):
    doc = _doc(gpu_run)
    want = _expected([0, 1], (4, 4))
    v = doc["assessment"]
    assert v["exposed_fraction"] == pytest.approx(want["exposed_comm_fraction"], rel=1e-3)
    assert v["basis"] == "step time (GPU timeline)" and "GPU timeline" in doc["verdict"]
    inputs = doc["whatif"][0]["inputs"]
    assert inputs["steps"] == want["steps"]
    assert inputs["exposed_s_per_step"] == pytest.approx(want["exposed_comm_s_per_step"], rel=1e-3)
    overlap = next(w for w in doc["whatif"] if w["name"] == "perfect overlap")
    assert overlap["step_time_s"] == pytest.approx(0.1 - want["exposed_comm_s_per_step"], rel=1e-3)
    m = measure.load(str(gpu_run))
    assert m.values["exposed_comm_fraction"] == pytest.approx(want["exposed_comm_fraction"], rel=1e-3)
    assert m.run["time_basis"] == "gpu_windows" and len(m.series["exposed_s"]) == 4
    limit = want["exposed_comm_fraction"]
    assert main(["gate", str(gpu_run), "--max-exposed-comm-fraction", f"{limit * 1.05:.4f}"]) == 0
    assert main(["gate", str(gpu_run), "--max-exposed-comm-fraction", f"{limit * 0.95:.4f}"]) == 1


def test_window_steps_in_warm_up_are_left_out(tmp_path):
    run = write_run(tmp_path / "run", [_gpu_rank(0, window=(1, 3)), _gpu_rank(1, window=(1, 3))])
    doc = _doc(run)
    assert [row["step"] for row in doc["steps"]["per_step"]] == [2, 3]  # step 1 is warm-up
    want = _expected([0, 1], (1, 3))
    assert doc["kpis"]["exposed_comm_fraction"] == pytest.approx(want["exposed_comm_fraction"], rel=1e-3)


def test_nccl_without_gpu_figures_says_not_measured(launch_run, tmp_path, capsys):
    doc = _doc(launch_run)
    k = doc["kpis"]
    assert k["time_basis"] == "host_launch"
    for key in ("comm_fraction", "exposed_comm_fraction", "comm_s_per_step", "exposed_comm_s_per_step",
                "comm_fraction_wall", "exposed_comm_fraction_wall", "busbw_gbps"):
        assert k[key] is None, key
    assert k["bytes_per_step"] == 4_000_000 and k["step_time_s"] == pytest.approx(0.1)
    assert k["host"]["comm_fraction"] is not None
    assert doc["assessment"]["level"] == "unmeasured"
    assert doc["verdict"].startswith("GPU timeline not measured")
    assert all(r["comm_fraction"] is None and r["exposed_comm_s_per_step"] is None for r in doc["ranks"])
    assert all(row["exposed_comm_fraction"] is None for row in doc["steps"]["per_step"])
    assert doc["whatif"] == [] and any(n["kind"] == "gpu_timeline" for n in doc["note_items"])
    assert main(["whatif", str(launch_run), "--bandwidth", "x2"]) == 2
    assert "GPU timeline not measured" in capsys.readouterr().err
    assert main(["gate", str(launch_run), "--max-exposed-comm-fraction", "0.5"]) == 1
    assert "GPU timeline not measured" in capsys.readouterr().out
    assert main(["gate", str(launch_run), "--max-regression", "step_time=+50%",
                 "--baseline", str(launch_run)]) == 0  # step time is still measured
    out = tmp_path / "b.json"
    assert main(["report", str(launch_run), "--save-baseline", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert saved["run"]["time_basis"] == "host_launch" and saved["series"]["exposed_s"] == []


def test_a_gloo_run_is_timed_on_the_host(tmp_path):
    doc = _doc(write_run(tmp_path / "run", [periodic_rank(0, steps=5), periodic_rank(1, steps=5)]))
    assert doc["kpis"]["time_basis"] == "host" and "host" not in doc["kpis"]
    assert doc["assessment"]["basis"] == "step time"


def test_every_renderer_labels_the_time_basis(gpu_run, launch_run, tmp_path):
    from commprof.report.terminal import TerminalRenderer
    gpu_text = TerminalRenderer().render(_report(gpu_run))
    assert "communication (GPU)" in gpu_text and "host-side" in gpu_text and "GPU timeline" in gpu_text
    launch_text = TerminalRenderer().render(_report(launch_run))
    assert "GPU timeline not measured" in launch_text
    page = tmp_path / "r.html"
    assert main(["report", str(gpu_run), "-o", str(page)]) == 0
    html = page.read_text()
    assert "host-side (launch) times" in html and "GPU timeline" in html
