"""commprof.analysis.scale.summary_file: RankResults written and read back are equivalent to the originals
(field by field, and by the report document summarize builds from them); damaged, foreign or newer
files are refused with CaptureFormatError."""
from __future__ import annotations

import dataclasses
import json
import math
import struct
import zlib

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import synthetic as S
from commprof.analysis.measures import latency
from commprof.analysis.outcome import summary as summary_mod
from commprof.analysis.measures.latency import Latency
from commprof.analysis.host.load import open_run
from commprof.analysis.host.rank import RankPart
from commprof.analysis.host.rank import RankResult
from commprof.analysis.scale.reduce import reduce_file
from commprof.errors import CaptureFormatError
from commprof.analysis.scale import summary_file as rank_summary
from commprof.analysis.outcome.assemble import assemble

QS = np.linspace(0, 1, 201).tolist() + [1e-9, 0.001, 0.25, 0.5, 0.75, 0.99, 0.999, 1 - 1e-9]


# ---- runs ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from demo_run import demo_run
    return demo_run(tmp_path_factory)


@pytest.fixture(scope="module")
def synthetic_runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("rank-summary")
    incomplete = S.periodic_rank(1, host="node1", destroy=False)
    incomplete.complete = False
    return {
        "periodic": S.write_run(base / "periodic", [S.periodic_rank(0), incomplete]),
        "nccl": S.write_run(base / "nccl", [S.nccl_rank(0), S.nccl_rank(1)]),
        "single": S.write_run(base / "single", [S.periodic_rank(0, steps=0)]),
    }


def run_dirs(demo, synthetic_runs):
    return {"demo": demo, **synthetic_runs}


def reduced(run_dir) -> list[RankResult]:
    return [reduce_file(p) for p in open_run(run_dir).paths]


def roundtrip(results, meta=None):
    data = rank_summary.encode(results, meta if meta is not None else {"run": "x"})
    return rank_summary.decode(data, "node0.cpsum")


# ---- comparison ---------------------------------------------------------------------------------

