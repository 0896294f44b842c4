"""The typed model of ``commprof.report/1`` (commprof/analysis/result/model.py) and its JSON Schema.

* every key path of the model (list items: item 0), deleted or given a wrong type in a saved
  report, makes ``commprof report saved.json`` exit 2 with one stderr line naming the key
  (``load()`` refuses the file before any renderer runs, so each key is checked once, and each
  renderer once with a refused file); a key the model marks optional is deleted too, and the
  report must still render in every format; so must a null wherever the model allows one.
  The formats are the registry's (``commprof.report.renderers.renderers()``): a new renderer is
  tested by itself;
* ``from_dict``/``to_dict`` round-trip real documents (an absent optional key stays absent, a null
  stays null); the reports ``assemble()`` builds hold no key the model lacks;
* ``docs/report-schema.json`` is the generated schema, and real documents validate against it;
* the renderers read only keys the model defines, from the typed objects (never through
  ``to_dict()``, the dict round trip the typed result ended; the JSON renderer excepted).

Documents come from synthetic runs written through the real capture writer (tests/synthetic.py);
a real demo job's document: tests/integration/test_report_model_job.py.  The command line runs in-process
(``commprof.cli.main``).  Known renderer gaps are strict xfails: fix the renderer, drop the mark.
"""
from __future__ import annotations

import json
import math
import typing
from pathlib import Path

import jsonschema
import pytest

from commprof.cli import main
from commprof.cli.report import build_report
from commprof.errors import ReportFileError
from commprof.format.writer import CaptureWriter
from commprof.analysis.result import model
from commprof.report.document import load as load_document
from commprof.report.renderers import renderers

from synthetic import MS, Rank, nccl_rank, periodic_rank, probe_result, rank_frames, step_marks, write_run

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_FILE = ROOT / "docs" / "report-schema.json"
SAMPLES = sorted(p for p in (ROOT / "sample_reports").glob("*.json") if not p.name.endswith(".trace.json"))
FORMATS = sorted(renderers())  # every renderer of the registry
# Renderers too slow for one page per key path (html: 0.5 s a page): they render every optional
# key deleted, and every allowed null, at once (test_without_any_optional_key, test_every_allowed_null).
ONE_PAGE_RENDERERS = {"html"} & set(FORMATS)
PER_KEY_FORMATS = [f for f in FORMATS if f not in ONE_PAGE_RENDERERS]
HANG = {"schema": "commprof.hang/1", "timeout_s": 2.0, "oldest_pending_s": 2.5, "episode": 1,
        "blocked": [{"op": {"op": "all_reduce", "group": "0", "group_desc": "default_pg",
                            "group_size": 2, "bytes": 8, "seq": 3},
                     "waiting_ranks": [0], "never_arrived": [1], "not_captured": []}],
        "ranks": [{"rank": 0, "pending": [], "pending_count": 0, "exited": False,
                   "last_completed": None}]}


# -- documents -----------------------------------------------------------------------------------

def _write_oversubscribed(run: Path, specs: list, world: int) -> None:
    """Rewrite the capture files with the header keys of the oversubscription check."""
    for spec in specs:
        name, header, frames = rank_frames(spec, world)
        header.update(intra_op_threads=2, cpus=[0])
        path = run / "ranks" / name
        path.unlink()
        writer = CaptureWriter(str(path), header)
        for frame in frames:
            writer.write(frame)
        writer.close({"reason": spec.exit_reason, "records": len(spec.collectives)} if spec.complete else None)


