"""``commprof report SOURCE -f json``, run once per test session for each source and shared by
the tests that only read the result: the golden comparison (test_golden_reports.py), the savings
bounds on every shared trace (test_savings_traces.py) and the DLRM cross-rank checks
(test_trace_crossrank.py) all read the same reports of ../shared/gpu_traces/ and of the
committed demo capture.  Each caller gets its own parsed copy."""
from __future__ import annotations

import functools
import subprocess
from pathlib import Path


def report_cli(source: str | Path, *extra: str) -> subprocess.CompletedProcess:
    """The finished ``commprof report SOURCE -f json EXTRA...`` (exit status, stdout, stderr;
    through the CLI's entry point in this process: runner.in_process), run the first time it is
    asked for.  Sources are told apart by their spelling (the report holds the path as given, and
    the golden comparison replaces it)."""
    return _run(str(source), extra)


@functools.lru_cache(maxsize=None)
def _run(source: str, extra: tuple[str, ...]) -> subprocess.CompletedProcess:
    from runner import in_process
    return in_process("report", source, "-f", "json", *extra)
