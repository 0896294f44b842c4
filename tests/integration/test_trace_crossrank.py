"""Cross-rank analysis of PyTorch-profiler traces: waiting for the last rank vs transfer.

Every expected figure is computed here from the definition (docs/kpis.md, "Wait vs transfer on
GPU traces"), straight from the trace JSON (parsed with json/gzip in the test) or from the true
times the synthetic traces were written from — never by calling commprof's analysis:
per matched instance, ``L`` = the latest kernel start over the ranks; wait of rank r =
clip(L − start_r, 0, duration_r); transfer = duration_r − wait.
"""
from __future__ import annotations

import gzip
import json
import statistics
from pathlib import Path

import pytest

from commprof.analysis.result.model import Report
from commprof.cli.report import build_report
from commprof.errors import UsageError
from commprof.format.kineto import read_trace
from commprof.report.renderers import renderers
from runner import commprof
from shared_reports import report_cli

ROOT = Path(__file__).resolve().parents[2]
# ../shared beside the repository (a clone), or beside the worktrees' folder
SHARED = next((p for p in (ROOT.parent / "shared" / "gpu_traces", ROOT.parent.parent / "shared" / "gpu_traces")
               if p.is_dir()), ROOT.parent / "shared" / "gpu_traces")
DLRM = SHARED / "param_dlrm_v100_8ranks"
needs_dlrm = pytest.mark.skipif(not DLRM.is_dir(), reason=f"{DLRM} is absent (../shared/gpu_traces/)")


# ---- the oracle ------------------------------------------------------------------------------------

def split(instances: list[dict]) -> dict:
    """{rank: [wait_ns, transfer_ns, times last]} over instances {rank: (start_ns, end_ns)}."""
    out: dict = {}
    for inst in instances:
        last_at = max(s for s, _ in inst.values())
        last = max(r for r, (s, _) in inst.items() if s == last_at)
        for r, (s, e) in inst.items():
            wait = min(max(last_at - s, 0), e - s)
            acc = out.setdefault(r, [0, 0, 0])
            acc[0] += wait
            acc[1] += (e - s) - wait
            acc[2] += r == last
    return out


def dlrm_instances() -> tuple[list[dict], list[list[int]]]:
    """The NCCL kernels of every DLRM rank, from the JSON: the n-th kernel on each rank's stream is
    one instance (the trace records no group or sequence number); also each instance's
    per-rank durations."""
    kernels = {}
    for f in sorted(DLRM.glob("*.json.gz")):
        doc = json.loads(gzip.decompress(f.read_bytes()))
        rank = doc["distributedInfo"]["rank"]
        ks = [e for e in doc["traceEvents"] if e.get("ph") == "X" and e.get("cat") == "kernel"
              and e["name"].startswith("nccl")]
        ks.sort(key=lambda e: e["ts"])
        kernels[rank] = [(e["name"].split("(")[0], round(e["ts"] * 1000), round((e["ts"] + e["dur"]) * 1000))
                         for e in ks]
    counts = {len(v) for v in kernels.values()}
    assert len(kernels) == 8 and len(counts) == 1
    instances, durations = [], []
    for i in range(counts.pop()):
        assert len({kernels[r][i][0] for r in kernels}) == 1  # the same collective on every rank
        instances.append({r: kernels[r][i][1:] for r in kernels})
        durations.append([e - s for s, e in instances[-1].values()])
    return instances, durations


# ---- DLRM, all 8 ranks --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dlrm_doc():
    """``commprof report DLRM -f json`` (once per session: test_golden_reports and
    test_savings_traces read the same report)."""
    proc = report_cli(DLRM)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@needs_dlrm
