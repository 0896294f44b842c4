"""One capture file followed live: a bounded buffer of recent records plus sealed totals.

The report's functions compute everything here, on frames built from the buffer exactly as
``commprof report`` builds them (:func:`commprof.analysis.host.load.collectives_frame`, ``add_sizes``,
``rank_exposure``, ``step_windows``, ``step_metrics``).  What only grows — bytes, calls, call
seconds per op, the in-flight and exposed unions — is split at a *cut* time: everything before
the cut has been added to sealed totals and its records dropped; the buffer holds the rest.

The cut only moves forward, to a time no record can still arrive before: ``horizon_s`` before
the newest record seen, and never past the start of the last ``window_steps`` steps (the
sliding window the panel shows).  Records whose completion is still unknown are never dropped.
So the totals equal the report's: bytes and calls exactly; the unions up to records that reach
the disk more than ``horizon_s`` late (docs/monitoring.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from commprof.analysis.measures import intervals, kpis as kpi
from commprof.analysis.measures.collectives import op_codes, add_sizes
from commprof.analysis.host.exposure import rank_exposure
from commprof.analysis.host.links import size_buckets
from commprof.analysis.host.load import GROUP_COLUMNS, attach_groups, collectives_frame
from commprof.analysis.host.rank import step_metrics
from commprof.analysis.host.steps import step_windows
from commprof.format import reader, schema

KINDS = ("coll", "done", "wait", "mark", "span")
MAX_GROUPS = 32  # distinct `group` label values per rank; later groups share "other"
# marks always kept (few per run): the step origin and the clock probes
_KEEP_MARKS = (schema.MARK_START, schema.MARK_PG_INIT, schema.MARK_CLOCK_SYNC,
               schema.MARK_PG_DESTROY, schema.MARK_EXIT)


def _empty(kind: str) -> np.ndarray:
    code = {v: k for k, v in reader.KIND_NAMES.items()}[kind]
    return np.zeros(0, dtype=reader.DTYPES[code])


@dataclass
class Totals:
    """What only grows, per rank (sealed part, or sealed + buffer)."""

    bytes: dict = field(default_factory=dict)  # (op, group label) -> Σ S
    calls: dict = field(default_factory=dict)  # (op, group label) -> count
    seconds: dict = field(default_factory=dict)  # op -> Σ (t_end - t_issue), s
    buckets: dict = field(default_factory=dict)  # (op, group size, bucket) -> size_buckets' sums
    blocking: int = 0  # calls torch.distributed waited on itself
    comm_ns: float = 0.0  # in-flight union
    exposed_ns: float = 0.0  # exposed union

    def plus(self, other: "Totals") -> "Totals":
        out = Totals(dict(self.bytes), dict(self.calls), dict(self.seconds), dict(self.buckets),
                     self.blocking + other.blocking, self.comm_ns + other.comm_ns,
                     self.exposed_ns + other.exposed_ns)
        for mine, theirs in ((out.bytes, other.bytes), (out.calls, other.calls),
                             (out.seconds, other.seconds)):
            for k, v in theirs.items():
                mine[k] = mine.get(k, 0) + v
        for k, v in other.buckets.items():
            old = out.buckets.get(k)
            out.buckets[k] = v if old is None else tuple(a + b for a, b in zip(old, v))
        return out


@dataclass
class Frames:
    """The buffer as the report's frames, and what the report's functions made of them."""

    coll: pd.DataFrame  # with add_sizes' columns
    steps: pd.DataFrame  # step_windows + step_metrics (step numbers are the run's)
    inflight: tuple
    exposed: tuple
    groups: pd.DataFrame


class RankState:
    """The live state of one capture file (one rank process of one torchrun attempt)."""

    def __init__(self, header: dict, horizon_s: float = 10.0, window_steps: int = 20):
        self.header = header
        self.rank = int(header.get("rank", -1))
        self.host = str(header.get("host", "?"))
        self.attempt = int(header.get("restart", 0) or 0)
        self.world_size = int(header.get("world_size") or 0)
        self.horizon_ns = horizon_s * 1e9
        self.window_steps = window_steps
        self.buf = {k: _empty(k) for k in KINDS}
        self.groups: dict[int, dict] = {}
        self.labels: dict[int, str] = {}  # gid -> group label (bounded)
        self.self_cost: dict = {}
        self.complete = False
        self.latest_ns = -np.inf  # newest record time seen
        self.max_coll_id = -1
        self.cut = -np.inf  # everything before it is sealed
        self.sealed = Totals()
        self.steps_sealed = 0  # step numbers before the buffer's first step
        self.frames: Frames | None = None
        self.dirty = True

    # -- input --------------------------------------------------------------------------------
    def feed(self, arrays: dict[str, np.ndarray], objects: list[dict]) -> None:
        """New records and JSON objects from the capture's tail."""
        for obj in objects:
            typ = obj.get("type")
            if typ == "group" and "id" in obj:
                gid = int(obj["id"])
                self.groups[gid] = obj
                if gid not in self.labels:
                    name = str(obj.get("desc") or obj.get("name") or gid)
                    self.labels[gid] = name if len(set(self.labels.values())) < MAX_GROUPS else "other"
            elif typ == "self_cost":
                self.self_cost = obj
            elif typ == "trailer":
                self.complete = True
        for k in KINDS:
            new = arrays.get(k)
            if new is not None and len(new):
                self.buf[k] = np.concatenate([self.buf[k], new]) if len(self.buf[k]) else new.copy()
                self.dirty = True
        for k, col in (("coll", "t_return"), ("mark", "t"), ("span", "t_end"), ("wait", "t_end")):
            new = arrays.get(k)
            if new is not None and len(new):
                self.latest_ns = max(self.latest_ns, float(new[col].max()))
        if arrays.get("coll") is not None and len(arrays["coll"]):
            self.max_coll_id = max(self.max_coll_id, int(arrays["coll"]["id"].max()))
        self.dirty = self.dirty or bool(objects)

    # -- the report's frames of the buffer ----------------------------------------------------
    def build(self) -> Frames:
        """The buffer's frames (cached until new data arrives)."""
        if self.frames is not None and not self.dirty:
            return self.frames
        key = {"rank": self.rank, "attempt": self.attempt, "pid": int(self.header.get("pid", -1))}
        groups = pd.DataFrame([dict(key, gid=g["id"], name=g.get("name"), desc=g.get("desc"),
                                    size=g.get("size"), group_rank=g.get("rank"),
                                    backend=g.get("backend"), ranks=g.get("ranks"))
                               for g in self.groups.values()], columns=GROUP_COLUMNS)
        b = self.buf
        coll = attach_groups(collectives_frame(b["coll"], b["done"], b["wait"]), groups)
        coll.insert(0, "rank", self.rank)
        c = add_sizes(coll)
        waits = pd.DataFrame(b["wait"])
        spans = pd.DataFrame(b["span"])
        marks = pd.DataFrame(b["mark"])
        marks.insert(0, "rank", self.rank)
        spans.insert(0, "rank", self.rank)
        exp = rank_exposure(c, waits, spans)
        s = step_windows(marks, spans)
        if len(s) and self.steps_sealed:
            s = s.iloc[1:].copy()  # its start is the carried boundary before the cut: not a step
            s["step"] = s["step"] - 1
        if len(s):
            s["step"] = s["step"] + self.steps_sealed
            s = kpi.finish_steps([step_metrics(s.reset_index(drop=True), c, exp)])
        self.frames = Frames(c, s, exp.inflight, exp.exposed, groups)
        self.dirty = False
        return self.frames

    def _contrib(self, c: pd.DataFrame) -> Totals:
        """Per-record sums of ``c`` (rows with add_sizes' columns), in numpy."""
        t = Totals()
        if not len(c):
            return t
        op = op_codes(c["op"])
        gid = c["group"].to_numpy().astype(np.int64)
        keys, inv = np.unique(op * (1 << 32) + gid, return_inverse=True)
        nbytes = np.bincount(inv, weights=c["size_bytes"].to_numpy("float64"), minlength=len(keys))
        calls = np.bincount(inv, minlength=len(keys))
        for k, b, n in zip(keys.tolist(), nbytes.tolist(), calls.tolist()):
            key = (schema.OPS[k >> 32], self.labels.get(k & 0xFFFFFFFF, str(k & 0xFFFFFFFF)))
            t.bytes[key] = t.bytes.get(key, 0) + int(round(b))
            t.calls[key] = t.calls.get(key, 0) + int(n)
        ops, inv = np.unique(op, return_inverse=True)
        dur = np.bincount(inv, weights=c["duration_ns"].to_numpy("float64"), minlength=len(ops))
        t.seconds = {schema.OPS[o]: float(d) / 1e9 for o, d in zip(ops.tolist(), dur.tolist())}
        b = size_buckets(c)
        t.buckets = {(o, int(n), int(k)): (int(cnt), float(by), float(bb), float(tn))
                     for o, n, k, cnt, by, bb, tn in zip(b["op"], b["group_size"], b["bucket"],
                                                          b["count"], b["bytes"], b["bus_bytes"],
                                                          b["time_ns"])}
        t.blocking = int((~c["async_op"].to_numpy().astype(bool)).sum())
        return t

    def totals(self) -> Totals:
        """Sealed totals plus the buffer's: the run so far."""
        f = self.build()
        live = self._contrib(f.coll)
        live.comm_ns = float(intervals.covered(*f.inflight, [self.cut], [np.inf])[0])
        live.exposed_ns = float(intervals.covered(*f.exposed, [self.cut], [np.inf])[0])
        return self.sealed.plus(live)

    # -- sealing ------------------------------------------------------------------------------
    def seal(self) -> None:
        """Move the cut forward and drop the records before it (see the module docstring)."""
        f = self.build()
        cut = self.latest_ns - self.horizon_ns
        if len(f.steps) > self.window_steps:
            cut = min(cut, float(f.steps["t_start"].iloc[-self.window_steps - 1]))
        if not np.isfinite(cut) or cut <= self.cut + self.horizon_ns / 2:
            return  # moved in steps of half the horizon: one rebuild per few seconds, not per tick
        c = f.coll
        known = (c["done_source"].astype(str) != "unknown").to_numpy()
        drop = known & (c["t_end"].to_numpy("float64") < cut) & (c["t_issue"].to_numpy("float64") < cut)
        gone = self._contrib(c[drop])
        lo = self.cut
        gone.comm_ns = float(intervals.covered(*f.inflight, [lo], [cut])[0])
        gone.exposed_ns = float(intervals.covered(*f.exposed, [lo], [cut])[0])
        self.sealed = self.sealed.plus(gone)
        boundary, first_step = self._boundary(f.steps, cut)
        b = self.buf
        kept_ids = b["coll"]["id"][~drop]
        b["coll"] = b["coll"][~drop]
        d = b["done"]
        b["done"] = d[np.isin(d["id"], kept_ids) | (d["id"] > self.max_coll_id)]
        b["wait"] = b["wait"][b["wait"]["t_end"] >= cut]
        sp = b["span"]
        b["span"] = sp[(sp["t_end"] >= cut) | (sp["t_end"] == boundary)]
        m = b["mark"]
        b["mark"] = m[(m["t"] >= cut) | np.isin(m["kind"], _KEEP_MARKS) | (m["t"] == boundary)]
        if boundary is not None:
            self.steps_sealed = first_step
        self.cut = cut
        self.dirty = True

    @staticmethod
    def _boundary(steps: pd.DataFrame, cut: float) -> tuple[float | None, int]:
        """The step boundary to keep across the cut (the start of the first step that stays in
        the buffer, or the end of the last step) and the run's number of the step after it."""
        if not len(steps):
            return None, 0
        stay = steps[steps["t_end"] >= cut]
        if len(stay):
            return float(stay["t_start"].iloc[0]), int(stay["step"].iloc[0])
        return float(steps["t_end"].iloc[-1]), int(steps["step"].iloc[-1]) + 1

    def window(self) -> pd.DataFrame:
        """This rank's last ``window_steps`` steps with their metrics (the report's columns)."""
        s = self.build().steps
        return s.iloc[-self.window_steps:] if len(s) else s
