"""Values of a per-node summary file (:mod:`commprof.analysis.scale.summary_file`) as JSON plus binary
blobs: plain JSON where lossless, otherwise a one-key ``$`` object (the layout is in
summary_file's docstring).  Writing refuses what it cannot store exactly; reading checks every
value and raises :class:`Bad` for anything not shaped as written.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re

import numpy as np
import pandas as pd

from commprof.analysis.measures.latency import Latency
from commprof.analysis.host.rank import RankPart, RankResult

_NP_KINDS = "biuf"  # numpy dtypes allowed in the file: bool, signed/unsigned int, float
_RESULT_FIELDS = ("rank", "match_names", "match_rows", "sync", "note")


class Bad(Exception):
    """A document that is not shaped as this module writes it (turned into CaptureFormatError)."""

class Encoder:
    """Values to JSON, with binary parts appended to ``blobs``."""

    def __init__(self, blobs: list[bytes]):
        self.blobs = blobs

    def blob(self, data: bytes) -> int:
        self.blobs.append(bytes(data))
        return len(self.blobs)  # section index (0 is the document)

    def result(self, r: RankResult) -> dict:
        out = {name: self.value(getattr(r, name)) for name in _RESULT_FIELDS}
        out["part"] = {f.name: self.value(getattr(r.part, f.name)) for f in dataclasses.fields(RankPart)}
        return out

    def value(self, v):
        if v is None or isinstance(v, (bool, str)):
            return v
        if isinstance(v, np.generic):
            if v.dtype.kind not in _NP_KINDS:
                raise TypeError(f"numpy scalar of dtype {v.dtype} cannot be stored")
            return {"$np": [v.dtype.str, self.value(v.item())]}
        if isinstance(v, int):
            return int(v)
        if isinstance(v, float):
            return float(v) if math.isfinite(v) else {"$float": repr(float(v))}
        if isinstance(v, list):
            return [self.value(x) for x in v]
        if isinstance(v, tuple):
            return {"$tuple": [self.value(x) for x in v]}
        if isinstance(v, (set, frozenset)):
            items = [self.value(x) for x in v]
            return {"$set": sorted(items, key=lambda x: json.dumps(x, sort_keys=True))}
        if isinstance(v, dict):
            if all(isinstance(k, str) and not k.startswith("$") for k in v):
                return {k: self.value(x) for k, x in v.items()}
            return {"$dict": [[self.value(k), self.value(x)] for k, x in v.items()]}
        if isinstance(v, np.ndarray):
            return self.array(v)
        if isinstance(v, pd.DataFrame):
            return self.frame(v)
        if isinstance(v, Latency):
            return self.latency(v)
        raise TypeError(f"{type(v).__name__} cannot be stored in a commprof summary")

    def array(self, a: np.ndarray) -> dict:
        if a.dtype.hasobject or (a.dtype.names is None and a.dtype.kind not in _NP_KINDS):
            raise TypeError(f"numpy array of dtype {a.dtype} cannot be stored")
        descr = a.dtype.descr if a.dtype.names is not None else a.dtype.str
        return {"$nd": [self.blob(np.ascontiguousarray(a).tobytes()), descr, list(a.shape)]}

    def frame(self, df: pd.DataFrame) -> dict:
        import pyarrow as pa
        json_cols = []
        if not _same_frame(df, _arrow_roundtrip(df)):  # move the object columns Arrow changes
            json_cols = [i for i in range(df.shape[1]) if df.dtypes.iloc[i] == object
                         and not _same_frame(df.iloc[:, [i]], _arrow_roundtrip(df.iloc[:, [i]]))]
        keep = [i for i in range(df.shape[1]) if i not in json_cols]
        table = pa.Table.from_pandas(df.iloc[:, keep], preserve_index=None)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as w:
            w.write_table(table)
        out = {"$df": {"arrow": self.blob(sink.getvalue().to_pybytes()),
                       "json": [[i, self.value(df.columns[i]), self.value(df.iloc[:, i].tolist())]
                                for i in json_cols],
                       "range_columns": ([df.columns.start, df.columns.stop, df.columns.step]
                                         if isinstance(df.columns, pd.RangeIndex) else None)}}
        back = Decoder([b""] + self.blobs).value(json.loads(json.dumps(out)))
        if not _same_frame(df, back):
            raise ValueError(f"a DataFrame with columns {list(df.columns)} would not round-trip exactly")
        return out

    def latency(self, lat: Latency) -> dict:
        from ddsketch import DDSketch
        from ddsketch.mapping import LogarithmicMapping
        from ddsketch.store import DenseStore
        sk = lat.sketch
        if (type(sk) is not DDSketch or type(sk._mapping) is not LogarithmicMapping
                or type(sk._store) is not DenseStore or type(sk._negative_store) is not DenseStore):
            raise TypeError("only ddsketch.DDSketch (logarithmic mapping, dense stores) can be stored")
        return {"$latency": {
            "count": self.value(lat.count), "min": self.value(lat.min), "max": self.value(lat.max),
            "relative_accuracy": sk._mapping.relative_accuracy,
            "mapping_offset": self.value(sk._mapping._offset),
            "zero_count": self.value(sk._zero_count), "sketch_count": self.value(sk._count),
            "sum": self.value(sk._sum), "sketch_min": self.value(sk._min),
            "sketch_max": self.value(sk._max),
            "stores": [self.store(sk._store), self.store(sk._negative_store)]}}

    def store(self, st) -> dict:
        from ddsketch.store import _NegativeIntInfinity, _PositiveIntInfinity

        def key(k):  # the empty store's sentinels are ints equal to 0: keep which one it was
            return "+inf" if isinstance(k, _PositiveIntInfinity) else (
                "-inf" if isinstance(k, _NegativeIntInfinity) else int(k))
        return {"offset": int(st.offset), "min_key": key(st.min_key), "max_key": key(st.max_key),
                "count": self.value(st.count), "chunk_size": int(st.chunk_size),
                "bins": self.array(np.asarray(st.bins, dtype="<f8"))}


def _arrow_roundtrip(df: pd.DataFrame):
    import pyarrow as pa
    try:
        return pa.Table.from_pandas(df, preserve_index=None).to_pandas()
    except (pa.ArrowException, TypeError, ValueError):
        return None


def _same_frame(a: pd.DataFrame, b) -> bool:
    """``b`` equals ``a`` exactly: values, dtypes, index, columns, and the Python type of every
    element of object columns."""
    if not isinstance(b, pd.DataFrame):
        return False
    try:
        pd.testing.assert_frame_equal(a, b, check_dtype=True, check_exact=True, check_index_type=True,
                                      check_column_type=True, check_names=True, check_categorical=True,
                                      check_flags=True, check_freq=True)
    except (AssertionError, TypeError, ValueError):
        return False
    return all(list(map(type, a.iloc[:, i])) == list(map(type, b.iloc[:, i]))
               for i in range(a.shape[1]) if a.dtypes.iloc[i] == object)

def _check(cond, what: str):
    if not cond:
        raise Bad(what)


def _int(v, what: str) -> int:
    _check(type(v) is int, f"{what} is not an integer")
    return v


class Decoder:
    def __init__(self, sections: list[bytes]):
        self.sections = sections

    def blob(self, i) -> bytes:
        _check(type(i) is int and 1 <= i < len(self.sections), f"no section {i!r}")
        return self.sections[i]

    def result(self, r) -> RankResult:
        _check(isinstance(r, dict) and set(r) == {*_RESULT_FIELDS, "part"}, "a result's fields")
        part = r["part"]
        names = {f.name for f in dataclasses.fields(RankPart)}
        _check(isinstance(part, dict) and set(part) == names, "a RankPart's fields")
        res = RankResult(part=RankPart(**{k: self.value(v) for k, v in part.items()}),
                         **{k: self.value(r[k]) for k in _RESULT_FIELDS})
        _check(isinstance(res.rank, (int, np.integer)) and isinstance(res.match_names, list)
               and isinstance(res.match_rows, np.ndarray) and isinstance(res.sync, pd.DataFrame)
               and (res.note is None or isinstance(res.note, str)), "a result's field types")
        _check_shape(res)
        return res

    def value(self, v):
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        if isinstance(v, list):
            return [self.value(x) for x in v]
        _check(isinstance(v, dict), f"unexpected JSON value {type(v).__name__}")
        tags = [k for k in v if k.startswith("$")]
        if not tags:
            return {k: self.value(x) for k, x in v.items()}
        _check(len(v) == 1, f"tag {tags[0]} with other keys")
        tag, body = tags[0], v[tags[0]]
        if tag == "$float":
            _check(body in ("nan", "inf", "-inf"), f"$float {body!r}")
            return float(body)
        if tag in ("$tuple", "$set", "$dict"):
            _check(isinstance(body, list), f"{tag} is not a list")
            items = [self.value(x) for x in body]
            if tag == "$tuple":
                return tuple(items)
            if tag == "$set":
                return set(items)
            _check(all(isinstance(x, list) and len(x) == 2 for x in items), "$dict pairs")
            return {k: x for k, x in items}
        if tag == "$np":
            _check(isinstance(body, list) and len(body) == 2, "$np")
            dt = self.dtype(body[0])
            _check(dt.names is None, "$np of a structured dtype")
            return dt.type(self.value(body[1]))
        if tag == "$nd":
            return self.array(body)
        if tag == "$df":
            return self.frame(body)
        if tag == "$latency":
            return self.latency(body)
        raise Bad(f"unknown tag {tag}")

    def dtype(self, descr) -> np.dtype:
        if isinstance(descr, list):  # structured: [[name, type], ...]
            _check(all(isinstance(f, list) and len(f) == 2 and all(isinstance(x, str) for x in f)
                       for f in descr), "structured dtype descr")
            dt = np.dtype([tuple(f) for f in descr])
            _check(all(dt.fields[n][0].kind in _NP_KINDS + "V" for n in dt.names), "field dtypes")
        else:
            _check(isinstance(descr, str), "dtype")
            dt = np.dtype(descr)
            _check(dt.kind in _NP_KINDS, f"dtype {descr}")
        _check(not dt.hasobject, "object dtype")
        return dt

    def array(self, body) -> np.ndarray:
        _check(isinstance(body, list) and len(body) == 3 and isinstance(body[2], list), "$nd")
        raw, dt = self.blob(body[0]), self.dtype(body[1])
        shape = tuple(_int(s, "an array dimension") for s in body[2])
        _check(all(s >= 0 for s in shape), "negative array dimension")
        _check(dt.itemsize * math.prod(shape) == len(raw), "array size does not match its bytes")
        return np.frombuffer(raw, dtype=dt).reshape(shape).copy()

    def frame(self, body) -> pd.DataFrame:
        import pyarrow as pa
        _check(isinstance(body, dict) and set(body) == {"arrow", "json", "range_columns"}
               and isinstance(body["json"], list), "$df")
        reader = pa.ipc.open_stream(self.blob(body["arrow"]))
        table = reader.read_all()
        table.validate(full=True)
        for field in table.schema:
            _check(not isinstance(field.type, pa.ExtensionType), f"extension type in column {field.name}")
        df = table.to_pandas()
        for col in body["json"]:
            _check(isinstance(col, list) and len(col) == 3 and type(col[0]) is int, "a JSON column")
            values = self.value(col[2])
            _check(isinstance(values, list) and len(values) == len(df)
                   and 0 <= col[0] <= df.shape[1], "a JSON column's length or position")
            df.insert(col[0], self.value(col[1]), pd.Series(values, index=df.index, dtype=object),
                      allow_duplicates=True)
        if body["range_columns"] is not None:  # Arrow keeps no RangeIndex of column labels
            cols = pd.RangeIndex(*[_int(x, "range_columns") for x in body["range_columns"]])
            _check(len(cols) == df.shape[1], "range_columns length")
            df.columns = cols
        return df

    def latency(self, body) -> Latency:
        from ddsketch import DDSketch
        from ddsketch.store import _neg_infinity, _pos_infinity
        keys = {"count", "min", "max", "relative_accuracy", "mapping_offset", "zero_count",
                "sketch_count", "sum", "sketch_min", "sketch_max", "stores"}
        _check(isinstance(body, dict) and set(body) == keys, "$latency fields")
        b = {k: self.value(v) for k, v in body.items()}
        acc = b["relative_accuracy"]
        _check(type(acc) is float and 0 < acc < 1, "sketch relative accuracy")
        floats = ("min", "max", "mapping_offset", "zero_count", "sketch_count", "sum",
                  "sketch_min", "sketch_max")
        _check(all(type(b[k]) in (int, float) for k in floats), "sketch figures are not numbers")
        _check(b["mapping_offset"] == 0.0, "sketch mapping offset")
        sk = DDSketch(acc)
        _check(isinstance(b["stores"], list) and len(b["stores"]) == 2, "sketch stores")
        for st, s in zip((sk._store, sk._negative_store), b["stores"]):
            _check(isinstance(s, dict) and set(s) == {"offset", "min_key", "max_key", "count",
                                                       "chunk_size", "bins"}, "store fields")
            bins = s["bins"]
            _check(isinstance(bins, np.ndarray) and bins.dtype == np.dtype("<f8") and bins.ndim == 1,
                   "store bins")
            st.offset = _int(s["offset"], "store offset")
            st.chunk_size = _int(s["chunk_size"], "store chunk size")
            _check(st.chunk_size > 0 and type(s["count"]) in (int, float), "store chunk size or count")
            st.count = s["count"]
            st.bins = bins.tolist()
            empty = s["min_key"] == "+inf" and s["max_key"] == "-inf"
            if empty:
                st.min_key, st.max_key = _pos_infinity, _neg_infinity
            else:
                st.min_key, st.max_key = _int(s["min_key"], "min key"), _int(s["max_key"], "max key")
                _check(st.offset <= st.min_key <= st.max_key < st.offset + len(st.bins),
                       "store keys outside its bins")
        sk._zero_count, sk._count, sk._sum = b["zero_count"], b["sketch_count"], b["sum"]
        sk._min, sk._max = b["sketch_min"], b["sketch_max"]
        return Latency(sk, _int(b["count"], "latency count"), b["min"], b["max"])


_PART_TYPES = {  # RankPart field -> the types a reduction gives it (analysis/host/rank.py)
    "row": dict, "process": dict, "steps": pd.DataFrame, "ops": pd.DataFrame, "latency": dict,
    "moving_bytes": (int, float, np.number), "moving_bus_bytes": (int, float, np.number),
    "moving_ns": (int, float, np.number), "backends": set, "collectives": (int, np.integer),
    "degraded": pd.DataFrame, "bus_bytes": (int, float, np.number),
    "buckets": (pd.DataFrame, type(None)), "inflight": (tuple, type(None)),
    "gpu": (pd.DataFrame, type(None)), "blocking_calls": (int, np.integer),
    "gpu_steps": (pd.DataFrame, type(None)), "gpu_window_s": (int, float, np.number),
    "losses": (pd.DataFrame, type(None)),
}


def _check_shape(res: RankResult) -> None:
    """The types a reduction gives each field and the known keys of its ``row``/``process``
    (numbers, text, flags; other keys are free), so that a CRC-valid edit does not reach the
    analysis as a list where a number was, a structured array without its fields, ..."""
    from commprof.analysis.cross.crossrank import _PART
    part = res.part
    for name, typ in _PART_TYPES.items():
        v = getattr(part, name)
        _check(isinstance(v, typ) and not (isinstance(v, bool) and typ is not dict),
               f"RankPart.{name} is a {type(v).__name__}")
    for name in ("row", "process"):
        for k, v in getattr(part, name).items():
            if not isinstance(k, str):
                continue
            _check(not (k in _NUMBERS or _NUMERIC_KEY.search(k)) or v is None or (
                isinstance(v, (int, float, np.number)) and not isinstance(v, bool)),
                f"RankPart.{name}[{k!r}] is not a number")
            _check(k not in _TEXT or v is None or isinstance(v, str), f"RankPart.{name}[{k!r}]")
            _check(k != "complete" or isinstance(v, (bool, np.bool_)), f"RankPart.{name}[{k!r}]")
    _check(isinstance(part.process.get("fixes", []), list), "RankPart.process['fixes']")
    _check(all(isinstance(b, str) for b in part.backends), "RankPart.backends holds a non-string")
    _check(all(isinstance(v, Latency) for v in part.latency.values()), "RankPart.latency values")
    _check(part.inflight is None or (len(part.inflight) == 2 and all(
        isinstance(a, np.ndarray) and a.dtype.kind in "if" and a.ndim == 1 for a in part.inflight)),
        "RankPart.inflight")
    _check(res.match_rows.dtype == _PART and res.match_rows.ndim == 1, "match_rows' dtype")
    _check(all(isinstance(n, str) for n in res.match_names), "match_names holds a non-string")
    codes = res.match_rows["code"]
    _check(not len(codes) or (codes.min() >= 0 and codes.max() < len(res.match_names)),
           "match_rows' group codes")


_NUMBERS = {"rank", "attempt", "pid", "world_size", "local_rank", "clock_wall_ns", "clock_mono_ns",
            "intra_op_threads", "self_calls", "self_record_ns", "self_gpu_windows",
            "self_once_calls", "self_stalled_calls",
            "self_gpu_window_ns", "gpu_windows_recorded", "gpu_windows_skipped",
            "gpu_windows_yielded", "losses_lost", "fr_seen", "fr_lost", "ops", "bytes",
            "training_thread", "last_record_s", "wall_s", "comm_s", "exposed_comm_s"}
_NUMERIC_KEY = re.compile(r"(_s|_ns|bytes|_fraction\w*|_median\w*|_mean\w*|^steps\w*|_per_step)$")
_TEXT = {"host", "exit_reason", "damage", "torch_version", "nccl_version", "file", "missing_ops",
         "capture_path"}