def test_dlrm_wait_and_transfer_per_rank_equal_the_definition(dlrm_doc):
    instances, durations = dlrm_instances()
    want = split(instances)
    got = {r["rank"]: r for r in dlrm_doc["ranks"]}
    assert set(got) == set(want)
    for rank, (wait, transfer, last) in want.items():
        assert got[rank]["wait_s"] == pytest.approx(wait / 1e9, abs=1e-9), rank
        assert got[rank]["transfer_s"] == pytest.approx(transfer / 1e9, abs=1e-9), rank
        assert got[rank]["last_share"] == pytest.approx(last / len(instances)), rank
    # one host: the clocks are taken as one (no offset applied)
    assert all(r["offset_ms"] == 0 for r in dlrm_doc["clock_alignment"]["ranks"])
    # the kernels end together, so transfer ≈ the shortest duration per instance, summed: within
    # the instances' end skew
    shortest = sum(min(d) for d in durations)
    skew = sum(max(e for _, e in inst.values()) - min(e for _, e in inst.values()) for inst in instances)
    for rank, (_, transfer, _) in want.items():
        assert abs(transfer - shortest) <= skew, rank
    assert dlrm_doc["cross_rank"]["instances"] == len(instances)
    assert dlrm_doc["cross_rank"]["unmatched_records"] == 0
    walls = [want[r["rank"]][0] / 1e9 / r["wall_s"] for r in dlrm_doc["ranks"]]
    assert dlrm_doc["kpis"]["wait_fraction_wall"] == pytest.approx(statistics.median(walls))


@needs_dlrm
def test_dlrm_report_names_waiting_as_the_main_cost_and_not_the_network(dlrm_doc):
    instances, _ = dlrm_instances()
    want = split(instances)
    wait = sum(v[0] for v in want.values())
    transfer = sum(v[1] for v in want.values())
    assert wait > 10 * transfer  # the premise: ~96 % waiting
    waiting = [n for n in dlrm_doc["note_items"] if n["kind"] == "waiting"]
    assert len(waiting) == 1 and "wait for each other" in waiting[0]["text"]
    assert f"{wait / (wait + transfer):.0%}" in waiting[0]["text"]
    assert any("order" in n for n in dlrm_doc["notes"])  # matched by order: said so
    # a 2x faster network shortens only the transfer: at most half of each rank's transfer
    by = {w["name"]: w for w in dlrm_doc["whatif"]}
    gain = by["bandwidth x2"]["inputs"]["step_s"] - by["bandwidth x2"]["step_time_s"]
    steps = dlrm_doc["steps"]["count"]
    assert gain <= sum(v[1] for v in want.values()) / len(want) / steps / 2 / 1e9 + 1e-9
    recs = dlrm_doc["recommendations"]
    assert not recs or recs[0]["kind"] != "infrastructure"


@needs_dlrm
def test_dlrm_terminal_report_says_what_the_source_is(dlrm_doc):
    """The terminal page of the same document (``commprof report DLRM --width 200`` renders it
    with this renderer; the document is the one the CLI wrote)."""
    text = renderers()["terminal"].render(Report.from_dict(dlrm_doc), width=200)
    for placeholder in ("node(s)", "exit code", "command "):
        assert placeholder not in text, placeholder
    assert "PyTorch-profiler traces" in text and "wait for each other" in text


@needs_dlrm
def test_one_rank_alone_leaves_the_split_unknown():
    doc = build_report(str(sorted(DLRM.glob("rank3.*"))[0]), 0).to_dict()
    assert doc["ranks"][0]["wait_s"] is None and doc["ranks"][0]["transfer_s"] is None
    assert doc["kpis"]["wait_fraction_wall"] is None and doc["cross_rank"] is None
    assert any("needs the other ranks' traces" in n for n in doc["notes"])


# ---- synthetic traces ---------------------------------------------------------------------------------

BASE_NS = 1_700_000_000_000_000_000


def write_trace(path: Path, rank: int, world: int | None, colls: list[tuple], *, host=None, shift_us=0.0,
                pg: str | None = "0", seq: bool = True, nccl: str | None = None,
                args_on: str = "kernel") -> Path:
    """A Kineto-shaped trace: one ProfilerStep, one launch and one NCCL kernel per collective
    ``(seq, start_us, end_us, kernel op)``, its times moved by ``shift_us`` (another host's clock);
    the collective's args (group, ``Seq``) on the kernel or on the ``record_param_comms`` op
    around its launch (``args_on``)."""
    events = [{"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#1", "ts": shift_us,
               "dur": 1_000_000, "pid": 1, "tid": 1}]
    for i, (n, start, end, op) in enumerate(colls):
        corr = 100 + i
        args = {}
        if pg is not None:
            args.update({"Collective name": op.lower(), "Process Group Name": pg, "Group size": world,
                         "dtype": "Float", "In msg nelems": 1024, "Out msg nelems": 1024})
        if seq:
            args["Seq"] = n
        launch = shift_us + 10 * i + 10
        if args_on == "record_param_comms":
            events.append({"ph": "X", "cat": "cpu_op", "name": "record_param_comms", "pid": 1, "tid": 1,
                           "ts": launch - 1, "dur": 5, "args": args})
            args = {}
        events.append({"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 1,
                       "ts": launch, "dur": 1, "args": {"correlation": corr}})
        events.append({"ph": "X", "cat": "kernel", "name": f"ncclDevKernel_{op}_RING_LL(ncclDevComm*)",
                       "pid": rank, "tid": 7, "ts": start + shift_us, "dur": end - start,
                       "args": {"correlation": corr, "stream": 7, "device": rank, **args}})
    doc = {"traceEvents": events, "baseTimeNanoseconds": BASE_NS}
    if world is not None:
        doc["distributedInfo"] = {"backend": "nccl", "rank": rank, "world_size": world,
                                  **({"nccl_version": nccl} if nccl else {})}
    if host:
        doc["host_name"] = host
    path.write_text(json.dumps(doc))
    return path


