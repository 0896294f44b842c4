"""Session set-up shared by every test module, and the unit/integration split.

``tests/unit/``: pure logic on synthetic data or real trace files, in this process (no
subprocess, no torchrun, no network namespace; tests/unit/test_unit_rule.py holds it).
``tests/integration/``: tests that start processes (``commprof`` CLI runs, torchrun jobs, the
netlab, chromium). Every test under ``tests/integration/`` gets the ``integration`` marker, so
``pytest tests/unit`` or ``pytest -m "not integration"`` runs the fast part alone.
Helper modules (runner.py, synthetic.py, native_kernel.py, ...) stay in ``tests/``: pyproject's
``pythonpath`` puts it (and both folders, whose modules import each other's helpers) on sys.path."""
from __future__ import annotations

from pathlib import Path

import pytest

INTEGRATION = Path(__file__).resolve().parent / "integration"


def pytest_collection_modifyitems(config, items):
    """Mark every test of tests/integration/ ``integration`` (by folder, not by hand)."""
    for item in items:
        if INTEGRATION in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.integration)


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
