"""Communication time and exposed communication time of one rank (docs/kpis.md defines both).

* **In flight**: the union over every collective/P2P call of [issue, end], end being the
  completion (Work future callback, or the end of a Python ``wait()`` on its Work), or the call's
  return when neither was seen; plus every exposed interval (being blocked on communication
  means communication is in flight), so that exposed ⊆ in flight.
* **Exposed**: the union of the intervals during which the *training thread* (the thread that
  issued most calls) was blocked on communication: inside a c10d call (for a synchronous call,
  from its issue to the end of its wait), inside ``Work.wait()``
  or ``wait_tensor``, and — for collectives issued from autograd (DDP's Reducer) — the tail of each
  backward call after its last such issue, intersected with the in-flight union (DDP waits for
  its buckets there, in C++, before backward returns).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from commprof.analysis.measures import intervals
from commprof.format import schema


@dataclass
class RankExposure:
    """Disjoint unions (start, end arrays, ns) of one rank."""

    inflight: tuple[np.ndarray, np.ndarray]
    exposed: tuple[np.ndarray, np.ndarray]
    training_thread: int | None

    def comm_ns(self, a, b):
        return intervals.covered(*self.inflight, a, b)

    def exposed_ns(self, a, b):
        return intervals.covered(*self.exposed, a, b)


def rank_exposure(coll: pd.DataFrame, waits: pd.DataFrame, spans: pd.DataFrame) -> RankExposure:
    """Compute the two unions for one rank's frames."""
    inflight = intervals.union(coll["t_issue"].to_numpy("float64"), coll["t_end"].to_numpy("float64"))
    if not len(coll):
        empty = (np.zeros(0), np.zeros(0))
        return RankExposure(inflight, empty, None)
    thread = int(coll["thread"].value_counts().idxmax())
    mine = coll[coll["thread"] == thread]
    w = waits[waits["thread"] == thread]
    # A synchronous call blocks from its issue to the end of its wait, the Python glue between
    # the two included; other calls block while they run, and waits while they wait.
    sync_end = mine["wait_end"].where(~mine["async_op"].astype(bool)).to_numpy("float64")
    call_end = np.fmax(mine["t_return"].to_numpy("float64"), sync_end)
    starts = [mine["t_issue"].to_numpy("float64"), w["t_start"].to_numpy("float64")]
    ends = [call_end, w["t_end"].to_numpy("float64")]
    tail_s, tail_e = _backward_tails(mine, spans[(spans["thread"] == thread)
                                                 & (spans["kind"] == schema.SPAN_BACKWARD)], inflight)
    starts.append(tail_s)
    ends.append(tail_e)
    exposed = intervals.union(np.concatenate(starts), np.concatenate(ends))
    # Blocked on communication means communication is in flight: keep exposed ⊆ in flight.
    inflight = intervals.union(np.concatenate([inflight[0], exposed[0]]),
                               np.concatenate([inflight[1], exposed[1]]))
    return RankExposure(inflight, exposed, thread)


def _backward_tails(mine: pd.DataFrame, backward: pd.DataFrame, inflight):
    """[last in-backward issue, backward end] ∩ in flight, for each backward span."""
    issued = mine.loc[mine["in_backward"], "t_issue"].to_numpy("float64")
    if not len(issued) or not len(backward):
        return np.zeros(0), np.zeros(0)
    issued = np.sort(issued)  # a copy: to_numpy may hand back a read-only view (pandas 3)
    bs = backward["t_start"].to_numpy("float64")
    be = backward["t_end"].to_numpy("float64")
    last_idx = np.searchsorted(issued, be, side="right") - 1
    ms, me = inflight
    out_s, out_e = [], []
    for i, (s, e) in enumerate(zip(bs, be)):
        j = last_idx[i]
        if j < 0 or issued[j] < s:
            continue  # no collective issued inside this backward call
        lo = np.searchsorted(me, issued[j], side="right")  # the union is sorted and disjoint:
        hi = np.searchsorted(ms, e, side="left")  # only [lo, hi) can overlap the tail
        cs, ce = intervals.clip(ms[lo:hi], me[lo:hi], issued[j], e)
        out_s.append(cs)
        out_e.append(ce)
    if not out_s:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(out_s), np.concatenate(out_e)