def _sample(run: Path) -> None:
    """A node sampler file: a loopback NIC busy with the collectives, a fake NVML (NVLink,
    PCIe and utilisation gauges), TCP RTTs, and a source that fails (sampler ``degraded``)."""
    from commprof.sampling.nvml import NvmlSource
    from commprof.sampling.sampler import NodeSampler
    from commprof.sampling.series import GAUGE, Series
    from fakes import fake_pynvml

    class Loopback:
        name, period_s, sent = "nic", 0.0, 0

        def status(self):
            return {"available": True, "why": None, "interfaces": ["lo"]}

        def read(self, emit):
            self.sent += 2_000_000
            emit(Series("nic", "lo", "tx_bytes", "B", note="loopback"), float(self.sent))
            emit(Series("nic", "lo", "rx_bytes", "B", note="loopback"), float(self.sent))

    class Tcp:
        name, period_s = "tcp", 0.0

        def status(self):
            return {"available": True, "why": None, "period_s": 0.0}

        def read(self, emit):
            for metric, value in (("srtt_ms", 0.2), ("rttvar_ms", 0.05), ("minrtt_ms", 0.1),
                                  ("retrans", 0.0), ("connections", 2.0)):
                emit(Series("tcp", "10.0.0.2", metric, "ms", GAUGE), value)

    class Broken:
        name, period_s = "infiniband", 0.0

        def status(self):
            return {"available": True, "why": None}  # and a links note: no RTT on InfiniBand

        def read(self, emit):
            raise OSError("boom")

    fake_pynvml.reset()
    clock = iter(range(0, 10**12, 100 * MS))
    sampler = NodeSampler(run, [Loopback(), NvmlSource(fake_pynvml), Tcp(), Broken()], hz=10,
                          clock=lambda: next(clock), host="node0")
    for _ in range(6):
        sampler.tick()
    sampler.stop()


def full_run(base: Path) -> Path:
    """A run whose document has every key of the model at least once (every list non-empty,
    every nullable object present)."""
    r0 = periodic_rank(0, steps=6)
    r1 = periodic_rank(1, steps=6, issue_ms=60, return_ms=62)  # arrives last: a straggler
    r1.complete = False  # incomplete: last_record_s
    r0.complete = False  # ranks[0] too: last_collective (the key paths read list item 0)
    r0.events = [{"type": "degraded", "where": "wait_tensor", "count": 2, "error": "RuntimeError: x"},
                 {"type": "losses", "t": [k * 100 * MS for k in range(6)], "step": list(range(6)),
                  "value": [2.3 - 0.1 * k for k in range(6)], "lost": 0},  # training.loss
                 {"type": "event", "event": "fix", "fix": "bf16-compress", "status": "skipped",
                  "why": "the job registered its own DDP comm hook", "changes": "half the bytes"},
                 {"type": "metric", "name": "val_acc", "value": 0.9, "higher_is_better": True,
                  "step": 6, "t": 700 * MS}]  # training.metrics
    run = write_run(base / "full", [r0, r1], world_size=3,  # rank 2: missing
                    command=["torchrun", "--nproc-per-node=3", "t.py"])
    _write_oversubscribed(run, [r0, r1], 3)
    (run / "hang.json").write_text(json.dumps(HANG))
    _sample(run)
    probe = probe_result(started_wall_ns=1)
    (run / "probe.json").write_text(json.dumps(probe))
    return run


def other_runs(base: Path) -> dict[str, Path]:
    """Runs whose documents leave keys out or null: one rank, no collectives, no steps."""
    single = write_run(base / "single", [periodic_rank(0)])
    zero = write_run(base / "zero", [Rank(0, marks=step_marks([100 * MS, 200 * MS]), start=0,
                                          exit=210 * MS, groups=False, world_size=1)])
    nosteps = [periodic_rank(r) for r in (0, 1)]
    for spec in nosteps:
        spec.marks = []
    return {"single": single, "zero": zero,
            "no_steps": write_run(base / "nosteps", nosteps)}


@pytest.fixture(scope="module")
def docs(tmp_path_factory) -> dict[str, dict]:
    base = tmp_path_factory.mktemp("docs")
    runs = {"full": full_run(base), **other_runs(base)}
    docs = {name: built(run) for name, run in runs.items()}
    _add_trace_only_keys(docs["full"], built(_trace(base)))
    gpu = write_run(base / "gpu", [nccl_rank(0), nccl_rank(1)])  # GPU windows: kpis.host
    docs["full"]["kpis"]["host"] = built(gpu)["kpis"]["host"]
    docs["full"]["training"]["compare"] = [{"label": "baseline", "steps": [0, 1], "values": [2.3, 2.2]}]
    docs["nccl_no_gpu"] = built(write_run(base / "nccl", [nccl_rank(0, window=None), nccl_rank(1, window=None)]))
    return docs


def built(run: Path) -> dict:
    """The JSON document of ``run``'s report (as ``commprof report -f json`` writes it)."""
    return json.loads(json.dumps(build_report(str(run), 2).to_dict()))