# true times (µs on one clock): per collective, each rank's start; all end together at `end`
ARRIVALS = [  # (seq, end, starts of ranks 0..3)
    (0, 1000.0, [100.0, 400.0, 900.0, 950.0]),
    (1, 2000.0, [1900.0, 1200.0, 1500.0, 1800.0]),
    (2, 3000.0, [2100.0, 2990.0, 2500.0, 2200.0]),
    (3, 4000.0, [3500.0, 3600.0, 3950.0, 3300.0]),
    (4, 5000.0, [4000.0, 4100.0, 4200.0, 4970.0]),
]


def _truth(drop: dict | None = None) -> list[dict]:
    """Instances {rank: (start_ns, end_ns)} on the true clock, leaving out (seq -> rank)."""
    out = []
    for n, end, starts in ARRIVALS:
        if drop and n in drop:
            continue
        out.append({r: (round(s * 1000), round(end * 1000)) for r, s in enumerate(starts)})
    return out


@pytest.mark.parametrize("args_on", ["kernel", "record_param_comms"])
def test_two_hosts_with_a_clock_offset_are_aligned_from_the_collectives_ends(tmp_path, args_on):
    shift = {0: 0.0, 1: 0.0, 2: 5000.0, 3: 5000.0}  # host b's clock runs 5 ms ahead
    host = {0: "a", 1: "a", 2: "b", 3: "b"}
    for r in range(4):
        colls = [(n, starts[r], end + (0.002 * r if n % 2 else -0.001 * r), "AllReduce")
                 for n, end, starts in ARRIVALS if not (r == 2 and n == 3)]  # rank 2 lacks seq 3
        write_trace(tmp_path / f"rank{r}.json", r, 4, colls, host=host[r], shift_us=shift[r],
                    nccl="2.21.5", args_on=args_on)
    doc = build_report(str(tmp_path), 0).to_dict()
    clocks = {c["rank"]: c for c in doc["clock_alignment"]["ranks"]}
    assert clocks[1]["method"] == "same-host" and clocks[1]["offset_ms"] == 0
    for r in (2, 3):
        assert clocks[r]["method"] == "instance-ends"
        assert clocks[r]["offset_ms"] == pytest.approx(-5.0, abs=clocks[r]["uncertainty_ms"] + 1e-6)
        assert clocks[r]["uncertainty_ms"] < 0.01
    want = split(_truth(drop={3: 2}))  # seq 3 is on three ranks only: matched by Seq, left out
    tol = 4 * clocks[2]["uncertainty_ms"] / 1e3 + 10e-9 * 4  # per instance: the clock uncertainty + ends
    for row in doc["ranks"]:
        wait, transfer, last = want[row["rank"]]
        assert row["wait_s"] == pytest.approx(wait / 1e9, abs=tol), row["rank"]
        assert row["transfer_s"] == pytest.approx(transfer / 1e9, abs=tol), row["rank"]
        assert row["last_share"] == pytest.approx(last / 4), row["rank"]
    assert doc["cross_rank"]["instances"] == 4 and doc["cross_rank"]["unmatched_records"] == 3
    assert doc["run"]["nccl_version"] == "2.21.5" and doc["run"]["hosts"] == ["a", "b"]
    assert not any("order" in n for n in doc["notes"])  # matched by sequence number


