"""``--hang-timeout``'s second watch: training steps stop coming while no collective is pending.

The collective watch (launch/hangwatch.py) sees collectives that a rank issued and that did not
complete.  A deadlock in user code (two threads on one lock, a rank waiting for a file, a data
loader whose worker died) leaves nothing pending: the ranks are alive and record nothing.  This
watch reads the step marks (``optimizer.step()`` or ``commprof.step()``) and the collectives from
the same tails and says so, once per stall, when no rank has completed a step or issued a
collective for ``max(S, 10 x the longest interval between two steps seen so far)`` seconds, after
every rank's second step, while no rank has ended (exit or ``destroy_process_group``) and the
collective watch has nothing to say.  It names each rank's last step; it never stops the job (a
phase without steps or collectives, such as a checkpoint, reads the same).  Pure Python and
numpy, like the collective watch.
"""
from __future__ import annotations

import numpy as np

from commprof.format import schema

STEP_MARKS = (schema.MARK_STEP_OPTIMIZER, schema.MARK_STEP_EXPLICIT)
END_MARKS = (schema.MARK_EXIT, schema.MARK_PG_DESTROY)
STEP_FACTOR = 10.0  # a stall is this many times the longest step interval seen (at least S)


class _Rank:
    def __init__(self, offset_ns: int):
        self.offset_ns = offset_ns  # watcher clock minus the rank's
        self.steps = 0
        self.last_step_ns: int | None = None  # watcher clock
        self.last_active_ns = 0  # the last step or collective (watcher clock)
        self.longest_ns = 0
        self.ended = False


class StepWatch:
    """Per rank: the last step mark and the longest interval between two; a stall line, once."""

    def __init__(self, timeout_s: float):
        self.timeout_s = timeout_s
        self.ranks: dict[int, _Rank] = {}
        self.stalled_since_ns: int | None = None  # the last step of any rank, while stalled
        self.stalls = 0

    def add_rank(self, rank: int, clock_offset_ns: int) -> None:
        """A capture file of ``rank`` (a newer attempt replaces the older one)."""
        self.ranks[rank] = _Rank(clock_offset_ns)

    def feed(self, rank: int, marks: np.ndarray | None, coll: np.ndarray | None = None) -> None:
        """New MARK and COLL records of ``rank``."""
        st = self.ranks.get(rank)
        if st is None:
            return
        if coll is not None and len(coll):
            st.last_active_ns = max(st.last_active_ns, int(coll["t_return"].max()) + st.offset_ns)
        if marks is None or not len(marks):
            return
        kinds = marks["kind"]
        if np.isin(kinds, END_MARKS).any():
            st.ended = True
        times = marks["t"][np.isin(kinds, STEP_MARKS)].astype(np.int64) + st.offset_ns
        if not len(times):
            return
        times = np.sort(times)
        edges = times if st.last_step_ns is None else np.concatenate(([st.last_step_ns], times))
        if len(edges) > 1:
            st.longest_ns = max(st.longest_ns, int(np.diff(edges).max()))
        st.steps += len(times)
        st.last_step_ns = int(times[-1])
        st.last_active_ns = max(st.last_active_ns, st.last_step_ns)

    def threshold_s(self) -> float:
        """How long without a step is a stall: S, or 10 x the longest step interval if longer."""
        longest = max((st.longest_ns for st in self.ranks.values()), default=0)
        return max(self.timeout_s, STEP_FACTOR * longest / 1e9)

    def check(self, now_ns: int, job_running: bool = True) -> str | None:
        """A line to say when a stall starts (only while the job runs) or ends (else None)."""
        ranks = self.ranks.values()
        last = max((st.last_active_ns for st in ranks), default=0)
        if self.stalled_since_ns is not None:
            if last > self.stalled_since_ns:
                self.stalled_since_ns = None
                return "training steps resumed"
            return None
        if not job_running or not ranks or any(st.steps < 2 or st.ended for st in ranks):
            return None  # warm-up, or ending
        idle_s = (now_ns - last) / 1e9
        if idle_s <= self.threshold_s():
            return None
        self.stalled_since_ns = last
        self.stalls += 1
        per_rank = "; ".join(f"rank {r}: step {st.steps}, {(now_ns - st.last_step_ns) / 1e9:.0f} s ago"
                             for r, st in sorted(self.ranks.items()) if st.last_step_ns is not None)
        return (f"STALL: no training step and no collective for {idle_s:.0f} s on any rank "
                f"(threshold {self.threshold_s():.0f} s), none pending: the ranks are stuck "
                f"outside communication (a deadlock in the job's code, a data loader, I/O) or in "
                f"a phase without steps (evaluation, checkpoint); the job is left running "
                f"({per_rank})")
