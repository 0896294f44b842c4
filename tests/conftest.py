"""Session set-up shared by every test module, and the unit/integration split.

``tests/unit/``: pure logic on synthetic data or real trace files, in this process (no
subprocess, no torchrun, no network namespace; tests/unit/test_unit_rule.py holds it).
``tests/integration/``: tests that start processes (``commprof`` CLI runs, torchrun jobs, the
netlab, chromium). Every test under ``tests/integration/`` gets the ``integration`` marker, so
``pytest tests/unit`` or ``pytest -m "not integration"`` runs the fast part alone.
Helper modules (runner.py, synthetic.py, native_kernel.py, ...) stay in ``tests/``: pyproject's
``pythonpath`` puts it (and both folders, whose modules import each other's helpers) on sys.path.

The suite runs serially by default; ``-n 2 --dist loadgroup`` runs it on two pytest-xdist
workers (docs/testing.md says what each gives).  Each test gets one ``xdist_group`` here
(``--dist loadgroup`` runs a group on one worker, in file order): its file's, or a group shared
by files that share a session's work or a resource (:data:`SHARED_GROUPS`).  The tests of
:data:`ALONE` compare wall times of separate runs and measure the other processes' load while
they run: under xdist they run while the other worker waits (:func:`pytest_runtest_protocol`)."""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
INTEGRATION = TESTS / "integration"

# Files whose tests run on one worker, one after another, because they share something:
SHARED_GROUPS = {
    # one shaped-link lab at a time: a lab's rates and RTTs (tests/netlab/lab.py) were measured
    # with both cores busy, not with a second lab's relay and iperf3 beside it (the labs of
    # test_whatif_netlab and test_try_netlab run ALONE; test_crossrank_integration's only
    # checks that two node directories merge)
    "netlab": ["test_netlab.py", "test_links_netlab.py"],
    # the session's demo run (tests/demo_run.py demo_run): made once, not once per worker
    "demo-run": ["test_rank_summary.py", "test_latency_sketch.py", "test_load_run_api.py",
                 "test_node_summary.py", "test_report_model_job.py", "test_export_parquet.py",
                 "test_parallel_report.py"],
    # the session's plain FSDP2 run (tests/demo_run.py fsdp2_run) and its report
    "fsdp2-run": ["test_try_fixes.py", "test_savings_integration.py"],
    # the session's `commprof report` of each shared GPU trace (tests/shared_reports.py)
    "trace-reports": ["test_golden_reports.py", "test_savings_traces.py", "test_trace_crossrank.py"],
}
GROUP_OF_FILE = {name: group for group, names in SHARED_GROUPS.items() for name in names}

# Files whose tests judge wall times of separate runs and skip when other processes used more
# than a quarter of a core (runner.ForeignLoad): beside the other worker they would always skip.
ALONE = {"test_gate_integration.py", "test_whatif_netlab.py", "test_try_netlab.py"}


def xdist_group_of(path: Path) -> str:
    """A test file's group: a shared one, else the file itself (its module fixtures run once)."""
    return GROUP_OF_FILE.get(path.name) or path.resolve().relative_to(TESTS).as_posix()


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the marks
def pytest_collection_modifyitems(config, items):
    """Mark every test of tests/integration/ ``integration`` (by folder, not by hand), and put
    every test in its ``xdist_group``."""
    for item in items:
        path = Path(str(item.path)).resolve()
        if INTEGRATION in path.parents:
            item.add_marker(pytest.mark.integration)
        if not any(item.iter_markers("xdist_group")):
            item.add_marker(pytest.mark.xdist_group(xdist_group_of(path)))


@pytest.hookimpl(wrapper=True, tryfirst=True)  # outside pytest-timeout's timer: waiting is not running
def pytest_runtest_protocol(item, nextitem):
    """Under xdist, a test of :data:`ALONE` runs (setup, call, teardown) while no other test
    does; every other test runs beside any test but those."""
    with _turn(item.config, alone=Path(str(item.path)).name in ALONE):
        return (yield)


@contextlib.contextmanager
def _turn(config, alone: bool):
    """A readers-writer lock between the workers of this pytest session (``flock`` on files in
    the session's base temporary directory): the other tests hold it shared, an ALONE test
    exclusively.  The writer waits at a turnstile that new readers pass through, so a worker
    that keeps starting tests cannot starve it."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None:  # not an xdist worker: nothing runs beside this test
        yield
        return
    shared = Path(config.option.basetemp).parent  # the controller's basetemp, one per session
    with open(shared / "alone.turnstile", "a") as gate, open(shared / "alone.lock", "a") as lock:
        fcntl.flock(gate, fcntl.LOCK_EX)
        if alone:
            fcntl.flock(lock, fcntl.LOCK_EX)
            fcntl.flock(gate, fcntl.LOCK_UN)
        else:
            fcntl.flock(gate, fcntl.LOCK_UN)
            fcntl.flock(lock, fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="session", autouse=True)
def commprof_bytecode():
    """Compile commprof's modules to bytecode once, as ``pip install`` does for an installed
    package: the suite starts about a thousand Python processes that import commprof (``commprof
    run`` and its workers' bootstrap), and under PYTHONDONTWRITEBYTECODE=1 (set on this project's
    machines) an editable checkout without ``__pycache__`` is compiled again in every one of them
    (~0.1 s of CPU each).  Source files newer than their bytecode are recompiled, as Python itself
    does; a checkout that cannot be written is left as it is."""
    import compileall

    import commprof
    package = Path(commprof.__file__).resolve().parent
    if os.access(package, os.W_OK):
        compileall.compile_dir(str(package), quiet=2, workers=1)


@pytest.fixture(scope="session", autouse=True)
def native_kernel_built():
    """``commprof run`` defaults to ``--capture auto``: build the native kernel once, before any
    test runs a job, so that no test's own timeout pays for a cold build (20-60 s on 2 cores).
    Where it cannot be built, the jobs run on the Python path (the tests that need the native one
    skip, or fail under COMMPROF_TEST_REQUIRE_NATIVE=1: native_kernel.require_native)."""
    from native_kernel import _NATIVE

    from commprof.cli.native import resolve
    if not _NATIVE:
        _NATIVE.update(resolve())
    return _NATIVE
