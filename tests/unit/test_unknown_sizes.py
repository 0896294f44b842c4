"""Unknown is unknown: a size a trace does not carry is null in JSON and "unknown" in text.

A property over every trace of ../shared/gpu_traces/ and synthetic ones: walking the JSON
document, no size or byte count is negative; an aggregate over communication that happened is
never 0 (a placeholder for "not measured"); a group size is null or at least 1; every
communication kernel appears in an op-table row.  The terminal and HTML text hold no negative
size, no ``nan``/``None`` and no ``?`` standing for a dtype.
"""
from __future__ import annotations

import html as html_mod
import json
import re
import shutil

import pytest

from commprof.cli.report import build_report
from commprof.analysis.result.model import Report
from commprof.report.renderers import renderers
from test_gpu_timeline import SHARED, kernel, launch, step, write

SIZE_KEY = re.compile(r"bytes|size", re.I)
NEGATIVE_SIZE = re.compile(r"(?<![\w.])-\s*\d[\d.,]*\s*(?:B|kB|MB|GB|TB)\b")
PLACEHOLDERS = (re.compile(r"\bnan\b", re.I), re.compile(r"(?<!\()\bNone\b"), re.compile(r"as \?"),
                re.compile(r"-0\.00\b"))


def shared_inputs() -> list:
    if not SHARED.is_dir():
        return []
    files = sorted(p for p in SHARED.iterdir() if p.name.endswith(".json.gz"))
    return files + [d for d in sorted(SHARED.iterdir()) if d.is_dir()]


def _as_rank0(path, tmp_path):
    """Traces without a rank (no distributedInfo, none in the name) under a name that says it."""
    if path.is_dir() or re.search(r"rank[-_]?\d", path.name):
        return path
    target = tmp_path / "rank-0.json.gz"
    shutil.copy(path, target)
    return target


def synthetic(tmp_path, kind: str):
    nccl = "ncclDevKernel_AllReduce_Sum_f32_RING_LL(x)"
    sized = {"Collective name": "allreduce", "In msg nelems": 1024, "Out msg nelems": 1024,
             "dtype": "Float", "Group size": 2}
    events = {
        "no_sizes": [step(1, 0, 1000), launch(1, 10), kernel(nccl, 100, 50, 1, stream=13),
                     launch(2, 20), kernel("ncclDevKernel_SendRecv(x)", 200, 50, 2, stream=13),
                     launch(3, 30), kernel("void gemm(float*)", 300, 100, 3)],
        "mixed": [step(1, 0, 1000), launch(1, 10), kernel(nccl, 100, 50, 1, stream=13, **sized),
                  launch(2, 20), kernel(nccl, 200, 50, 2, stream=13),
                  launch(3, 30), kernel(nccl, 300, 50, 3, stream=13, **{"Collective name": "allreduce",
                                                                        "Group size": 2}),  # no nelems
                  kernel("ncclDevKernel_Generic(x)", 2000, 50, 77, stream=13)],  # before the window
        "no_comm": [step(1, 0, 1000), launch(1, 10), kernel("void gemm(float*)", 100, 50, 1)],
    }[kind]
    return write(tmp_path, events, name="rank-0.json")