def _trace(base):
    """A small profiler trace (its report has the keys only traces give: run.source, kpis.gpu_*)."""
    from test_gpu_timeline import kernel, launch, step, write
    events = [step(1, 0, 100), launch(1, 1), kernel("ncclDevKernel_AllReduce_Sum_f32", 5, 30, 1),
              launch(2, 2), kernel("void gemm(int)", 10, 50, 2)]
    return write(base, events, name="rank-0.json", dist={"rank": 0, "world_size": 1},
                 deviceProperties=[{"id": 0, "name": "NVIDIA H200"}])


def _add_trace_only_keys(full: dict, trace: dict) -> None:
    full["run"].update(source=trace["run"]["source"], devices=trace["run"]["devices"])
    full["kpis"].update({k: v for k, v in trace["kpis"].items() if k.startswith("gpu_")})
    full["ranks"][0]["gpu"] = trace["ranks"][0]["gpu"]
    full["gpu_comm"] = trace["gpu_comm"]


@pytest.fixture(scope="module")
def full_doc(docs) -> dict:
    return docs["full"]


def fresh(doc: dict) -> dict:
    return json.loads(json.dumps(doc))


# -- key paths -----------------------------------------------------------------------------------

KEY_PATHS = model.key_paths()
MODEL_PATHS = {k.path for k in KEY_PATHS}


def concrete(doc: dict, path: str) -> list:
    """The model path ``a.b[].c.*.d`` as keys into ``doc``: list item 0, a free key's first key.
    None when the document does not reach that far."""
    parts, obj = [], doc
    for token in path.replace("[]", ".[]").split("."):
        if token == "[]":
            if not isinstance(obj, list) or not obj:
                return None
            parts.append(0)
            obj = obj[0]
        elif token == "*":
            if not isinstance(obj, dict) or not obj:
                return None
            name = next(iter(obj))
            parts.append(name)
            obj = obj[name]
        else:
            if not isinstance(obj, dict) or token not in obj:
                return None
            parts.append(token)
            obj = obj[token]
    return parts


def dotted(parts: list) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


def wrong_value(tp):
    """A JSON value of the wrong type for ``tp`` (never null: null is tested apart)."""
    inner, _ = model.split_none(tp)
    if inner is bool:
        return 1
    if inner is int:
        return 0.5
    if inner is float:
        return "x"
    if inner is str:
        return 7
    if inner is list or typing.get_origin(inner) is list:
        return {"x": 1}
    return ["x"]  # an object: a model class, dict[str, X], free-form dict


DELETE = object()  # edited(): the key deleted


def edited(doc: dict, parts: list, value=DELETE) -> dict:
    doc = fresh(doc)
    obj = doc
    for p in parts[:-1]:
        obj = obj[p]
    if value is DELETE:
        del obj[parts[-1]]
    else:
        obj[parts[-1]] = value
    return doc


def test_the_full_document_has_every_key_of_the_model(full_doc):
    missing = [k.path for k in KEY_PATHS if concrete(full_doc, k.path) is None]
    assert not missing, missing


@pytest.fixture(scope="module")
def cli_dir(tmp_path_factory):
    """Where the edited reports are saved; and ``commprof.cli.main`` with typer's command built
    once (typer rebuilds it from the signatures at every call: 60 ms, 1,700 calls here)."""
    import typer.main
    import commprof.cli.app as app_module

    command = typer.main.get_command(app_module.app)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(app_module, "app", lambda *args, **kwargs: command(*args, **kwargs))
        yield tmp_path_factory.mktemp("saved")


def report_cli(base: Path, doc: dict, fmt: str | None, capsys) -> tuple[int, str, list[str]]:
    """``commprof report saved.json [--format FMT]``, in-process: (exit status, file, stderr lines)."""
    saved = base / "saved.json"
    saved.write_text(json.dumps(doc))
    capsys.readouterr()
    code = main(["report", str(saved), *(["--format", fmt] if fmt else [])])
    captured = capsys.readouterr()
    if code:
        assert captured.out == ""
    return code, str(saved), captured.err.splitlines()