def assert_same(a, b, where="value"):
    """Equal values of the same types, NaN equal to NaN; frames, arrays and Latency exactly."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b, check_dtype=True, check_exact=True,
                                      check_index_type=True, check_column_type=True,
                                      check_categorical=True, check_flags=True), where
        for c in range(a.shape[1]):
            if a.dtypes.iloc[c] == object:
                assert_same(a.iloc[:, c].tolist(), b.iloc[:, c].tolist(), f"{where}[{c}]")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert a.tobytes() == b.tobytes(), where  # bitwise: NaNs and -0.0 too
        assert np.array_equal(a, b, equal_nan=a.dtype.names is None and a.dtype.kind == "f") or \
            a.dtype.names is not None, where
    elif isinstance(a, Latency):
        assert (a.count, a.min, a.max) == (b.count, b.min, b.max), where
        assert [latency.quantile(a, q) for q in QS] == [latency.quantile(b, q) for q in QS], where
        assert [a.sketch.get_quantile_value(q) for q in QS] == [b.sketch.get_quantile_value(q) for q in QS]
        assert (a.sketch.count, a.sketch.sum, a.sketch._min, a.sketch._max, a.sketch._zero_count) == \
            (b.sketch.count, b.sketch.sum, b.sketch._min, b.sketch._max, b.sketch._zero_count), where
        for sa, sb in ((a.sketch._store, b.sketch._store),
                       (a.sketch._negative_store, b.sketch._negative_store)):
            assert (sa.bins, sa.offset, sa.count, type(sa.min_key), type(sa.max_key), sa.min_key,
                    sa.max_key) == (sb.bins, sb.offset, sb.count, type(sb.min_key),
                                    type(sb.max_key), sb.min_key, sb.max_key), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, (float, np.floating)) and math.isnan(a):
        assert math.isnan(b), where
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_same_result(a: RankResult, b: RankResult):
    for f in dataclasses.fields(RankResult):
        if f.name != "part":
            assert_same(getattr(a, f.name), getattr(b, f.name), f.name)
    for f in dataclasses.fields(RankPart):
        assert_same(getattr(a.part, f.name), getattr(b.part, f.name), f"part.{f.name}")


def merged_equal(a: dict, b: dict):
    """Latency merges of originals and decoded ones agree (merge works on decoded sketches)."""
    for key in a:
        ma, mb = latency.merge([a[key], a[key]]), latency.merge([b[key], a[key]])
        assert_same(ma, mb, f"merge {key}")


# ---- round trips --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["demo", "periodic", "nccl", "single"])
def test_results_of_real_and_synthetic_runs_round_trip_field_by_field(name, demo, synthetic_runs):
    results = reduced(run_dirs(demo, synthetic_runs)[name])
    meta = {"host": "node0", "ranks": [r.rank for r in results], "t": math.nan, "n": np.int64(3)}
    meta_back, back = roundtrip(results, meta)
    assert_same(meta, meta_back, "meta")
    assert len(back) == len(results)
    for a, b in zip(results, back):
        assert_same_result(a, b)
        merged_equal(a.part.latency, b.part.latency)
    if name == "nccl":  # GPU windows: the GPU fields are there and came back
        assert all(b.part.gpu_steps is not None and len(b.part.gpu_steps) and "gpu" in b.part.row
                   for b in back)
    if name == "demo":
        assert all(len(b.part.latency) and len(b.match_rows) and len(b.sync) for b in back)


def test_awkward_values_round_trip():
    base = reduced_cache()
    part = dataclasses.replace(
        base.part,
        row={**base.part.row, "nan": math.nan, "inf": -math.inf, "np": np.float32(1.5),
             "i": np.int16(-3), "b": np.bool_(True), "t": (1, "a", None), "$odd": 1, "big": 2**70},
        process={**base.part.process, "fixes": [{"name": "bucket", "args": [1, 2.5]}],
                 3: "int key", ("x", 1): {"nested": {1, 2}}},
        backends={"gloo", "nccl"},
        latency={**base.part.latency, ("empty", 1): latency.latency_of(np.zeros(0)),
                 ("mixed", 4): latency.latency_of(np.array([0.0, 0.0, 1.0, 3e3, 7e9, 1e-300]))},
        gpu=pd.DataFrame({"op": pd.Series(["all_reduce"], dtype="str"), "group_size": [2],
                          "gpu_calls": [3], "gpu_time_ns": [1.5e6], "gpu_bytes": [8.0],
                          "gpu_bus_bytes": [8.0]}),
        degraded=pd.DataFrame({"where": ["coll", None], "count": pd.Series([1, None], dtype=object),
                               "error": [["a", 1], None],
                               "cat": pd.Categorical(["x", None], categories=["z", "x"], ordered=True),
                               "nullable": pd.array([1, None], dtype="Int64"),
                               "f": [np.nan, np.inf]}, index=pd.Index([4, 9], name="k")),
        inflight=None, losses=None, buckets=None)
    res = RankResult(np.int64(7), part, ["g0", "g\u00e9"], base.match_rows[::-1].copy(),
                     base.sync.iloc[0:0], "rank00007.cpf: torn record; records before it were kept")
    _, (back,) = roundtrip([res])
    assert_same_result(res, back)
    assert back.part.degraded["error"].tolist() == [["a", 1], None]


_REDUCED = {}


def reduced_cache() -> RankResult:
    if "r" not in _REDUCED:
        import tempfile
        from pathlib import Path
        with tempfile.TemporaryDirectory() as d:
            _REDUCED["r"] = reduced(S.write_run(Path(d) / "run", [S.periodic_rank(0)]))[0]
    return _REDUCED["r"]


def test_unstorable_values_are_refused_when_writing():
    base = reduced_cache()
    for bad in (object(), np.array([object()], dtype=object), pd.Timestamp(0)):
        part = dataclasses.replace(base.part, row={"x": bad})
        with pytest.raises(TypeError):
            rank_summary.encode([dataclasses.replace(base, part=part)], {})


@pytest.mark.parametrize("name", ["demo", "periodic", "nccl", "single"])
def test_summarize_of_decoded_results_gives_the_same_report(name, demo, synthetic_runs, monkeypatch):
    run_dir = run_dirs(demo, synthetic_runs)[name]
    data = rank_summary.encode(reduced(run_dir), {"run": str(run_dir)})
    original = assemble(summary_mod.summarize(open_run(run_dir), jobs=1)).to_dict()

    monkeypatch.setattr(summary_mod, "reduce_run", yielding(lambda: rank_summary.decode(data, "n")[1]))
    again = assemble(summary_mod.summarize(open_run(run_dir), jobs=1)).to_dict()
    assert summary_mod.reduce_run.calls == 1
    assert dump(again) == dump(original)


def dump(doc: dict) -> str:
    return json.dumps(doc, sort_keys=True, allow_nan=True)


def yielding(make_results):
    """A stand-in for node_summary.reduce_run (same signature) yielding ``make_results()``."""
    def reduce_run(src, jobs=None, executor=None, progress=None, node_summaries=True):
        reduce_run.calls += 1
        results = make_results()
        for done, r in enumerate(results, 1):
            if r.note:
                src.notes.append(r.note)
            if progress:
                progress(done, len(results))
            yield r
    reduce_run.calls = 0
    return reduce_run


def test_summarize_of_decoded_results_with_gpu_tables_and_notes_gives_the_same_report(
        synthetic_runs, monkeypatch):
    """Fields the synthetic runs leave empty (part.gpu: Flight Recorder GPU times; notes),
    filled in by hand on both sides."""
    run_dir = synthetic_runs["periodic"]

    def results():
        out = reduced(run_dir)
        for r in out:
            r.note = f"rank{r.rank}: torn record; records before it were kept"
            r.part.gpu = pd.DataFrame({"op": ["all_reduce"], "group_size": [2], "gpu_calls": [3],
                                       "gpu_time_ns": [6.0e7 + r.rank], "gpu_bytes": [1.2e7],
                                       "gpu_bus_bytes": [1.2e7]})
            r.part.process = {**r.part.process, "fr_seen": 3, "fr_lost": 1}
        return out

    data = rank_summary.encode(results(), {})
    monkeypatch.setattr(summary_mod, "reduce_run", yielding(results))
    original = assemble(summary_mod.summarize(open_run(run_dir), jobs=1)).to_dict()
    monkeypatch.setattr(summary_mod, "reduce_run", yielding(lambda: rank_summary.decode(data, "n")[1]))
    again = assemble(summary_mod.summarize(open_run(run_dir), jobs=1)).to_dict()
    assert "torn record" in dump(original) and "host + gpu" in dump(original)
    assert dump(again) == dump(original)


# ---- bad input ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def good(synthetic_runs) -> bytes:
    return rank_summary.encode(reduced(synthetic_runs["periodic"]), {"host": "node0"})


def refused(data: bytes) -> str:
    with pytest.raises(CaptureFormatError) as info:
        rank_summary.decode(data, "bad.cpsum")
    assert info.value.path == "bad.cpsum"
    return info.value.reason


def header_len(data: bytes) -> int:
    (n,) = struct.unpack_from("<H", data, len(rank_summary.MAGIC))
    return len(rank_summary.MAGIC) + 2 + n + 12


def test_empty_foreign_and_wrong_magic_files_are_refused(good):
    assert "empty" in refused(b"")
    assert "magic" in refused(b"PAR1" + good[4:])
    assert "magic" in refused(b"\x80\x04\x95" + good)  # a pickle is not read
    assert "magic" in refused(json.dumps({"meta": {}}).encode())
    assert "truncated" in refused(good[:3])


def test_truncated_files_are_refused_at_every_kind_of_offset(good):
    h = header_len(good)
    for cut in sorted({1, 6, 7, 8, 10, h - 5, h - 1, h, h + 1, h + 4, len(good) // 2, len(good) - 1}):
        reason = refused(good[:cut])
        assert "truncated" in reason, (cut, reason)


def test_trailing_bytes_and_flipped_bytes_are_refused(good):
    assert "after the payload" in refused(good + b"\0")
    h = header_len(good)
    for pos in (h, h + 3, h + 40, len(good) // 2, len(good) - 1):
        flipped = bytearray(good)
        flipped[pos] ^= 0x10
        assert "CRC32" in refused(bytes(flipped))
    flipped = bytearray(good)
    flipped[h - 1] ^= 0x01  # the CRC field itself
    assert "CRC32" in refused(bytes(flipped))


def with_schema(data: bytes, schema: str) -> bytes:
    h = header_len(data)
    fixed_and_payload = data[h - 12:]
    s = schema.encode()
    return rank_summary.MAGIC + struct.pack("<H", len(s)) + s + fixed_and_payload


def test_newer_major_versions_and_other_schemas_are_refused_minor_ones_read(good):
    assert "newer" in refused(with_schema(good, "commprof.summary/2"))
    assert "newer" in refused(with_schema(good, "commprof.summary/10.1"))
    assert "unknown schema" in refused(with_schema(good, "commprof.hang/1"))
    assert "unknown schema" in refused(with_schema(good, "commprof.summary/x"))
    meta, results = rank_summary.decode(with_schema(good, "commprof.summary/1.3"), "p")
    assert meta == {"host": "node0"} and len(results) == 2


def with_payload(payload: bytes) -> bytes:
    s = rank_summary.SCHEMA.encode()
    return (rank_summary.MAGIC + struct.pack("<H", len(s)) + s
            + struct.pack("<QI", len(payload), zlib.crc32(payload)) + payload)


def sections(*parts: bytes) -> bytes:
    return struct.pack("<I", len(parts)) + b"".join(struct.pack("<Q", len(p)) + p for p in parts)


def test_well_checksummed_but_malformed_documents_are_refused():
    for payload in (b"", b"\x01\0\0\0", sections(b"not json"), sections(b"[1, 2]"),
                    sections(b'{"meta": NaN, "results": []}'),
                    sections(b'{"meta": {}, "results": [{"rank": 0}]}'),
                    sections(b'{"meta": {"x": {"$nd": [1, "<f8", [2]]}}, "results": []}', b"\0" * 15),
                    sections(b'{"meta": {"x": {"$nd": [1, "O", [1]]}}, "results": []}', b"\0" * 8),
                    sections(b'{"meta": {"x": {"$df": {"arrow": 1, "json": [], '
                             b'"range_columns": null}}}, "results": []}', b"garbage arrow"),
                    sections(b'{"meta": {"x": {"$pickle": "gASVAAAA"}}, "results": []}')):
        assert "malformed" in refused(with_payload(payload))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_random_damage_only_ever_raises_capture_format_error(good, data):
    blob = bytearray(good)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(blob) - 1))
        blob[pos] ^= data.draw(st.integers(1, 255))
    cut = data.draw(st.integers(0, len(blob)))
    try:
        rank_summary.decode(bytes(blob[:cut]), "fuzz.cpsum")
    except CaptureFormatError:
        pass
