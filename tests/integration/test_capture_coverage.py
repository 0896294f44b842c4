"""Capture coverage: real torchrun jobs under ``commprof run``, checked record by record.

Every job in tests/jobs/ writes its own ground truth (tests/jobs/_jobutil.py): the shapes and
dtypes of the tensors of each communication call it makes or that torch makes for it, the
process groups it used and the lines it printed.  This module turns those shapes into numels and
bytes itself and compares them with the capture files -- commprof is never asked for the truth.

Each job runs once per module and capture path (cached); several tests may check one run.  Every
test runs under both capture paths (``--capture python`` and ``--capture native``, the C++
kernel), and :func:`test_paths_capture_the_same_records` compares the two paths' captures record
for record.  The native path is skipped, saying why, where it cannot be built (no compiler), unless
``COMMPROF_TEST_REQUIRE_NATIVE=1`` (CI) makes that a failure.
"""
from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import functools
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from commprof.format import schema
from commprof.format.reader import capture_paths, read_capture
from native_kernel import _NATIVE, require_native  # noqa: F401 - re-exported: other tests import them from here

pytestmark = pytest.mark.slow

JOBS = Path(__file__).resolve().parents[1] / "jobs"
JOB_TIMEOUT = 120  # seconds; every job takes a few seconds on 2 cores
# The torchrun console script of the interpreter running the tests (not the first one on PATH:
# a torch matrix runs these tests from another virtual environment, scripts/torch_matrix.sh).
TORCHRUN = (str(Path(sys.executable).with_name("torchrun"))
            if Path(sys.executable).with_name("torchrun").exists() else "torchrun")
ITEMSIZE = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4,
            "int16": 2, "int8": 1, "uint8": 1, "bool": 1}
EXIT_ABORT = "terminate called without an active exception"


# -- running jobs ------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class JobRun:
    job: str
    returncode: int
    stdout: str
    stderr: str
    run_dir: Path
    caps: list = field(default_factory=list)  # RankCapture, sorted by rank
    expect: dict = field(default_factory=dict)  # rank -> the job's expectation


