"""The overhead section's split of the native kernel's clocked time (summary._clocked_split):
once-per-group registration and stalled windows set apart from the per-call mean."""
import types

import pandas as pd
import pytest

from commprof.analysis.outcome import summary
from commprof.analysis.outcome.summary import self_overhead

WALL = pd.DataFrame({"wall_s": [10.0, 10.0]})


def part(calls, record_ns, split=None, path="native"):
    process = {"self_calls": calls, "self_record_ns": record_ns, "capture_path": path}
    if split is not None:
        process.update({f"self_{k}": v for k, v in split.items()})
    return types.SimpleNamespace(process=process, blocking_calls=0)


def test_per_call_is_the_mean_of_the_windows_that_were_neither_registration_nor_stalled():
    # rank 0: 300 calls; one registered the group (2 ms), 3 stalled (1 ms each), the other 296
    # took 2 us each.  rank 1: 300 calls, one registration of 0.5 ms, no stall, 299 at 3 us.
    r0 = part(300, 2_000_000 + 3_000_000 + 296 * 2_000,
              {"once_calls": 1, "once_ns": 2_000_000, "stalled_calls": 3, "stalled_ns": 3_000_000})
    r1 = part(300, 500_000 + 299 * 3_000,
              {"once_calls": 1, "once_ns": 500_000, "stalled_calls": 0, "stalled_ns": 0})
    o = self_overhead([r0, r1], WALL)
    per_call_ns = (296 * 2_000 + 299 * 3_000) / (296 + 299)
    assert o["record_us_per_call"] == pytest.approx(per_call_ns / 1e3)
    assert o["once_s_per_rank"] == pytest.approx(2.5e-3 / 2)
    assert o["stalled_calls"] == 3
    assert o["stalled_s_per_rank"] == pytest.approx(3e-3 / 2)
    dispatch = 600 * summary.DISPATCH_NS_NATIVE_ASYNC_CALL
    # every call (the stalled ones too) at the per-call mean, plus the registrations
    total = per_call_ns * 600 + 2_500_000 + dispatch
    assert o["estimated_s_per_rank"] == pytest.approx(total / 2 / 1e9)
    assert o["estimated_fraction_of_wall"] == pytest.approx(total / 1e9 / 20.0)


def test_captures_without_the_split_keep_the_plain_mean_and_say_unknown():
    o = self_overhead([part(100, 250_000, path="python"), part(100, 150_000, path="python")], WALL)
    assert o["record_us_per_call"] == pytest.approx(400_000 / 200 / 1e3)
    assert o["stalled_calls"] is None and o["once_s_per_rank"] is None
    assert o["stalled_s_per_rank"] is None


def test_wait_windows_that_stalled_leave_the_call_count_alone():
    # Work.wait's stalled windows add ns, not calls: 100 calls at 1 us, one 80 us wait stall
    o = self_overhead([part(100, 100 * 1_000 + 80_000,
                            {"once_calls": 0, "once_ns": 0, "stalled_calls": 0, "stalled_ns": 80_000})],
                      pd.DataFrame({"wall_s": [1.0]}))
    assert o["record_us_per_call"] == pytest.approx(1.0)
    assert o["stalled_calls"] == 0 and o["stalled_s_per_rank"] == pytest.approx(80e-6)
