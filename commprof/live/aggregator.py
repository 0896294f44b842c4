"""The live figures of a running job: tails every capture and the node sampler, makes a snapshot.

:class:`LiveAggregator` runs in the ``commprof run`` process (nothing is added to the workers).
Each :meth:`~LiveAggregator.poll` reads what the workers and the sampler appended since the last
one (:class:`commprof.format.reader.CaptureTail`, as the hang watch does) into one
:class:`~commprof.live.rankstate.RankState` per capture file; :meth:`~LiveAggregator.snapshot`
computes, with the report's own functions (docs/kpis.md):

* per rank, the run so far: bytes and calls per (op, group), call seconds per op, the in-flight
  and exposed unions, busbw per (op, size bucket), commprof's own cost, every step's duration;
* over the last ``window_steps`` steps of every rank: step time, step rate, the time-weighted
  communication shares, bytes per step (``kpis.run_kpis`` / ``kpis.per_rank``), busbw per op and
  per size bucket against the probe (``links.efficiency_rows``), and the straggler
  (``crossrank.analyze`` on those steps' calls);
* per link of this node: bytes counted so far and the recent rate (``links.counter_rates``).
"""
from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from commprof.analysis.cross import clocks, crossrank
from commprof.analysis.host.load import SELF_SPLIT_KEYS
from commprof.analysis.measures import kpis as kpi
from commprof.analysis.host.links import counter_rates, efficiency_rows
from commprof.analysis.outcome.summary import self_overhead
from commprof.format import layout, reader, safe_io
from commprof.format.reader import CaptureTail
from commprof.live.rankstate import RankState, Totals

MAX_LINKS = 64  # link series per node, at most
RATE_WINDOW_S = 5.0  # link throughput on the panel: over the last few seconds of samples


class SampleTail(CaptureTail):
    """A :class:`CaptureTail` of a node sampler file (same framing, a header without a rank)."""

    def poll(self):
        if self.header is None and self.damage is None:
            try:
                with safe_io.open_regular(self.path) as fh:  # a regular file: never a FIFO's wait
                    data = fh.read(1 << 16)
                self.header, self._pos, self._version = reader._parse_header(data, self.path, False)
                self._region = reader._region_of(self.header, self._pos, self.path)
            except (OSError, reader.TruncatedCaptureError):
                self.header = None
                return {}, []
            except reader.CaptureFormatError as exc:
                self.damage = exc.reason
                return {}, []
        return super().poll()


@dataclass
class Link:
    """One byte counter of this node (an interface's TX or RX)."""

    name: str
    direction: str
    total: float = 0.0  # bytes counted between the first and the last sample (resets dropped)
    last: tuple | None = None  # (t, value)
    recent: list = field(default_factory=list)  # (t, total)


class LinkTail:
    """Tails this node's sampler file: counter totals as the report counts them, recent rates."""

    def __init__(self, path: Path | None):
        self.tail = SampleTail(path) if path is not None else None
        self.series: dict[int, dict] = {}
        self.links: dict[int, Link] = {}

    def poll(self) -> None:
        if self.tail is None:
            return
        arrays, objects = self.tail.poll()
        for obj in objects:
            if obj.get("type") == "series" and obj.get("kind") == "counter" \
                    and obj.get("metric") in ("tx_bytes", "rx_bytes") and len(self.links) < MAX_LINKS:
                sid = int(obj["id"])
                self.links[sid] = Link(f"{obj.get('source')}:{obj.get('device')}", obj["metric"][:2])
        smp = arrays.get("sample")
        if smp is None or not len(smp):
            return
        for sid, link in self.links.items():
            mine = smp[smp["series"] == sid]
            if not len(mine):
                continue
            t, v = mine["t"], mine["value"]
            if link.last is not None:
                t, v = np.r_[link.last[0], t], np.r_[link.last[1], v]
            a, b, rate = counter_rates(t, v)
            link.total += float(np.sum(rate * (b - a) / 1e9))
            link.last = (float(t[-1]), float(v[-1]))
            link.recent.append((float(t[-1]), link.total))
            while link.recent and link.recent[0][0] < link.recent[-1][0] - RATE_WINDOW_S * 1e9:
                link.recent.pop(0)

    def rows(self) -> list[dict]:
        out = []
        for link in self.links.values():
            rate = None
            if len(link.recent) >= 2 and link.recent[-1][0] > link.recent[0][0]:
                rate = (link.recent[-1][1] - link.recent[0][1]) / (link.recent[-1][0] - link.recent[0][0]) * 1e9
            out.append({"link": link.name, "direction": link.direction, "bytes": link.total,
                        "rate_Bps": rate})
        return out