def run_job(base: Path, job: str, torchrun: bool = True, nproc: int = 2,
            capture: str = "python") -> JobRun:
    run_dir, expect_dir = base / "run", base / "expect"
    script = str(JOBS / job)
    if torchrun:
        command = [TORCHRUN, "--nproc-per-node", str(nproc), "--master-addr", "127.0.0.1",
                   "--master-port", str(free_port()), "--max-restarts", "0", script]
    else:
        command = [sys.executable, script]
    env = dict(os.environ, COMMPROF_TEST_EXPECT=str(expect_dir))
    proc = subprocess.Popen([sys.executable, "-m", "commprof", "run", "--out", str(run_dir), "-q",
                             "--capture", capture, "--", *command], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        out, err = proc.communicate(timeout=JOB_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # commprof forwards it to the job's process group
        try:
            out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        pytest.fail(f"{job} hung under commprof (> {JOB_TIMEOUT} s)\nstdout:\n{out}\n"
                    f"stderr:\n{err[-4000:]}")
    run = JobRun(job, proc.returncode, out, err, run_dir)
    run.caps = sorted((read_capture(p) for p in capture_paths(run_dir)), key=lambda c: c.rank)
    for path in sorted(expect_dir.glob("expect.rank*.json")):
        data = json.loads(path.read_text())
        run.expect[data["rank"]] = data
    return run


PATHS = ("python", "native")


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory):
    """runs(name, path) runs tests/jobs/<name> once per module under ``--capture path``; later
    calls return the same run.  A job's first run starts its run on the other path beside it (one
    background thread) when a test of this session will ask for that path: these tests count
    records, never time, and a second 2-rank job uses the cores one leaves idle (its launcher's
    start-up, its exit, ``commprof run``'s closing; tests/runner.py ``side_by_side``)."""
    cache: dict[tuple, Future] = {}
    wanted = _paths_asked_for(request)
    pool = ThreadPoolExecutor(max_workers=1)

    def start(job: str, path: str, torchrun: bool) -> Callable[[], JobRun]:
        base = tmp_path_factory.mktemp(f"{job.replace('.py', '')}-{path}")
        return functools.partial(run_job, base, job, torchrun=torchrun, capture=path)

    def get(job: str, path: str, torchrun: bool = True) -> JobRun:
        if path == "native":
            require_native()
        if (job, path) not in cache:
            twin = next(p for p in PATHS if p != path)
            if (job, twin) not in cache and twin in wanted and (twin == "python" or _NATIVE.get("ok")):
                cache[(job, twin)] = pool.submit(start(job, twin, torchrun))
            run = start(job, path, torchrun)()  # cached once it ran (a failure raises here)
            cache[(job, path)] = done = Future()
            done.set_result(run)
        return cache[(job, path)].result()

    yield get
    pool.shutdown(wait=True)
    cache.clear()


def _paths_asked_for(request) -> set[str]:
    """The capture paths this session's selected tests of this module will run jobs on."""
    paths: set[str] = set()
    for item in request.session.items:
        if getattr(item, "module", None) is not request.module:
            continue
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "job_run" in params:
            paths.add(params["job_run"])
        elif "runs" in getattr(item, "fixturenames", ()):
            paths.update(PATHS)
    return paths


@pytest.fixture(scope="module", params=PATHS)
def job_run(request, runs):
    """job_run(name) runs tests/jobs/<name> under commprof with this test's capture path and
    checks it exited cleanly (and that the path asked for is the one that ran)."""

    def get(job: str, torchrun: bool = True) -> JobRun:
        run = runs(job, request.param, torchrun=torchrun)
        check_clean(run, world=2 if torchrun else 1)
        check_path(run, request.param)
        return run

    return get


def check_path(run: JobRun, path: str) -> None:
    for c in run.caps:
        ran = [e.get("path") for e in c.events if e.get("event") == "capture_path"]
        assert ran == [path], f"rank {c.rank}: capture path {ran}, asked for {path}"


# -- checks common to every job ----------------------------------------------------------------
def check_clean(run: JobRun, world: int) -> None:
    """Exit status, one complete capture per rank, no degradation, stdout untouched."""
    tail = run.stderr[-4000:]
    assert EXIT_ABORT not in run.stderr, f"{run.job}: gloo exit abort despite destroy+sleep\n{tail}"
    assert run.returncode == 0, f"{run.job} exited with {run.returncode}\n{tail}"
    assert sorted(run.expect) == list(range(world)), f"{run.job}: expectations missing\n{tail}"
    errs = list((run.run_dir / "ranks").glob("bootstrap-*.err"))
    assert not errs, [e.read_text() for e in errs]
    assert [c.rank for c in run.caps] == list(range(world)), [str(c.path) for c in run.caps]
    for c in run.caps:
        assert c.damage is None, (c.path, c.damage)
        assert c.trailer is not None, f"{c.path}: no trailer (unclean exit)"
        assert c.trailer.get("reason") == "exit", c.trailer
        assert c.trailer.get("records") == len(c.arrays["coll"]), (c.trailer, len(c.arrays["coll"]))
        degraded = [e for e in c.events if e.get("type") == "degraded"]
        assert not degraded, f"rank {c.rank}: {degraded}"
        assert not (c.arrays["coll"]["flags"] & schema.FLAG_FAILED).any(), "a call failed"
        assert c.header.get("world_size") == world, c.header
    # The job's stdout reaches the caller unchanged: exactly its lines, whole, nothing else.
    printed = sorted(line for data in run.expect.values() for line in data["lines"])
    seen = sorted(line for line in run.stdout.splitlines() if line.strip())
    assert seen == printed, f"stdout changed:\n{run.stdout!r}\nexpected lines: {printed!r}"


def check_seq_and_agreement(run: JobRun) -> None:
    """Per group, sequence numbers count 0, 1, 2, ... (collectives and P2P separately), and all
    members of a group agree on its collective sequence (op and dtype per seq)."""
    per_group: dict[str, dict[int, list]] = {}
    for c in run.caps:
        names = group_names(c)
        coll = sorted(c.arrays["coll"], key=lambda r: r["t_issue"])
        for p2p in (False, True):
            for gid in {int(r["group"]) for r in coll}:
                seqs = [int(r["seq"]) for r in coll if int(r["group"]) == gid
                        and (schema.OPS[r["op"]] in ("send", "recv")) == p2p]
                assert seqs == list(range(len(seqs))), (c.rank, gid, p2p, seqs)
        for gid, name in names.items():
            if len(next(g for g in c.groups if g["id"] == gid)["ranks"]) < 2:
                continue
            per_group.setdefault(name, {})[c.rank] = [
                (int(r["seq"]), schema.OPS[r["op"]], int(r["dtype"]))
                for r in coll if int(r["group"]) == gid and schema.OPS[r["op"]] not in ("send", "recv")]
    for name, by_rank in per_group.items():
        views = list(by_rank.values())
        assert all(v == views[0] for v in views), f"group {name}: ranks disagree {by_rank}"


# -- expectation -> numbers ----------------------------------------------------------------------
def spec_numel(specs) -> int:
    return sum(math.prod(shape) for shape, _ in specs)


def spec_bytes(specs) -> int:
    return sum(math.prod(shape) * ITEMSIZE[dtype] for shape, dtype in specs)


def canonical_label(data: dict, label: str) -> str:
    """The first label of the job's group with that name (a device mesh over the whole world
    reuses the default group: both labels then name one group)."""
    name = data["groups"][label]["name"]
    return next(k for k, g in data["groups"].items() if g["name"] == name)


def expected_rows(data: dict, ops_filter=None) -> list[tuple]:
    rows = []
    for op in data["ops"]:
        if ops_filter and not ops_filter(op):
            continue
        dtypes = [d for _, d in op["in"]] or [d for _, d in op["out"]] or ["unknown"]
        rows.append((op["op"], canonical_label(data, op["group"]), dtypes[0], spec_numel(op["in"]), spec_bytes(op["in"]),
                     spec_numel(op["out"]), spec_bytes(op["out"]),
                     -1 if op["peer"] is None else op["peer"], bool(op["backward"])))
    return rows


def group_names(cap) -> dict[int, str]:
    return {g["id"]: g.get("name") for g in cap.groups}


def captured_rows(cap, labels: dict[str, str], normalize=lambda op: op, rows=None) -> list[tuple]:
    """Records as comparable tuples, in issue order; groups by the job's label for their name."""
    by_name = {}
    for label, name in labels.items():
        by_name.setdefault(name, label)
    names = group_names(cap)
    coll = rows if rows is not None else cap.arrays["coll"]
    out = []
    for r in sorted(coll, key=lambda r: r["t_issue"]):
        name = names.get(int(r["group"]))
        out.append((normalize(schema.OPS[r["op"]]), by_name.get(name, f"<group {name}>"),
                    schema.DTYPES[r["dtype"]], int(r["in_numel"]), int(r["in_bytes"]),
                    int(r["out_numel"]), int(r["out_bytes"]), int(r["peer"]),
                    bool(r["flags"] & schema.FLAG_IN_BACKWARD)))
    return out


def labels_of(data: dict) -> dict[str, str]:
    return {label: g["name"] for label, g in data["groups"].items()}


def marks(cap, kind: int):
    m = cap.arrays["mark"]
    return m[m["kind"] == kind]


def split_by_steps(cap, kind=schema.MARK_STEP_OPTIMIZER) -> list:
    """Records per step: step k holds the records issued before the k-th step mark (and after
    the previous one); records after the last mark are dropped."""
    coll = cap.arrays["coll"]
    edges = sorted(int(t) for t in marks(cap, kind)["t"])
    steps, lo = [], None
    for hi in edges:
        sel = coll["t_issue"] < hi
        if lo is not None:
            sel &= coll["t_issue"] >= lo
        steps.append(coll[sel])
        lo = hi
    return steps


def diff(expected: list, seen: list) -> str:
    e, s = Counter(expected), Counter(seen)
    return (f"missing (expected, not captured): {sorted((e - s).elements())}\n"
            f"extra (captured, not expected): {sorted((s - e).elements())}")


# -- 1. DDP --------------------------------------------------------------------------------------
def test_ddp_backward_allreduce_bytes(job_run):
    run = job_run("ddp_mlp.py")
    check_seq_and_agreement(run)
    for c in run.caps:
        facts = run.expect[c.rank]["facts"]
        steps = facts["steps"]
        grad_bytes = spec_bytes(facts["grad_param_specs"])
        assert grad_bytes > 400_000  # a few hundred KB, several 0.1 MB buckets
        coll = c.arrays["coll"]
        ops = [schema.OPS[o] for o in coll["op"]]
        bwd = (coll["flags"] & schema.FLAG_IN_BACKWARD) != 0
        # Everything issued inside backward is a gradient bucket all-reduce on the world group.
        assert {ops[i] for i in range(len(ops)) if bwd[i]} == {"all_reduce"}
        assert set(coll["group"][bwd].tolist()) == {0}
        assert set(coll["dtype"][bwd].tolist()) == {schema.DTYPE_INDEX["float32"]}
        assert int(coll["in_bytes"][bwd].sum()) == steps * grad_bytes
        assert (coll["out_bytes"][bwd] == coll["in_bytes"][bwd]).all()
        assert len(marks(c, schema.MARK_STEP_OPTIMIZER)) == steps
        # Per step: exactly the gradient bytes, in exactly DDP's own buckets.
        logging = facts.get("ddp_logging") or {}
        per_step = split_by_steps(c)
        assert len(per_step) == steps
        for k, recs in enumerate(per_step):
            recs = recs[(recs["flags"] & schema.FLAG_IN_BACKWARD) != 0]
            assert int(recs["in_bytes"].sum()) == grad_bytes, k
            key = "bucket_sizes" if k == 0 else "rebuilt_bucket_sizes"
            if logging.get(key):
                buckets = sorted(int(x) for x in logging[key].split(","))
                assert sorted(recs["in_bytes"].tolist()) == buckets, (k, key)
        if logging.get("rebuilt_bucket_sizes"):
            assert len(logging["rebuilt_bucket_sizes"].split(",")) >= 3  # several buckets
        # DDP's constructor syncs module states: one broadcast of every parameter from rank 0.
        f32_bcast = [int(r["in_bytes"]) for r in coll
                     if schema.OPS[r["op"]] == "broadcast" and r["dtype"] == schema.DTYPE_INDEX["float32"]]
        assert f32_bcast == [grad_bytes]


def test_ddp_report_bytes_and_steps(job_run):
    """The same ground truth through the report: all_reduce bytes per rank for the run ==
    steps x the gradient bytes, steps == optimizer steps, bytes per step == gradient bytes."""
    from commprof.analysis.host.load import load_run
    from commprof.analysis.outcome.summary import summarize
    from commprof.analysis.outcome.assemble import assemble

    run = job_run("ddp_mlp.py")
    facts = run.expect[0]["facts"]
    grad_bytes = spec_bytes(facts["grad_param_specs"])
    report = assemble(summarize(load_run(run.run_dir)))
    all_reduce = {(o.op, o.group_size): o for o in report.ops}[("all_reduce", 2)]
    assert all_reduce.bytes == facts["steps"] * grad_bytes
    assert all_reduce.ranks == 2
    assert report.steps.count == facts["steps"] and report.steps.source == "optimizer"
    assert report.kpis.bytes_per_step == grad_bytes
    for row in report.ranks:
        assert row.bytes_per_step == grad_bytes


# -- 2. Python API ------------------------------------------------------------------------------
# Calls of api_ops.py with their own test below: left out of test_python_api_ops (the captured
# rows of the same sizes too).
KNOWN_GAPS = ("thread_backward",)


def _without_gaps(data: dict, seen: list) -> tuple[list, list]:
    gap = lambda o: o["note"] in KNOWN_GAPS  # noqa: E731
    gap_keys = {row[:7] for row in expected_rows(data, gap)}
    expected = expected_rows(data, lambda o: not gap(o))
    return expected, [row for row in seen if row[:7] not in gap_keys]


def test_python_api_ops(job_run):
    run = job_run("api_ops.py")
    check_seq_and_agreement(run)
    for c in run.caps:
        data = run.expect[c.rank]
        expected, seen = _without_gaps(data, captured_rows(c, labels_of(data)))
        assert seen == expected, diff(expected, seen)
        assert len(expected) >= 28


def test_object_collectives_counted_once(job_run):
    """all_gather_object, broadcast_object_list, gather_object, scatter_object_list: exactly the
    tensor collectives torch issues inside, once each, nothing on top (no double counting)."""
    run = job_run("api_ops.py")
    for c in run.caps:
        data = run.expect[c.rank]
        obj = expected_rows(data, lambda o: "_object" in o["note"])
        assert len(obj) == 9
        expected, seen = _without_gaps(data, captured_rows(c, labels_of(data)))
        for row in obj:
            # (the int64 [1] size exchange of all_gather_object and gather_object look alike)
            assert seen.count(row) == expected.count(row) == obj.count(row), row
        assert len(seen) == len(expected)


def test_inference_mode_collectives_captured(job_run):
    """Under inference_mode the dispatcher kernel is skipped; the Python-API fallback records the
    call exactly once."""
    run = job_run("api_ops.py")
    for c in run.caps:
        data = run.expect[c.rank]
        seen = captured_rows(c, labels_of(data))
        for row in expected_rows(data, lambda o: o["note"] == "inference_mode"):
            assert seen.count(row) == 1, f"rank {c.rank}: not captured: {row}"


def test_in_backward_flag_is_process_wide(job_run):
    """FLAG_IN_BACKWARD means "a backward call was running in this process" (on GPUs DDP's hooks
    run on autograd device threads, not the thread that called backward): a call from the main
    thread while another thread is inside backward() is flagged."""
    run = job_run("api_ops.py")
    for c in run.caps:
        data = run.expect[c.rank]
        seen = captured_rows(c, labels_of(data))
        (row,) = expected_rows(data, lambda o: o["note"] == "thread_backward")
        assert not row[-1]
        flags = [r[-1] for r in seen if r[:7] == row[:7]]
        assert flags == [True], f"rank {c.rank}: {row[:7]} captured with in_backward={flags}"


# -- 3. sub-groups -------------------------------------------------------------------------------
def test_subgroups(job_run):
    run = job_run("subgroups.py")
    check_seq_and_agreement(run)
    for c in run.caps:
        data = run.expect[c.rank]
        # Groups: ids unique, and each group the job used appears once with torch's identity.
        assert len({g["id"] for g in c.groups}) == len(c.groups)
        by_name = {g["name"]: g for g in c.groups}
        assert len(by_name) == len(c.groups)
        for label, truth in data["groups"].items():
            g = by_name.get(truth["name"])
            assert g is not None, (label, truth, c.groups)
            assert (g["size"], g["rank"], g["ranks"]) == (truth["size"], truth["rank"],
                                                          truth["ranks"]), (label, g, truth)
            assert g["backend"] == "gloo"
        assert set(by_name) == {t["name"] for t in data["groups"].values()}
        # World and [0, 1] have the same members but are distinct groups.
        assert by_name[data["groups"]["world"]["name"]]["id"] != by_name[data["groups"]["pair"]["name"]]["id"]
        expected = expected_rows(data)
        seen = captured_rows(c, labels_of(data))
        assert seen == expected, diff(expected, seen)
        per_group = Counter(row[1] for row in seen)
        assert per_group == Counter(o["group"] for o in data["ops"])
        assert per_group["solo"] == 4 and per_group["pair"] == 7 and per_group["world"] == 1


# -- 4. FSDP2 ------------------------------------------------------------------------------------
def test_fsdp2_allgather_reducescatter(job_run):
    run = job_run("fsdp2_mlp.py")
    check_seq_and_agreement(run)
    for c in run.caps:
        data = run.expect[c.rank]
        steps = data["facts"]["steps"]
        assert len(marks(c, schema.MARK_STEP_OPTIMIZER)) == steps
        labels = labels_of(data)
        per_step = split_by_steps(c)
        assert len(per_step) == steps
        total = 0
        for k, recs in enumerate(per_step):
            expected = expected_rows(data, lambda o, k=k: o["step"] == k)
            seen = captured_rows(c, labels, rows=recs)
            assert Counter(seen) == Counter(expected), f"step {k}\n" + diff(expected, seen)
            # The reduce-scatter inputs of a step are the padded unsharded parameters.
            padded = sum(math.ceil(s[0] / 2) * 2 * math.prod(s[1:]) * 4
                         for shapes in data["facts"]["param_shapes"].values() for s in shapes)
            assert sum(r[4] for r in seen if r[0] == "reduce_scatter") == padded
            total += len(seen)
        assert total == len(c.arrays["coll"])  # nothing outside the steps


# -- 5. functional collectives and DTensor TP -----------------------------------------------------
def _family(op: str) -> str:
    return op.removesuffix("_coalesced")


def test_functional_and_tensor_parallel(job_run):
    """Counts, bytes, peers and in-backward flags, with X_coalesced read as X (see the next test
    for the names themselves)."""
    run = job_run("tp_funcol.py")
    check_seq_and_agreement(run)
    for c in run.caps:
        data = run.expect[c.rank]
        expected = expected_rows(data)
        seen = captured_rows(c, labels_of(data), normalize=_family)
        assert seen == expected, diff(expected, seen)
        assert len(marks(c, schema.MARK_STEP_OPTIMIZER)) == data["facts"]["steps"]


def test_functional_collective_op_names(job_run):
    run = job_run("tp_funcol.py")
    for c in run.caps:
        data = run.expect[c.rank]
        expected = [row[0] for row in expected_rows(data)]
        seen = [row[0] for row in captured_rows(c, labels_of(data))]
        assert seen == expected


# -- 6. single process -----------------------------------------------------------------------------
def test_single_process_no_torchrun(job_run):
    run = job_run("single_process.py", torchrun=False)
    (c,) = run.caps
    assert c.rank == 0 and c.header["rank_source"] == "single_process"
    assert len(c.arrays["coll"]) == 0
    assert c.groups == []
    assert len(marks(c, schema.MARK_STEP_OPTIMIZER)) == run.expect[0]["facts"]["steps"]


# -- 7. both capture paths record the same ------------------------------------------------------
_FLAGS = schema.FLAG_HAS_FUTURE | schema.FLAG_IN_BACKWARD | schema.FLAG_FAILED | schema.FLAG_INFERENCE_MODE


def comparable(cap) -> list[tuple]:
    """A capture's records without times, threads and record ids, in (group, kind, seq) order."""
    names = group_names(cap)
    rows = [(int(r["group"]), names.get(int(r["group"])), schema.OPS[r["op"]] in ("send", "recv"),
             int(r["seq"]), schema.OPS[r["op"]], schema.DTYPES[r["dtype"]], int(r["flags"]) & _FLAGS,
             int(r["peer"]), int(r["in_numel"]), int(r["in_bytes"]), int(r["out_numel"]),
             int(r["out_bytes"])) for r in cap.arrays["coll"]]
    return sorted(rows)


def groups_of(cap) -> list[dict]:
    return sorted(({k: v for k, v in g.items()} for g in cap.groups), key=lambda g: g["id"])


@pytest.mark.parametrize("job", ["api_ops.py", "ddp_mlp.py", "subgroups.py", "fsdp2_mlp.py",
                                 "tp_funcol.py"])
def test_paths_capture_the_same_records(runs, job):
    """Python kernel and C++ kernel: equal record for record in op, group, sequence number, dtype,
    flags, peer, numels and bytes, and identical group frames; completion and wait records of the
    same kinds for the same records."""
    py_run, native_run = runs(job, "python"), runs(job, "native")
    for run in (py_run, native_run):
        check_clean(run, world=2)
    for a, b in zip(py_run.caps, native_run.caps):
        assert a.rank == b.rank
        assert groups_of(a) == groups_of(b), (a.rank, groups_of(a), groups_of(b))
        ra, rb = comparable(a), comparable(b)
        assert len(ra) == len(rb), (a.rank, len(ra), len(rb))
        mismatch = [(x, y) for x, y in zip(ra, rb) if x != y]
        assert not mismatch, f"rank {a.rank}: python vs native differ:\n" + "\n".join(map(str, mismatch[:10]))
        for kind in ("done", "wait"):
            assert Counter(_by_seq(a, kind)) == Counter(_by_seq(b, kind)), (a.rank, kind)


def _by_seq(cap, kind: str) -> list[tuple]:
    """(group, p2p, seq, source) of each DONE / WAIT record (-1 for a wait of no record)."""
    coll = cap.arrays["coll"]
    key = {int(r["id"]): (int(r["group"]), schema.OPS[r["op"]] in ("send", "recv"), int(r["seq"]))
           for r in coll}
    rows = cap.arrays.get(kind)
    if rows is None:
        return []
    return [(key.get(int(r["id"]), (-1,)), int(r["source"])) for r in rows]