def _cases(keys, formats):
    return [pytest.param(k, fmt, id=f"{k.path}-{fmt}") for k in keys for fmt in formats]


REQUIRED = [k for k in KEY_PATHS if not k.optional and not k.path.endswith("[]")]
OPTIONAL = [k for k in KEY_PATHS if k.optional]
TYPED = [k for k in KEY_PATHS if k.type is not typing.Any]


def _refused_key(full_doc, key, fmt, cli_dir, capsys) -> None:
    """``key`` deleted: exit 2, nothing on stdout, one line naming it."""
    parts = concrete(full_doc, key.path)
    code, saved, err = report_cli(cli_dir, edited(full_doc, parts), fmt, capsys)
    assert code == 2
    if key.path == "schema":  # load()'s own message, before the model's
        assert err == [f"commprof: error: {saved}: not a commprof report (schema None, "
                       "expected 'commprof.report/1')"]
    else:
        assert err == [f"commprof: error: {saved}: {dotted(parts)}: missing"]


def _refused_type(full_doc, key, fmt, cli_dir, capsys) -> None:
    """``key`` given a value of the wrong type: exit 2, nothing on stdout, one line naming it."""
    parts = concrete(full_doc, key.path)
    value = wrong_value(key.type)
    code, saved, err = report_cli(cli_dir, edited(full_doc, parts, value), fmt, capsys)
    assert code == 2
    assert len(err) == 1, err
    if key.path == "schema":
        want = f"commprof: error: {saved}: not a commprof report (schema {value!r}"
    else:
        want = f"commprof: error: {saved}: {dotted(parts)}: expected {model.expected(key.type)}, got "
    assert err[0].startswith(want), (err[0], want)
    assert json.dumps(value)[:10] in err[0]


# load() refuses a bad file before any renderer runs: every key once (the default format), and
# every renderer once with a refused file (a key of each kind: load()'s own check and the model's).
@pytest.mark.parametrize("key", REQUIRED, ids=lambda k: k.path)
def test_deleted_key(full_doc, key, cli_dir, capsys):
    _refused_key(full_doc, key, None, cli_dir, capsys)


@pytest.mark.parametrize("key", TYPED, ids=lambda k: k.path)
def test_wrong_type(full_doc, key, cli_dir, capsys):
    _refused_type(full_doc, key, None, cli_dir, capsys)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_renderer_is_spared_a_refused_file(full_doc, fmt, cli_dir, capsys):
    schema = next(k for k in REQUIRED if k.path == "schema")  # load()'s own check
    deep = next(k for k in reversed(REQUIRED) if "." in k.path and k.type is not typing.Any)  # the model's
    for key in (schema, deep):
        _refused_key(full_doc, key, fmt, cli_dir, capsys)
        _refused_type(full_doc, key, fmt, cli_dir, capsys)


# Optional keys: older documents lack them, or assemble() writes them only with the data; the
# report must still render, in every format (slow renderers: once without all of them, below).
@pytest.mark.parametrize("key, fmt", _cases(OPTIONAL, PER_KEY_FORMATS))
def test_deleted_optional_key(full_doc, key, fmt, cli_dir, capsys):
    code, _, err = report_cli(cli_dir, edited(full_doc, concrete(full_doc, key.path)), fmt, capsys)
    assert (code, err) == (0, [])


@pytest.mark.parametrize("fmt", FORMATS)
def test_without_any_optional_key(full_doc, fmt, cli_dir, capsys):
    doc = fresh(full_doc)
    for key in OPTIONAL:
        while (parts := concrete(doc, key.path)) is not None:  # every one of a free key's values
            doc = edited(doc, parts)
    code, _, err = report_cli(cli_dir, doc, fmt, capsys)
    assert (code, err) == (0, [])


def test_html_with_comm_s_but_no_exposed_comm_s(full_doc):
    doc = edited(full_doc, ["ranks", 0, "exposed_comm_s"])
    renderers()["html"].render(model.Report.from_dict(doc))


@pytest.mark.parametrize("key", TYPED, ids=lambda k: k.path)
def test_null_and_booleans_where_they_do_not_belong(full_doc, key):
    parts = concrete(full_doc, key.path)
    inner, nullable = model.split_none(key.type)
    bad = [] if nullable else [None]
    if inner in (int, float, str):
        bad.append(True)
    for value in bad:
        with pytest.raises(ReportFileError) as exc:
            model.Report.from_dict(edited(full_doc, parts, value), "r.json")
        assert str(exc.value).startswith(f"r.json: {dotted(parts)}: expected {model.expected(key.type)}, got ")


