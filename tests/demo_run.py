"""One real demo run (the bundled DDP job under ``commprof run``), made once per test session and
shared by the tests that only read it (the data API: tests/integration/test_load_run_api.py,
tests/integration/test_export_parquet.py; the report model: test_report_model_job.py; ...), and
one plain run of the FSDP2 job (tests/jobs/fsdp2_mlp.py), shared the same way by the fixes'
baseline (test_try_fixes.py) and the savings model (test_savings_integration.py)."""
from __future__ import annotations

import functools
import json
from pathlib import Path

from commprof.format.reader import read_capture

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "commprof" / "examples" / "demo_train.py"
STEPS = 8


def demo_run(tmp_path_factory) -> Path:
    """The run directory (made on first use; 2 ranks, gloo, ``STEPS`` steps, a small model)."""
    from runner import commprof, torchrun
    run = tmp_path_factory.getbasetemp() / "data-api-demo-run"
    if not (run / "manifest.json").exists():
        proc = commprof("run", "-q", "--out", str(run), "--",
                        *torchrun(DEMO, "--steps", str(STEPS), "--width", "256"), timeout=300)
        assert proc.returncode == 0, proc.stderr
    return run


def fsdp2_run(tmp_path_factory) -> Path:
    """The run directory of tests/jobs/fsdp2_mlp.py under a plain ``commprof run -q --sample-hz 0``
    (made on first use; 2 ranks, gloo, its 3 steps).  Readers only: ``commprof report`` and
    ``load_run`` write nothing into it."""
    from runner import HERE, commprof, torchrun
    run = tmp_path_factory.getbasetemp() / "fsdp2-plain-run"
    if not (run / "manifest.json").exists():
        proc = commprof("run", "-q", "--out", str(run), "--sample-hz", "0", "--",
                        *torchrun(HERE / "jobs" / "fsdp2_mlp.py"))
        assert proc.returncode == 0, proc.stderr[-3000:]
    return run


def shared_report(run: Path, *extra: str) -> dict:
    """``commprof report RUN -f json EXTRA...`` of a run no test writes to (the session's demo and
    FSDP2 runs, a module fixture's runs), made once per session for each (run, options): each
    caller gets its own parsed copy, so the report subprocess runs once however many read it."""
    return json.loads(_report_text(str(run), extra))


@functools.lru_cache(maxsize=None)
def _report_text(run: str, extra: tuple[str, ...]) -> str:
    from runner import commprof
    proc = commprof("report", run, "--format", "json", *extra)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def capture_of_rank(run: Path, rank: int) -> Path:
    """The capture file of ``rank`` in ``run``, by its header (a name pattern like ``rank*1.*``
    also matches rank 0's file whenever its pid ends in 1)."""
    (path,) = [p for p in sorted((run / "ranks").glob("rank*.cpf")) if read_capture(p).rank == rank]
    return path


def end_of_last_record(capture: Path, kind: str = "coll") -> int:
    """The shortest prefix of ``capture`` (in bytes) that still holds every ``kind`` record.

    The last record of that kind ends there, so a cut one byte short tears it and bytes just
    before it lie inside it.  Where it lies depends on how the writer interleaved kinds (and so on
    machine load), so it is found by bisection on what the reader keeps, not from a fixed fraction
    of the file."""
    data = capture.read_bytes()
    scratch = capture.with_name(capture.name + ".bisect")

    def kept(cut: int) -> int:
        scratch.write_bytes(data[:cut])
        return len(read_capture(scratch).arrays.get(kind, ()))

    try:
        lo = read_capture(capture).header["region"]["start"]  # records begin there (after padding)
        full = kept(len(data))
        assert full > 1, f"{capture.name} holds {full} {kind} records"
        hi = len(data)  # invariant: kept(hi) == full > kept(lo)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if kept(mid) == full else (mid, hi)
    finally:
        scratch.unlink(missing_ok=True)
    return hi