def _walk(obj, path=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _walk(v, f"{path}.{k}" if path else k)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _walk(v, f"{path}[{i}]")
    else:
        yield path, obj


def check_document(doc: dict) -> None:
    Report.from_dict(json.loads(json.dumps(doc)), "the document")  # nulls where the model allows them
    for path, value in _walk(doc):
        key = path.rsplit(".", 1)[-1].split("[")[0]
        if SIZE_KEY.search(key) and isinstance(value, (int, float)) and not isinstance(value, bool):
            assert value >= 0, f"{path} = {value}: a negative size"
            if key in ("group_size", "world_size"):
                assert value >= 1, f"{path} = {value}"
    for i, op in enumerate(doc["ops"]):
        for key in ("bytes", "in_bytes", "out_bytes"):
            assert op[key] is None or op[key] > 0, f"ops[{i}].{key} = {op[key]} for {op['count']} calls"
            assert op[key] is None or isinstance(op[key], int), f"ops[{i}].{key} = {op[key]}: not whole bytes"
    for r in doc["ranks"]:
        if r["ops"]:
            assert r["bytes"] is None or r["bytes"] > 0, f"rank {r['rank']}: {r['bytes']} bytes"
    comm_kernels = sum(r["gpu"]["comm_kernels"] for r in doc["ranks"] if r.get("gpu"))
    if comm_kernels:
        assert doc["kpis"]["bytes_per_step"] is None or doc["kpis"]["bytes_per_step"] > 0
        # every communication kernel has its op-table row, sized or not
        assert sum(op["count"] * op["ranks"] for op in doc["ops"]) == pytest.approx(comm_kernels)
        counted = sum(k["kernels"] for k in doc["gpu_comm"]["kernels"])
        assert counted == comm_kernels


def check_text(text: str, fmt: str) -> None:
    if fmt == "html":  # the text a reader sees: no scripts (plotly.js), no tags
        text = re.sub(r"<script.*?</script>", " ", text, flags=re.S)
        text = html_mod.unescape(re.sub(r"<[^>]+>", " ", text))
    for pattern in (NEGATIVE_SIZE, *PLACEHOLDERS):
        found = pattern.search(text)
        assert not found, f"{fmt}: {found.group(0)!r} in …{text[max(0, found.start() - 80):found.end() + 40]}…"


def check_everything(path) -> Report:
    report = build_report(str(path), 0)
    check_document(report.to_dict())
    for fmt in ("terminal", "html"):
        check_text(renderers()[fmt].render(report, width=140), fmt)
    return report


@pytest.mark.parametrize("path", shared_inputs(), ids=lambda p: p.name)
def test_no_negative_or_placeholder_size_on_shared_traces(path, tmp_path):
    report = check_everything(_as_rank0(path, tmp_path))
    doc = report.to_dict()
    if path.name == "param_dlrm_v100_8ranks":  # no message-size args at all
        assert doc["kpis"]["bytes_per_step"] is None and all(r["bytes"] is None for r in doc["ranks"])
        assert {op["op"] for op in doc["ops"]} == {"all_reduce", "all_to_all"}
        text = renderers()["terminal"].render(report, width=140)
        assert re.search(r"bytes synchronized\s+unknown per step", text)


@pytest.mark.parametrize("kind", ["no_sizes", "mixed", "no_comm"])
def test_no_negative_or_placeholder_size_on_synthetic_traces(kind, tmp_path):
    doc = check_everything(synthetic(tmp_path, kind)).to_dict()
    ops = {op["op"]: op for op in doc["ops"]}
    if kind == "no_sizes":
        assert doc["kpis"]["bytes_per_step"] is None and doc["ranks"][0]["bytes"] is None
        assert {o: ops[o]["bytes"] for o in ops} == {"all_reduce": None, "unknown": None}
        assert any("cannot be computed" in r["evidence"] for r in doc["recommendations"]
                   if r["scenario"] == "bytes /2")
    elif kind == "mixed":
        # three all_reduce calls in the step, two of unknown size (one of unknown group too): the
        # step's bytes are unknown, so are the bytes of the row with a call of unknown size; the
        # sized call still gives the row's bandwidth (4096 B in 50 µs)
        rows = {(op["op"], op["group_size"]): op for op in doc["ops"]}
        assert doc["kpis"]["bytes_per_step"] is None
        assert (rows["all_reduce", 2]["bytes"], rows["all_reduce", 2]["count"]) == (None, 2)
        assert rows["all_reduce", 2]["algbw_gbps"] == pytest.approx(4096 / 50_000)
        assert (rows["all_reduce", None]["bytes"], rows["all_reduce", None]["count"]) == (None, 1)
        assert (rows["unknown", None]["bytes"], rows["unknown", None]["count"]) == (None, 1)
    else:
        assert doc["ops"] == [] and doc["kpis"]["bytes_per_step"] == 0