# -- the model's checks, one by one ------------------------------------------------------------

@pytest.mark.parametrize("edit, message", [
    (lambda d: d["kpis"].update(exposed_comm_fraction="12%"),
     'kpis.exposed_comm_fraction: expected a number or null, got a string "12%"'),
    (lambda d: d["ops"][0].pop("count"), "ops[0].count: missing"),
    (lambda d: d["ops"][0].update(count=3.5), "ops[0].count: expected an integer, got a number 3.5"),
    (lambda d: d["ops"][0].update(count=True), "ops[0].count: expected an integer, got a boolean true"),
    (lambda d: d["kpis"].update(busbw_gbps=math.nan), "kpis.busbw_gbps: expected a number or null, "
                                                      "got a non-finite number nan"),
    (lambda d: d["ranks"][1].update(complete=0), "ranks[1].complete: expected a boolean, got an integer 0"),
    (lambda d: d["run"]["hosts"].append(None), "run.hosts[1]: expected a string, got null"),
    (lambda d: d.update(links=[]), "links: expected an object or null, got a list []"),
    (lambda d: d["links"]["sampler"][0]["sources"].update(nic=None),
     "links.sampler[0].sources.nic: expected an object, got null"),
    (lambda d: d["links"]["timeline"][0]["comm_windows_s"][0].__setitem__(1, "end"),
     'links.timeline[0].comm_windows_s[0][1]: expected a number, got a string "end"'),
    (lambda d: d.update(schema="commprof.report/9"),
     'schema: expected "commprof.report/1", got a string "commprof.report/9"'),
])
def test_messages(full_doc, edit, message):
    doc = fresh(full_doc)
    edit(doc)
    with pytest.raises(ReportFileError) as exc:
        model.Report.from_dict(doc, "r.json")
    assert str(exc.value) == f"r.json: {message}"


def test_long_values_are_shortened_in_messages(full_doc):
    doc = fresh(full_doc)
    doc["verdict"] = ["word"] * 50
    with pytest.raises(ReportFileError) as exc:
        model.Report.from_dict(doc, "r.json")
    assert str(exc.value).startswith("r.json: verdict: expected a string, got a list [") and \
        str(exc.value).endswith("...") and len(str(exc.value)) < 100


def test_integral_floats_are_integers(full_doc):
    """pandas writes an integer column with nulls as floats (ranks[].steps: 3.0): still valid."""
    doc = fresh(full_doc)
    doc["ranks"][0]["steps"] = 4.0
    assert model.Report.from_dict(doc).ranks[0].steps == 4.0


def test_not_an_object():
    with pytest.raises(ReportFileError, match=r"^r.json: expected a JSON object, got a list \[\]$"):
        model.Report.from_dict([], "r.json")


# -- round trip and completeness ----------------------------------------------------------------

def _all_docs(docs) -> dict[str, dict]:
    return {**docs, **{p.name: json.loads(p.read_text()) for p in SAMPLES}}


def test_round_trip(docs):
    for name, doc in _all_docs(docs).items():
        report = model.Report.from_dict(doc, name)
        assert report.to_dict() == doc, name
        assert json.dumps(report.to_dict()) == json.dumps(doc), name  # key order too


def test_typed_access(full_doc):
    r = model.Report.from_dict(full_doc)
    assert isinstance(r.run, model.Run) and r.run.world_size == 3
    assert isinstance(r.ops[0], model.OpRow) and r.ops[0].op == "all_reduce"
    assert isinstance(r.links.sampler[0].sources["nic"], model.SourceStatus)
    assert r.links.sampler[0].sources["nic"].extra_keys == {"interfaces": ["lo"]}
    assert r.hang["schema"] == "commprof.hang/1"
    single = fresh(full_doc)
    del single["ranks"][0]["wait_s"]
    row = model.Report.from_dict(single).ranks[0]
    assert row.wait_s is None and not row.has("wait_s") and row.absent_keys == {"wait_s"}
    assert model.Report.from_dict(full_doc).ranks[0].has("wait_s")


