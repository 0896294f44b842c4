"""Session set-up shared by every test module."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def native_kernel_built():
    """``commprof run`` defaults to ``--capture auto``: build the native kernel once, before any
    test runs a job, so that no test's own timeout pays for a cold build (20-60 s on 2 cores).
    Where it cannot be built, the jobs run on the Python path (the tests that need the native one
    skip, or fail under COMMPROF_TEST_REQUIRE_NATIVE=1: test_capture_coverage.require_native)."""
    from test_capture_coverage import _NATIVE

    from commprof.cli.native import resolve
    if not _NATIVE:
        _NATIVE.update(resolve())
    return _NATIVE
