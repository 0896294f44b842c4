"""Putting every rank on one time axis (rank 0's clock), without assuming synchronized clocks.

Per rank, in order of preference:

* **barrier probes** (``MARK_CLOCK_SYNC``, capture/clocksync.py): the offset at each phase is the
  median over rounds of (rank 0's reading − this rank's reading) of the same barrier; its
  uncertainty is the robust spread of those differences (1.4826 × their median absolute
  deviation; a barrier releases ranks within about one network latency, which the spread
  includes).  With both phases (after init, before destroy) the offset is interpolated linearly in
  time — clock drift — unless the two estimates agree within their uncertainty, where one mean
  offset is used.
* **same host as rank 0**: offset 0 (one CLOCK_MONOTONIC per host), uncertainty 0;
* **wall-clock anchors** (each capture's header): the hosts' wall clocks are trusted, uncertainty
  unknown (reported as None).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from commprof.format import schema


@dataclass
class RankClock:
    """How to move one rank's timestamps onto rank 0's clock."""

    rank: int
    method: str  # "barrier", "same-host", "wall-anchor"
    t_ref: tuple[float, ...]  # this rank's clock at the estimates (1 or 2 phases)
    offset_ns: tuple[float, ...]  # add to this rank's time at t_ref[i]
    uncertainty_ns: float | None

    def to_reference(self, t):
        t = np.asarray(t, dtype="float64")
        if len(self.offset_ns) == 1 or self.t_ref[1] == self.t_ref[0]:
            return t + self.offset_ns[0]
        slope = (self.offset_ns[1] - self.offset_ns[0]) / (self.t_ref[1] - self.t_ref[0])
        return t + self.offset_ns[0] + slope * (t - self.t_ref[0])

    @property
    def drift_ppm(self) -> float | None:
        if len(self.offset_ns) < 2 or self.t_ref[1] == self.t_ref[0]:
            return None
        return (self.offset_ns[1] - self.offset_ns[0]) / (self.t_ref[1] - self.t_ref[0]) * 1e6


def sync_marks(marks: pd.DataFrame) -> pd.DataFrame:
    """rank, phase, round, t of the clock probes in a marks frame."""
    m = marks[marks["kind"] == schema.MARK_CLOCK_SYNC]
    return pd.DataFrame({"rank": m["rank"].to_numpy(), "phase": (m["value"] // 100).to_numpy(),
                         "round": (m["value"] % 100).to_numpy(), "t": m["t"].to_numpy("float64")})


def align(sync: pd.DataFrame, processes: pd.DataFrame) -> dict[int, RankClock]:
    """One :class:`RankClock` per rank of ``processes`` (columns rank, host, clock_wall_ns,
    clock_mono_ns), from the probes in ``sync`` (from :func:`sync_marks`, all ranks)."""
    procs = processes.drop_duplicates("rank", keep="last").set_index("rank")
    out: dict[int, RankClock] = {}
    if 0 not in procs.index:
        ref_host, ref_anchor = None, None
    else:
        ref_host = procs.loc[0, "host"]
        ref_anchor = _anchor(procs.loc[0])
    by_rank = {int(r): g.set_index(["phase", "round"])["t"] for r, g in sync.groupby("rank")}
    ref = by_rank.get(0)
    for rank, row in procs.iterrows():
        rank = int(rank)
        if rank == 0:
            out[0] = RankClock(0, "reference", (0.0,), (0.0,), 0.0)
            continue
        mine = by_rank.get(rank)
        joined = (pd.concat([ref.rename("ref"), mine.rename("mine")], axis=1, join="inner")
                  if ref is not None and mine is not None else ())
        if len(joined):
            t_ref, offs, spreads = [], [], []
            for _, g in joined.groupby(level="phase"):
                d = (g["ref"] - g["mine"]).to_numpy()
                t_ref.append(float(g["mine"].median()))
                offs.append(float(np.median(d)))
                # robust spread: a descheduled process wakes late in one round, not in all
                spreads.append(float(1.4826 * np.median(np.abs(d - np.median(d)))))
            unc = max(spreads)
            if len(offs) == 2 and abs(offs[1] - offs[0]) <= 2 * (spreads[0] + spreads[1]):
                t_ref, offs = [float(np.mean(t_ref))], [float(np.mean(offs))]  # no drift beyond noise
            out[rank] = RankClock(rank, "barrier", tuple(t_ref), tuple(offs), unc)
        elif ref_host is not None and row["host"] == ref_host:
            out[rank] = RankClock(rank, "same-host", (0.0,), (0.0,), 0.0)
        elif ref_anchor is not None and _anchor(row) is not None:
            out[rank] = RankClock(rank, "wall-anchor", (0.0,), (_anchor(row) - ref_anchor,), None)
        else:
            out[rank] = RankClock(rank, "none", (0.0,), (0.0,), None)
    return out


@dataclass
class Timeline:
    """One time axis for a whole run: nanoseconds since ``origin_wall_ns`` (the earliest capture
    start, by the wall clock), on rank 0's clock.  A rank :func:`align` placed is moved onto rank
    0's monotonic clock, then onto the wall clock through rank 0's anchor; a rank it could not
    place (or a run without rank 0) goes through its own anchor."""

    clocks: dict[int, RankClock]
    reference: dict | None  # rank 0's process row (Run.processes), if captured
    origin_wall_ns: int

    @classmethod
    def of_ranks(cls, ranks) -> "Timeline":
        """From the loaded processes (:class:`commprof.analysis.host.load.RankData`: process, marks)."""
        walls = [r.process["clock_wall_ns"] for r in ranks if r.process.get("clock_wall_ns") is not None]
        procs = pd.DataFrame([r.process for r in ranks])
        sync = pd.concat([sync_marks(r.marks) for r in ranks], ignore_index=True)
        ref = next((r.process for r in ranks if int(r.rank) == 0), None)
        return cls(align(sync, procs), ref, min(walls) if walls else 0)

    def shift_ns(self, anchor: dict) -> float:
        """What moves a clock with this anchor (``wall_ns``/``mono_ns`` pair, e.g. a capture or
        sampler header's ``clock``) onto the axis."""
        return (anchor.get("wall_ns") or 0) - (anchor.get("mono_ns") or 0) - self.origin_wall_ns

    def mapper(self, process: dict):
        """``t`` (ns of this process's monotonic clock; array-like) -> ns on the axis."""
        clk = self.clocks.get(int(process["rank"]))
        if self.reference is not None and clk is not None:
            shift = self.shift_ns(_process_anchor(self.reference))
            return lambda t: clk.to_reference(t) + shift
        shift = self.shift_ns(_process_anchor(process))
        return lambda t: np.asarray(t, dtype="float64") + shift


def _process_anchor(process: dict) -> dict:
    return {"wall_ns": process.get("clock_wall_ns"), "mono_ns": process.get("clock_mono_ns")}


def _anchor(row) -> float | None:
    """wall − mono of a process: its monotonic clock → wall clock shift."""
    wall, mono = row.get("clock_wall_ns"), row.get("clock_mono_ns")
    if wall is None or mono is None or pd.isna(wall) or pd.isna(mono):
        return None
    return float(wall) - float(mono)


def summary(clocks: dict[int, RankClock]) -> dict:
    """The document's ``clock_alignment`` section."""
    rows = [{"rank": c.rank, "method": c.method, "offset_ms": round(c.offset_ns[0] / 1e6, 6),
             "uncertainty_ms": None if c.uncertainty_ns is None else round(c.uncertainty_ns / 1e6, 6),
             "drift_ppm": None if c.drift_ppm is None else round(c.drift_ppm, 3)}
            for c in sorted(clocks.values(), key=lambda c: c.rank)]
    unc = [r["uncertainty_ms"] for r in rows if r["uncertainty_ms"] is not None]
    return {"reference_rank": 0, "max_uncertainty_ms": max(unc) if unc else None, "ranks": rows}
