"""Golden JSON reports: the report of the demo run and of every shared GPU trace, as they are now.

``python3 scripts/golden_reports.py write`` (re)writes ``tests/golden/reports/*.json`` from
``tests/golden/demo_run/`` (a captured `commprof demo` run, committed) and ``../shared/gpu_traces/``
(``GPU_TRACES_DIR`` overrides); ``tests/integration/test_golden_reports.py`` checks that a refactor leaves
every one identical.  Rewrite them only for a change meant to alter the report, and say so in its
commit.  What varies between machines is normalised: the source's absolute path and commprof's
version.  The demo capture carries no node summary on purpose: a checkout resets its captures'
mtimes and any change to analysis/ or format/ changes the digest a summary is written with, so a
committed summary would only ever add a note that it was not used.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"
DEMO_RUN = GOLDEN / "demo_run"
SHARED = Path(os.environ.get("GPU_TRACES_DIR") or ROOT.parent / "shared" / "gpu_traces")


def sources() -> dict[str, Path]:
    """Golden name -> the run directory or trace it is the report of."""
    out = {"demo": DEMO_RUN}
    if SHARED.is_dir():
        for path in sorted(SHARED.iterdir()):
            if path.name.endswith(".json.gz") or path.is_dir():
                out[path.name.removesuffix(".json.gz")] = path
    return out


def report(source: Path, run=None) -> dict:
    """``commprof report SOURCE -f json``, normalised (path and version); a trace that records no
    rank is read as rank 0 (``--rank 0``).  ``run(source, *extra)`` runs the command and returns
    the finished process (default: a fresh subprocess; the tests pass one that shares each
    source's report among them, tests/shared_reports.py)."""
    run = run or _run
    try:
        return _report(source, [], run)
    except RuntimeError as exc:
        if "no rank" not in str(exc):
            raise
        return _report(source, ["--rank", "0"], run)


def _run(source: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "commprof", "report", str(source), "-f", "json",
                           *extra], capture_output=True, text=True, timeout=600)


def _report(source: Path, extra: list[str], run) -> dict:
    proc = run(source, *extra)
    if proc.returncode != 0:
        raise RuntimeError(f"commprof report {source}: exit {proc.returncode}: {proc.stderr}")
    doc = json.loads(proc.stdout.replace(str(source), "<SOURCE>"))
    doc.get("run", {}).pop("commprof_version", None)
    return doc


def main() -> int:
    if sys.argv[1:] != ["write"]:
        print(__doc__)
        return 2
    out = GOLDEN / "reports"
    out.mkdir(parents=True, exist_ok=True)
    for name, source in sources().items():
        (out / f"{name}.json").write_text(json.dumps(report(source), indent=1, sort_keys=True)
                                          + "\n")
        print(f"wrote {out / name}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
