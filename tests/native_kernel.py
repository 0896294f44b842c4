"""The native capture kernel, resolved once per test session (shared by unit and integration
tests: tests/conftest.py builds it before any test runs; tests that need it call
:func:`require_native`)."""
from __future__ import annotations

import os

import pytest

_NATIVE: dict = {}


def require_native() -> None:
    """Build the native kernel once (as `commprof run` would); skip, or fail in CI, without it."""
    if not _NATIVE:
        from commprof.cli.native import resolve
        _NATIVE.update(resolve())
    if not _NATIVE.get("ok"):
        why = f"native capture unavailable here: {_NATIVE.get('why')}"
        if os.environ.get("COMMPROF_TEST_REQUIRE_NATIVE") == "1":
            pytest.fail(why)
        pytest.skip(why)
