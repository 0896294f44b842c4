"""``commprof.analysis.host.exposure``: a rank's communication time (in flight) and exposed
communication time, against docs/kpis.md's definitions.

The oracle paints each definition onto a 1 ns grid (integer times, a boolean per nanosecond) and
counts: no interval arithmetic of the code under test is used.  Definitions (docs/kpis.md, "Per
rank"):

* training thread: the thread that issued most collective calls;
* exposed: the training thread inside a c10d call, [t_issue, t_return), or for a blocking call
  (``async_op`` false) [t_issue, end of its wait); inside a ``Work.wait()`` (a waits row); and
  for each backward() span during which it issued collectives from autograd (``in_backward``),
  [last such issue, end of backward) ∩ the calls' in-flight union;
* in flight: the union over all calls of [t_issue, t_end), plus every exposed interval.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from commprof.analysis.host.exposure import rank_exposure
from commprof.format import schema

T = 1_000  # the grid: times are integer ns in [0, T)


def frames(calls=(), waits=(), backward=()):
    """(coll, waits, spans) frames with the columns and dtypes the loader gives (frames.py).

    ``calls``: dicts with thread, t_issue, t_return, t_end and optionally async_op (default True),
    wait_end (default NaN), in_backward (default False); ``waits``: (thread, start, end);
    ``backward``: (thread, start, end) backward() spans."""
    rows = [dict(dict(async_op=True, wait_end=np.nan, in_backward=False), **c) for c in calls]
    coll = pd.DataFrame(rows, columns=["thread", "t_issue", "t_return", "t_end", "async_op",
                                       "wait_end", "in_backward"])
    coll = coll.astype({"thread": "uint64", "t_issue": "int64", "t_return": "int64", "t_end": "float64",
                        "async_op": "bool", "wait_end": "float64", "in_backward": "bool"})
    w = pd.DataFrame(list(waits), columns=["thread", "t_start", "t_end"]).astype(
        {"thread": "uint64", "t_start": "int64", "t_end": "int64"})
    spans = pd.DataFrame([(th, schema.SPAN_BACKWARD, s, e) for th, s, e in backward],
                         columns=["thread", "kind", "t_start", "t_end"]).astype(
        {"thread": "uint64", "kind": "int64", "t_start": "int64", "t_end": "int64"})
    return coll, w, spans


def totals(exp, a=0, b=T) -> tuple[float, float]:
    return float(exp.comm_ns(a, b)), float(exp.exposed_ns(a, b))


# -- the definitions, case by case (lengths worked out by hand) ---------------------------------

def test_a_blocking_call_is_exposed_until_its_wait_ends():
    # issued at 10, returned from the enqueue at 12, its wait ended at 30 (the glue 12..~ included)
    exp = rank_exposure(*frames([dict(thread=1, t_issue=10, t_return=12, t_end=30, async_op=False,
                                      wait_end=30)]))
    assert totals(exp) == (20, 20)
    assert exp.training_thread == 1


def test_an_async_call_exposes_only_the_call_and_the_wait_not_the_compute_between():
    # w = all_reduce(async_op=True) at 10..12; compute 12..40; w.wait() 40..50
    exp = rank_exposure(*frames([dict(thread=1, t_issue=10, t_return=12, t_end=50, wait_end=50)],
                                waits=[(1, 40, 50)]))
    assert totals(exp) == (40, 2 + 10)


def test_only_the_training_thread_is_exposed():
    # thread 1 issues two calls (training thread), thread 2 one long blocking call and a wait
    calls = [dict(thread=1, t_issue=0, t_return=5, t_end=5),
             dict(thread=1, t_issue=100, t_return=105, t_end=120),
             dict(thread=2, t_issue=200, t_return=300, t_end=300, async_op=False, wait_end=300)]
    exp = rank_exposure(*frames(calls, waits=[(2, 400, 450)]))
    assert exp.training_thread == 1
    # in flight: [0,5) + [100,120) + [200,300) = 125; thread 2's wait is not exposed, so not added
    assert totals(exp) == (125, 5 + 5)


def test_the_backward_tail_is_exposed_where_communication_is_in_flight():
    # backward() 0..100 on the training thread; bucket all-reduces issued from autograd at 20 and
    # 60 (returning at once), done at 70 and 95: the tail is [60, 100) ∩ in flight = [60, 95)
    calls = [dict(thread=1, t_issue=20, t_return=21, t_end=70, in_backward=True),
             dict(thread=1, t_issue=60, t_return=61, t_end=95, in_backward=True)]
    exp = rank_exposure(*frames(calls, backward=[(1, 0, 100)]))
    assert totals(exp) == (75, 1 + 35)
    # a backward() with no collective issued inside it has no tail
    exp = rank_exposure(*frames(calls, backward=[(1, 0, 100), (1, 200, 300)]))
    assert totals(exp) == (75, 36)


def test_no_tail_from_calls_not_issued_from_autograd():
    calls = [dict(thread=1, t_issue=20, t_return=21, t_end=70)]  # issued in backward's time, not from it
    exp = rank_exposure(*frames(calls, backward=[(1, 0, 100)]))
    assert totals(exp) == (50, 1)


def test_exposed_time_is_always_in_flight():
    # a wait on a Work whose call's own end was recorded earlier: blocked means in flight
    exp = rank_exposure(*frames([dict(thread=1, t_issue=10, t_return=11, t_end=20)], waits=[(1, 30, 40)]))
    assert totals(exp) == (10 + 10, 1 + 10)


def test_no_calls_no_time_and_no_training_thread():
    exp = rank_exposure(*frames(waits=[(1, 0, 10)], backward=[(1, 0, 50)]))
    assert totals(exp) == (0, 0)
    assert exp.training_thread is None


def test_windows_count_only_their_part():
    exp = rank_exposure(*frames([dict(thread=1, t_issue=10, t_return=12, t_end=30, async_op=False,
                                      wait_end=30)]))
    assert float(exp.comm_ns(0, 15)) == 5 and float(exp.exposed_ns(25, 100)) == 5
    assert list(exp.exposed_ns(np.array([0, 20]), np.array([20, 40]))) == [10, 10]


# -- random runs against the painted definition -----------------------------------------------

def _paint(grid, s, e):
    grid[max(int(s), 0):max(int(e), 0)] = True


def oracle(calls, waits, backward) -> tuple[np.ndarray, np.ndarray]:
    """(in flight, exposed) as one boolean per ns, from the definitions above."""
    threads = [c["thread"] for c in calls]
    train = max(set(threads), key=threads.count)
    calls_union = np.zeros(T, bool)
    for c in calls:
        _paint(calls_union, c["t_issue"], c["t_end"])
    exposed = np.zeros(T, bool)
    for c in calls:
        if c["thread"] == train:
            blocking = not c.get("async_op", True)
            _paint(exposed, c["t_issue"], max(c["t_return"], c["wait_end"]) if blocking else c["t_return"])
    for th, s, e in waits:
        if th == train:
            _paint(exposed, s, e)
    for th, s, e in backward:
        issued = [c["t_issue"] for c in calls
                  if c["thread"] == train and c.get("in_backward") and s <= c["t_issue"] <= e]
        if th == train and issued:
            tail = np.zeros(T, bool)
            _paint(tail, max(issued), e)
            exposed |= tail & calls_union
    return calls_union | exposed, exposed


def random_run(rng):
    calls = []
    counts = {1: int(rng.integers(3, 9)), 2: int(rng.integers(0, 3))}  # thread 1 issues most
    for thread, n in counts.items():
        for _ in range(n):
            issue = int(rng.integers(0, T - 100))
            ret = issue + int(rng.integers(0, 20))
            end = ret + int(rng.integers(0, 80))
            call = dict(thread=thread, t_issue=issue, t_return=ret, t_end=end,
                        async_op=bool(rng.random() < 0.6), in_backward=bool(rng.random() < 0.5))
            call["wait_end"] = float(ret + int(rng.integers(0, 90)))
            calls.append(call)
    waits = [(int(rng.choice([1, 2])), s, s + int(rng.integers(1, 60)))
             for s in rng.integers(0, T - 60, size=int(rng.integers(0, 5)))]
    backward = [(int(rng.choice([1, 2], p=[0.8, 0.2])), s, s + int(rng.integers(20, 300)))
                for s in rng.integers(0, T - 300, size=int(rng.integers(0, 4)))]
    return calls, waits, backward


@pytest.mark.parametrize("seed", range(200))
def test_random_runs_match_the_painted_definition(seed):
    rng = np.random.default_rng(seed)
    calls, waits, backward = random_run(rng)
    inflight, exposed = oracle(calls, waits, backward)
    exp = rank_exposure(*frames(calls, waits, backward))
    assert exp.training_thread == 1
    a = np.sort(rng.integers(0, T, size=(8, 2)), axis=1)
    windows = np.vstack([[0, T], a])
    got_comm = exp.comm_ns(windows[:, 0], windows[:, 1])
    got_exposed = exp.exposed_ns(windows[:, 0], windows[:, 1])
    want_comm = [inflight[lo:hi].sum() for lo, hi in windows]
    want_exposed = [exposed[lo:hi].sum() for lo, hi in windows]
    assert list(got_comm) == want_comm
    assert list(got_exposed) == want_exposed