def _holder(report: model.Report, parts: list):
    """The object (a model object, or a dict of free keys) that holds the key ``parts[-1]``."""
    obj = report
    for p in parts[:-1]:
        obj = obj[p] if isinstance(p, int) or isinstance(obj, dict) else getattr(obj, p)
    return obj


def _read(holder, name):
    return holder[name] if isinstance(holder, dict) else getattr(holder, name)


@pytest.mark.parametrize("key", [k for k in KEY_PATHS if k.optional or model.split_none(k.type)[1]],
                         ids=lambda k: k.path)
def test_absent_stays_absent_and_null_stays_null(full_doc, key):
    """A document lacking an optional key reads it as None (``has()`` False) and writes it back
    lacking it; a null reads as None (``has()`` True) and is written back as a null."""
    parts = concrete(full_doc, key.path)
    cases = ([(edited(full_doc, parts), False)] if key.optional else []) + \
        ([(edited(full_doc, parts, None), True)] if model.split_none(key.type)[1] else [])
    for doc, present in cases:
        report = model.Report.from_dict(doc)
        holder = _holder(report, parts)
        if isinstance(holder, model.Model):
            assert holder.has(parts[-1]) == present and _read(holder, parts[-1]) is None
            assert (parts[-1] in holder.absent_keys) == (not present)
        else:  # a free key of an object: absent or null, as in the document
            assert (parts[-1] in holder) == present
        assert json.dumps(report.to_dict()) == json.dumps(doc)


def test_unknown_keys_are_kept(full_doc):
    doc = fresh(full_doc)
    doc["future_section"] = {"a": [1, 2]}
    doc["ops"][0]["future_column"] = None
    doc["links"]["probe"]["latency_us"]["all_gather"] = 3.0
    r = model.Report.from_dict(doc)
    assert r.extra_keys == {"future_section": {"a": [1, 2]}}
    assert r.ops[0].extra_keys == {"future_column": None}
    assert r.to_dict() == doc


def _extra_paths(obj, path="") -> list[str]:
    """Keys a parsed document holds that the model does not define (outside OPEN objects)."""
    out = []
    if isinstance(obj, model.Model):
        if not type(obj).OPEN:
            out += [f"{path}.{k}".lstrip(".") for k in obj.extra_keys]
        for f in model.model_fields(type(obj)):
            if not model.is_free_form(model.field_type(type(obj), f.name)):
                out += _extra_paths(getattr(obj, f.name), f"{path}.{f.name}")
    elif isinstance(obj, list):
        for item in obj:
            out += _extra_paths(item, path + "[]")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out += _extra_paths(v, f"{path}.*")
    return out


def test_assemble_writes_no_key_the_model_lacks(docs):
    """Every key of the reports assemble() builds is a field of the model: when the analysis
    gains a key, commprof/analysis/result/model.py (and with it docs/report-schema.json) gains it too."""
    for name, doc in docs.items():
        extra = sorted(set(_extra_paths(model.Report.from_dict(doc))))
        assert not extra, (name, extra)


def test_load_validates_through_the_model_and_returns_the_report(full_doc, tmp_path):
    saved = tmp_path / "r.json"
    saved.write_text(json.dumps(full_doc))
    loaded = load_document(saved)
    assert isinstance(loaded, model.Report) and loaded == model.Report.from_dict(full_doc)
    assert json.dumps(loaded.to_dict()) == json.dumps(full_doc)
    bad = fresh(full_doc)
    bad["links"]["tcp"][0]["samples"] = "many"
    saved.write_text(json.dumps(bad))
    with pytest.raises(ReportFileError, match=r"links\.tcp\[0\]\.samples: expected an integer, got a string"):
        load_document(saved)


# -- JSON Schema ---------------------------------------------------------------------------------

def test_committed_schema_is_the_generated_one():
    """Regenerate with: python -m commprof.analysis.result.model > docs/report-schema.json"""
    assert SCHEMA_FILE.read_text() == model.schema_text()


def _validator():
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_sample_reports_validate(sample):
    doc = json.loads(sample.read_text())
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in _validator().iter_errors(doc)]
    assert not errors, errors[:5]
    model.Report.from_dict(doc, sample)


