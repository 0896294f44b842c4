"""No behaviour change by accident: the JSON report of the demo run (a committed capture) and of
every shared GPU trace equals its golden copy (``tests/golden/reports/``, written by
``scripts/golden_reports.py write`` before a refactor).  A change meant to alter the report
rewrites the golden copies in the same commit, and its diff shows what changed."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from shared_reports import report_cli

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("golden_reports", ROOT / "scripts" / "golden_reports.py")
golden = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden)
SOURCES = golden.sources()


def _differences(want, got, path="$") -> list[str]:
    """Every key path where ``got`` differs from ``want`` (first 20)."""
    if isinstance(want, dict) and isinstance(got, dict):
        out = []
        for key in sorted(set(want) | set(got)):
            if key not in got:
                out.append(f"{path}.{key}: missing")
            elif key not in want:
                out.append(f"{path}.{key}: new")
            else:
                out += _differences(want[key], got[key], f"{path}.{key}")
        return out
    if isinstance(want, list) and isinstance(got, list) and len(want) == len(got):
        return [d for i, (w, g) in enumerate(zip(want, got)) for d in _differences(w, g, f"{path}[{i}]")]
    return [] if want == got else [f"{path}: {str(want)[:80]!r} -> {str(got)[:80]!r}"]


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_report_equals_its_golden_copy(name):
    stored = golden.GOLDEN / "reports" / f"{name}.json"
    if not stored.is_file():
        pytest.skip(f"no golden copy of {name} (python3 scripts/golden_reports.py write)")
    got = json.loads(json.dumps(golden.report(SOURCES[name], run=report_cli)))  # tuples -> lists, as stored
    diffs = _differences(json.loads(stored.read_text()), got)
    assert not diffs, f"{name}: the report changed at\n" + "\n".join(diffs[:20])


def test_the_demo_capture_is_there():
    assert (golden.DEMO_RUN / "manifest.json").is_file() and any((golden.DEMO_RUN / "ranks").iterdir())
