"""The native ``Work.wait`` (capture/native/wait.cpp ``make_wait``): a C callable that replaces
torch's on the native path.  Checked here on its own, in this process, with a stand-in for
torch's wait and a recording fallback (with a real Work the records are the Python path's: the
coverage suite's ``test_paths_capture_the_same_records`` compares them).  Skipped where the native module cannot
be built (failed in CI: COMMPROF_TEST_REQUIRE_NATIVE=1).
"""
from __future__ import annotations

import sys

import pytest

from native_kernel import _NATIVE, require_native

SYNC, WORK = 3, 1  # schema.WAIT_SYNC_API, schema.WAIT_WORK (handed in: any two values do)


@pytest.fixture(scope="module")
def native():
    require_native()
    import torch  # noqa: F401 - the module links against it

    from commprof.capture import native as native_mod
    return native_mod.load(_NATIVE["so"])


@pytest.fixture
def hooked(native):
    """(class whose ``wait`` is the native one, calls seen by torch's stand-in, fallback calls)."""
    seen, fallback_calls = [], []

    def original(work, *args, **kwargs):
        """torch's wait (stand-in)."""
        seen.append((work, args, kwargs))
        if kwargs.get("fail"):
            raise kwargs["fail"]
        return ("waited", args)

    def fallback(*call):
        fallback_calls.append(call)

    def api_caller(work):  # plays distributed_c10d's function that waits on its own Work
        return work.wait()

    hook = native.make_wait(original, [api_caller.__code__], fallback, SYNC, WORK)
    Work = type("Work", (), {"wait": hook})
    native.set_enabled(True)
    yield Work, seen, fallback_calls, api_caller, hook, original
    native.set_enabled(False)
    native.drain(lambda r: None, lambda r: None)  # leave no counted error behind


def test_arguments_result_and_identity_pass_through(hooked):
    Work, seen, calls, _, hook, original = hooked
    w = Work()
    assert w.wait(5, timeout=7) == ("waited", (5,))
    assert seen == [(w, (5,), {"timeout": 7})]
    assert Work.wait is hook and w.wait.__self__ is w  # a method like torch's
    assert hook.__commprof_original__ is original and hook.__wrapped__ is original
    assert hook.__doc__ == original.__doc__
    (call,) = calls
    work, t0, t1, source, rid, has_future = call
    assert work is w and 0 < t0 <= t1 and source == WORK and rid is None and has_future is False


def test_an_exception_of_the_wait_passes_through_and_the_wait_is_recorded(hooked):
    Work, _, calls, *_ = hooked
    boom = TimeoutError("Wait timeout")
    with pytest.raises(TimeoutError) as info:
        Work().wait(fail=boom)
    assert info.value is boom
    assert len(calls) == 1 and calls[0][1] <= calls[0][2]


def test_torch_distributed_s_own_waits_are_told_from_the_user_s(hooked):
    Work, _, calls, api_caller, *_ = hooked
    w = Work()
    api_caller(w)
    w.wait()
    assert [c[3] for c in calls] == [SYNC, WORK]


def test_off_means_only_torch_s_wait(hooked, native):
    Work, seen, calls, *_ = hooked
    native.set_enabled(False)
    Work().wait()
    native.set_enabled(True)
    assert len(seen) == 1 and calls == []


def test_a_failing_fallback_is_counted_never_raised(native):
    def fallback(*call):
        raise RuntimeError("fallback broke")

    Work = type("Work", (), {"wait": native.make_wait(lambda w: 42, [], fallback, SYNC, WORK)})
    native.drain(lambda r: None, lambda r: None)
    native.set_enabled(True)
    try:
        assert [Work().wait() for _ in range(3)] == [42, 42, 42]
    finally:
        native.set_enabled(False)
    errors = native.drain(lambda r: None, lambda r: None)[4]
    assert ("work.wait", 3, "fallback broke") in [tuple(e) for e in errors]


def test_no_reference_is_leaked_per_call(hooked):
    Work, seen, calls, *_ = hooked
    w, arg = Work(), object()
    w.wait(arg)
    seen.clear(), calls.clear()
    before = sys.getrefcount(arg), sys.getrefcount(w)
    for _ in range(1000):
        w.wait(arg)
    seen.clear(), calls.clear()
    assert (sys.getrefcount(arg), sys.getrefcount(w)) == before
