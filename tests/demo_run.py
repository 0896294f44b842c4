"""One real demo run (the bundled DDP job under ``commprof run``), made once per test session and
shared by the tests of the data API (tests/test_load_run_api.py, tests/test_export_parquet.py)."""
from __future__ import annotations

from pathlib import Path

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