def test_missing_sequence_numbers_fall_back_to_order_with_a_note(tmp_path):
    for r in range(4):
        colls = [(n, starts[r], end, "AllReduce") for n, end, starts in ARRIVALS]
        write_trace(tmp_path / f"rank{r}.json", r, 4, colls, seq=False)
    doc = build_report(str(tmp_path), 0).to_dict()
    assert any("no sequence numbers" in n and "by order" in n for n in doc["notes"])
    want = split(_truth())
    for row in doc["ranks"]:
        assert row["wait_s"] == pytest.approx(want[row["rank"]][0] / 1e9, abs=1e-9)
        assert row["transfer_s"] == pytest.approx(want[row["rank"]][1] / 1e9, abs=1e-9)
    # no host names, no offset beyond noise: one clock
    assert {c["method"] for c in doc["clock_alignment"]["ranks"]} <= {"reference", "same-clock"}


def test_order_matching_drops_instances_whose_kernels_name_different_ops(tmp_path):
    ops = ["AllReduce", "AllGather", "AllReduce", "AllGather", "AllReduce"]
    for r in range(2):
        colls = [(n, starts[r], end, ops[n]) for n, end, starts in ARRIVALS if not (r == 1 and n == 1)]
        write_trace(tmp_path / f"rank{r}.json", r, 2, colls, pg=None, seq=False)
    doc = build_report(str(tmp_path), 0).to_dict()
    assert any("no process group recorded" in n for n in doc["notes"])
    assert any("different ops" in n for n in doc["notes"])
    # rank 1's kernels shift by one after its missing all_gather: only the first instance agrees
    first = {r: v for r, v in _truth()[0].items() if r < 2}
    want = split([first])
    for row in doc["ranks"]:
        assert row["wait_s"] == pytest.approx(want[row["rank"]][0] / 1e9, abs=1e-9)


def test_worker_names_give_the_rank_and_rank_option_gives_it_to_a_trace_without_one(tmp_path):
    colls = [(0, 100.0, 200.0, "AllReduce")]
    worker = write_trace(tmp_path / "worker3.1623143089861.pt.trace.json", 3, None, colls)
    doc = build_report(str(worker), 0).to_dict()
    assert doc["ranks"][0]["rank"] == 3 and any("file name" in n for n in doc["notes"])
    bare = write_trace(tmp_path / "trace.json", 0, None, colls)
    proc = commprof("report", str(bare), "-f", "json")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--rank" in proc.stderr
    proc = commprof("report", str(bare), "--rank", "5", "-f", "json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["ranks"][0]["rank"] == 5
    with pytest.raises(UsageError, match="one trace file"):
        build_report(str(tmp_path), 0, rank=1)


def test_a_directory_of_traces_of_different_jobs_is_refused_naming_the_files(tmp_path):
    colls = [(0, 100.0, 200.0, "AllReduce")]
    write_trace(tmp_path / "rank0.json", 0, 2, colls)
    write_trace(tmp_path / "rank1.json", 1, 8, colls)
    proc = commprof("report", str(tmp_path))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1
    assert lines[0].startswith("commprof: error: ") and "rank0.json" in lines[0] and "rank1.json" in lines[0]
    assert "different jobs" in lines[0]


@pytest.mark.skipif(not (SHARED / "tracelens_mi300x_resnet_act_checkpoint_rank0.json.gz").is_file(),
                    reason="../shared/gpu_traces/ is absent")
def test_nccl_version_is_read_from_the_trace():
    f = SHARED / "tracelens_mi300x_resnet_act_checkpoint_rank0.json.gz"
    recorded = json.loads(gzip.decompress(f.read_bytes()))["distributedInfo"]["nccl_version"]
    assert read_trace(f).nccl_version == recorded == "2.22.3"


def test_the_waiting_note_needs_waiting_to_outweigh_transfer_and_matter():
    import pandas as pd

    from commprof.analysis.outcome.trace_crossrank import waiting_note
    rows = pd.DataFrame({"rank": [0, 1], "wait_ns": [9e6, 1e6], "transfer_ns": [1e6, 1e6],
                         "instances": [4, 4], "last_share": [0.25, 0.75]})
    note = waiting_note(rows, [], 1, 0.30)
    assert note is not None and "83%" in note.text and "rank 1 arrived last at 75%" in note.text
    assert waiting_note(rows, [], 1, 0.01) is None  # under 5 % of the time: no finding
    assert waiting_note(rows.assign(transfer_ns=[9e6, 9e6]), [], 1, 0.30) is None
