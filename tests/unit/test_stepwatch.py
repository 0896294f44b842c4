"""launch/stepwatch.py: a stall (no step, no collective, nothing pending) is said once, and only
after the threshold computed from its definition; synthetic records."""
from __future__ import annotations

import numpy as np

from commprof.format import schema
from commprof.launch.stepwatch import StepWatch

S = 1_000_000_000  # ns


def marks(*pairs) -> np.ndarray:
    return np.array(list(pairs), dtype=[("kind", "u1"), ("t", "i8")])


def colls(*t_returns) -> np.ndarray:
    return np.array([(t,) for t in t_returns], dtype=[("t_return", "i8")])


def steps_at(*seconds) -> np.ndarray:
    return marks(*[(schema.MARK_STEP_OPTIMIZER, int(s * S)) for s in seconds])


def two_ranks(timeout_s=2.0, offset=0) -> StepWatch:
    w = StepWatch(timeout_s)
    w.add_rank(0, 0)
    w.add_rank(1, offset)
    return w


def test_a_stall_is_said_once_after_the_threshold_and_its_end_too():
    w = two_ranks()
    for r in (0, 1):
        w.feed(r, steps_at(0.0, 0.1, 0.2, 0.3))
    # threshold = max(S, 10 x the longest step interval) = max(2, 1) = 2 s after the last step
    assert w.threshold_s() == 2.0
    assert w.check(int(2.29 * S)) is None
    line = w.check(int(2.31 * S))
    assert line.startswith("STALL:") and "rank 0: step 4" in line and "rank 1: step 4" in line
    assert w.check(int(9 * S)) is None  # once per stall
    w.feed(1, steps_at(9.5))
    assert w.check(int(9.6 * S)) == "training steps resumed"
    assert w.stalls == 1


def test_the_threshold_grows_with_the_longest_step():
    w = two_ranks()
    for r in (0, 1):
        w.feed(r, steps_at(0.0, 1.5, 2.0))
    assert w.threshold_s() == 15.0  # 10 x 1.5 s
    assert w.check(int((2.0 + 14.9) * S)) is None
    assert w.check(int((2.0 + 15.1) * S)) is not None


def test_collectives_without_steps_are_progress():
    w = two_ranks()
    for r in (0, 1):
        w.feed(r, steps_at(0.0, 0.1))
        w.feed(r, None, colls(3 * S, 4 * S))  # an evaluation loop's all_reduces
    assert w.check(int(5.9 * S)) is None
    assert w.check(int(6.1 * S)) is not None


def test_no_stall_before_every_rank_stepped_twice_or_once_one_ended():
    w = two_ranks()
    w.feed(0, steps_at(0.0, 0.1))
    w.feed(1, steps_at(0.0))
    assert w.check(100 * S) is None  # rank 1: one step only (start-up, compilation)
    w.feed(1, steps_at(0.1))
    w.feed(0, marks((schema.MARK_PG_DESTROY, int(0.2 * S))))
    assert w.check(100 * S) is None  # rank 0 is ending: the end of a job is not a stall


def test_a_ranks_clock_offset_is_applied():
    w = two_ranks(offset=50 * S)  # rank 1's clock reads 50 s less than the watcher's
    w.feed(0, steps_at(0.0, 0.1))
    w.feed(1, steps_at(0.0, 0.1))  # at 50.0 and 50.1 s on the watcher's clock
    assert w.check(int(52.0 * S)) is None
    assert w.check(int(52.2 * S)) is not None


def test_a_resume_seen_only_at_the_last_read_is_said_and_no_new_stall_starts_then():
    w = two_ranks()
    for r in (0, 1):
        w.feed(r, steps_at(0.0, 0.1))
    assert w.check(int(3 * S)) is not None
    for r in (0, 1):  # the last steps and the exit, read after the job ended
        w.feed(r, steps_at(4.0, 4.1))
        w.feed(r, marks((schema.MARK_EXIT, int(4.2 * S))))
    assert w.check(int(5 * S), job_running=False) == "training steps resumed"
    fresh = two_ranks()
    for r in (0, 1):
        fresh.feed(r, steps_at(0.0, 0.1))
    assert fresh.check(int(60 * S), job_running=False) is None