def test_built_documents_validate(docs):
    v = _validator()
    for name, doc in docs.items():
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in v.iter_errors(doc)]
        assert not errors, (name, errors[:5])


def test_schema_rejects_what_the_model_rejects(full_doc):
    v = _validator()
    for path, value in ((["kpis", "comm_fraction"], "12%"), (["ops", 0, "count"], 3.5),
                        (["ranks", 0, "complete"], 1), (["run", "hosts", 0], None)):
        assert not v.is_valid(edited(full_doc, path, value)), path
    assert not v.is_valid(edited(full_doc, ["ops", 0, "count"]))
    assert v.is_valid(edited(full_doc, ["ranks", 0, "wait_s"]))  # may be absent


# -- renderers read only what the model defines -------------------------------------------------
# Renderers read the typed report: every attribute read of a model object, every key read of a
# dict inside it (free-form sections, objects with free keys, ``extra_keys``) and every ``has()``
# is noted as a key path (list items: ``[]``).  A read of ``extra_keys`` or of an attribute that is
# no field is a key the model does not define; ``to_dict()`` is the dict round trip.  Each key
# path has its own recording class, so a copy a renderer makes (``dataclasses.replace``, as the
# terminal's printable copy does) records its reads at the same paths.

ROUND_TRIP = "to_dict()"
_MODEL_API = {"has", "to_dict", "from_dict", "absent_keys", "key_order", "OPEN"}  # not keys


class Recorded(dict):
    """A dict that notes every key read (``[]``, ``get``, ``in``, iteration), its values recorded."""

    def __init__(self, data: dict, path: tuple, recorder: "Recorder"):
        super().__init__({k: recorder.record(v, path + (k,)) for k, v in data.items()})
        self._path, self._seen = path, recorder.seen

    def _read(self, k):
        self._seen.add(self._path + (k,))

    def __getitem__(self, k):
        self._read(k)
        return super().__getitem__(k)

    def get(self, k, default=None):
        self._read(k)
        return super().get(k, default)

    def __contains__(self, k):
        self._read(k)
        return super().__contains__(k)

    def __iter__(self):
        for k in super().__iter__():
            self._read(k)
            yield k

    def keys(self):
        return list(iter(self))

    def items(self):
        return [(k, super(Recorded, self).__getitem__(k)) for k in self]

    def values(self):
        return [v for _, v in self.items()]


class Recorder:
    """What a renderer reads of one report: ``seen``, the key paths read."""

    def __init__(self):
        self.seen: set = set()
        self._classes: dict = {}

    def record(self, value, path: tuple = ()):
        """``value`` (a parsed report, or a part of one at key path ``path``) noting its reads."""
        if isinstance(value, model.Model):
            for f in model.model_fields(type(value)):
                setattr(value, f.name, self.record(getattr(value, f.name), path + (f.name,)))
            value.extra_keys = Recorded(value.extra_keys, path, self)
            value.__class__ = self._recording_class(type(value), path)
            return value
        if isinstance(value, dict):
            return Recorded(value, path, self)
        if isinstance(value, list):
            return [self.record(v, path + ("[]",)) for v in value]
        return value

    def _recording_class(self, cls: type, path: tuple) -> type:
        """A subclass of model class ``cls`` whose instances note what is read of them at ``path``."""
        if (cls, path) in self._classes:
            return self._classes[cls, path]
        recorder = self

        def __getattribute__(obj, name):
            if not name.startswith("_") and name not in _MODEL_API and name != "extra_keys":
                recorder.seen.add(path + (name,))  # a field, or (undefined) any other attribute
            return super(sub, obj).__getattribute__(name)

        def has(obj, name):
            recorder.seen.add(path + (name,))
            return super(sub, obj).has(name)

        def to_dict(obj):  # noted once: not again for the objects inside
            if not any(p[-1] == ROUND_TRIP and path[:len(p) - 1] == p[:-1] for p in recorder.seen):
                recorder.seen.add(path + (ROUND_TRIP,))
            return super(sub, obj).to_dict()

        sub = type(f"Recording{cls.__name__}", (cls,),
                   {"__getattribute__": __getattribute__, "has": has, "to_dict": to_dict})
        self._classes[cls, path] = sub
        return sub