class LiveAggregator:
    """Everything the panel and the exporter show, from the run directory's growing files."""

    def __init__(self, run_dir: Path, window_steps: int = 20, horizon_s: float = 10.0,
                 sampler_path: Path | None = None, probe: dict | None = None,
                 host: str | None = None):
        self.run_dir = Path(run_dir)
        self.window_steps = window_steps
        self.horizon_s = horizon_s
        self.host = host or socket.gethostname()
        self.tails: dict[Path, CaptureTail] = {}
        self.states: dict[Path, RankState] = {}
        self.links = LinkTail(sampler_path)
        self.probe = probe
        self.started = time.monotonic()

    def poll(self) -> None:
        """Read what was appended since the last poll; seal what can no longer change."""
        for path in layout.capture_paths(self.run_dir):
            if path not in self.tails:
                self.tails[path] = CaptureTail(path)
        for path, tail in self.tails.items():
            arrays, objects = tail.poll()
            if tail.header is None:
                continue
            st = self.states.get(path)
            if st is None:
                st = self.states[path] = RankState(tail.header, self.horizon_s, self.window_steps)
            if objects or any(len(a) for a in arrays.values()):
                st.feed(arrays, objects)
        for st in self.states.values():
            st.seal()
        self.links.poll()

    def latest(self) -> list[RankState]:
        """Each rank's latest attempt (what the report covers)."""
        best: dict[int, RankState] = {}
        for st in self.states.values():
            old = best.get(st.rank)
            if old is None or st.attempt >= old.attempt:
                best[st.rank] = st
        return [best[r] for r in sorted(best)]

    def snapshot(self) -> dict:
        """The figures of this moment (a plain dict: the panel and the exporter only read it)."""
        ranks = []
        for st in self.states.values():
            tot = st.totals()
            ranks.append({"rank": st.rank, "host": st.host, "attempt": st.attempt,
                          "local": st.host == self.host, "totals": tot,
                          "overhead_s": _overhead_s(st, tot), "step_durations": _durations(st),
                          "complete": st.complete})
        latest = self.latest()
        window = _window(latest)
        return {"ranks": sorted(ranks, key=lambda r: (r["rank"], r["attempt"])),
                "window": window, "window_steps": self.window_steps,
                "busbw": _window_busbw(latest, window, self.probe),
                "straggler": _straggler(latest, window),
                "links": self.links.rows(), "probe": self.probe is not None,
                "elapsed_s": time.monotonic() - self.started,
                "ranks_seen": len(latest), "hosts": sorted({st.host for st in latest})}


def _durations(st: RankState) -> list[tuple[int, float]]:
    """(step, seconds) of every step of the buffer (the exporter observes each once)."""
    s = st.build().steps
    if not len(s):
        return []
    return list(zip(s["step"].astype(int).tolist(), s["duration_s"].astype(float).tolist()))


def _overhead_s(st: RankState, tot: Totals) -> float:
    """commprof's own cost in this process so far, as the report estimates it (self_overhead)."""
    c = st.self_cost
    proc = {"self_calls": c.get("calls", 0), "self_record_ns": c.get("record_ns", 0),
            "self_gpu_windows": c.get("gpu_windows", 0), "self_gpu_window_ns": c.get("gpu_window_ns", 0),
            "capture_path": None, **{f"self_{k}": c.get(k) for k in SELF_SPLIT_KEYS}}
    part = SimpleNamespace(process=proc, blocking_calls=tot.blocking)
    return float(self_overhead([part], pd.DataFrame({"wall_s": [0.0]}))["estimated_s_per_rank"])


def _window(states: list[RankState]) -> dict:
    """The step KPIs over each rank's last steps, with the report's definitions."""
    frames = [st.window() for st in states]
    frames = [f for f in frames if len(f)]
    if not frames:
        return {"steps": 0}
    meas = pd.concat(frames, ignore_index=True)
    per_rank = kpi.per_rank(meas)
    out = kpi.run_kpis(per_rank, meas, {})
    spans = [(float(f["t_end"].iloc[-1]) - float(f["t_start"].iloc[0])) / 1e9 for f in frames]
    rates = [len(f) / s for f, s in zip(frames, spans) if s > 0]
    out.update(steps=int(max(len(f) for f in frames)),
               steps_done=int(max(f["step"].iloc[-1] + 1 for f in frames)),
               step_rate=float(np.median(rates)) if rates else None,
               step_median_s=float(meas["duration_s"].median()),
               per_rank=per_rank.to_dict("records"),
               t_start={int(f["rank"].iloc[0]): float(f["t_start"].iloc[0]) for f in frames})
    return out


def _window_calls(states: list[RankState], window: dict) -> pd.DataFrame:
    """Every rank's calls issued in its window steps."""
    parts = []
    for st in states:
        c = st.build().coll
        start = window.get("t_start", {}).get(st.rank)
        if start is not None and len(c):
            parts.append(c[c["t_issue"].to_numpy("float64") > start])
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _window_busbw(states: list[RankState], window: dict, probe: dict | None) -> dict:
    """busbw per op over the window (Σ bus bytes / Σ call time, all ranks), and per size bucket
    against the probe."""
    from commprof.analysis.host.links import size_buckets
    c = _window_calls(states, window)
    if not len(c):
        return {"ops": [], "efficiency": []}
    b = size_buckets(c)
    if not len(b):
        return {"ops": [], "efficiency": []}
    per_op = b.groupby("op", as_index=False)[["bus_bytes", "time_ns", "bytes", "count"]].sum()
    ops = [{"op": r.op, "busbw_Bps": r.bus_bytes / r.time_ns * 1e9, "calls": int(r["count"])}
           for _, r in per_op.sort_values("bus_bytes", ascending=False).iterrows() if r.time_ns > 0]
    grouped = b.groupby(["op", "group_size", "bucket"], as_index=False).sum()
    return {"ops": ops, "efficiency": efficiency_rows(grouped, probe)}


def _straggler(states: list[RankState], window: dict) -> dict | None:
    """The rank others waited for most over the window (crossrank.analyze), or None."""
    if len(states) < 2 or not window.get("steps"):
        return None
    calls = crossrank.Calls()
    syncs, procs = [], []
    for st in states:
        f = st.build()
        calls.add(st.rank, f.coll, f.groups)
        m = pd.DataFrame(st.buf["mark"])
        m.insert(0, "rank", st.rank)
        syncs.append(clocks.sync_marks(m))
        anchor = st.header.get("clock") or {}
        procs.append({"rank": st.rank, "host": st.host, "clock_wall_ns": anchor.get("wall_ns"),
                      "clock_mono_ns": anchor.get("mono_ns")})
    rank_clocks = clocks.align(pd.concat(syncs, ignore_index=True), pd.DataFrame(procs))
    zero = next((st for st in states if st.rank == 0), None)
    if zero is None:
        return None
    steps0 = zero.window()
    world = max(st.world_size for st in states) or len(states)
    cross = crossrank.analyze(calls, rank_clocks, steps0, set(steps0["step"].tolist()), world)
    if not cross or not cross["stragglers"]:
        return None
    top = cross["stragglers"][0]
    return {"rank": top["rank"], "share": top["share_of_steps"],
            "wait_s_per_step": top["wait_cost_per_step_s"], "significant": top["significant"],
            "steps": top["steps"]}