def test_the_recorder_notes_what_is_read(full_doc):
    """The checks below can fail: reads of fields, dict keys, ``has``, unknown keys and
    attributes, and ``to_dict()`` are all noted, at their key paths, those of a copy too."""
    import dataclasses
    doc = fresh(full_doc)
    doc["ops"][0]["future_column"] = 1
    rec = Recorder()
    r = rec.record(model.Report.from_dict(doc))
    assert isinstance(r, model.Report) and isinstance(r.ops[0], model.OpRow)
    assert (r.ops[0].count, r.ops[0].extra_keys.get("future_column")) == (doc["ops"][0]["count"], 1)
    r.links.sampler[0].sources["nic"].why
    r.hang.get("blocked")
    r.ranks[0].has("wait_s")
    getattr(r.kpis, "no_such_kpi", None)
    r.steps.to_dict()
    assert rec.seen >= {("ops", "[]", "count"), ("ops", "[]", "future_column"), ("hang", "blocked"),
                        ("links", "sampler", "[]", "sources", "nic", "why"), ("ranks", "[]", "wait_s"),
                        ("kpis", "no_such_kpi"), ("steps", ROUND_TRIP)}
    undefined = {p for p in rec.seen if not model.defines(p)}
    assert undefined == {("ops", "[]", "future_column"), ("kpis", "no_such_kpi"), ("steps", ROUND_TRIP)}
    copy = dataclasses.replace(r.steps, count=5)  # the copy's reads: at the original's paths
    rec.seen.clear()
    assert copy.count == 5 and copy.has("p90_s") and getattr(copy, "no_such_key", None) is None
    assert rec.seen == {("steps", "count"), ("steps", "p90_s"), ("steps", "no_such_key")}


@pytest.fixture(scope="module")
def reads(docs):
    """``reads(name)``: {document name: the :class:`Recorder` of renderer ``name`` on it}, made once."""
    cache: dict = {}

    def of(name: str) -> dict[str, Recorder]:
        if name not in cache:
            out = {}
            for doc_name, doc in docs.items():
                rec = Recorder()
                renderers()[name].render(rec.record(model.Report.from_dict(fresh(doc))),
                                         color=False, width=120)
                out[doc_name] = rec
            cache[name] = out
        return cache[name]
    return of


@pytest.mark.parametrize("name", FORMATS)
def test_renderers_read_only_model_keys(reads, name):
    for doc_name, rec in reads(name).items():
        round_trips = sorted(".".join(p[:-1]) or "report" for p in rec.seen if p[-1] == ROUND_TRIP)
        assert not round_trips or (name == "json" and round_trips == ["report"]), (doc_name, round_trips)
        undefined = sorted(".".join(p) for p in rec.seen if p[-1] != ROUND_TRIP and not model.defines(p))
        assert not undefined, (doc_name, undefined)


# -- renderers accept null wherever the model does ---------------------------------------------

NULLABLE = [k for k in KEY_PATHS if model.split_none(k.type)[1]]
# Renderers that fail on a null the model allows (and assemble() can write): none today; a new one
# is listed here as a strict xfail while it is being fixed.
NULL_GAPS: dict = {}


def _null_cases():
    out = []
    for k in NULLABLE:
        for fmt in FORMATS:
            gap = NULL_GAPS.get((k.path, fmt))
            if fmt in ONE_PAGE_RENDERERS and not gap:
                continue  # all nulls at once, below
            marks = [pytest.mark.xfail(strict=True, reason=gap)] if gap else []
            out.append(pytest.param(k, fmt, id=f"{k.path}-{fmt}", marks=marks))
    return out


@pytest.mark.parametrize("key, fmt", _null_cases())
def test_renderers_accept_null(full_doc, key, fmt):
    renderers()[fmt].render(model.Report.from_dict(edited(full_doc, concrete(full_doc, key.path), None)))


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_allowed_null_at_once(full_doc, fmt):
    doc = fresh(full_doc)
    for key in NULLABLE:
        parts = concrete(doc, key.path)
        if parts is not None and (key.path, fmt) not in NULL_GAPS:
            doc = edited(doc, parts, None)
    renderers()[fmt].render(model.Report.from_dict(doc))
