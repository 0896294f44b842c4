"""``commprof demo``: the bundled DDP job under ``commprof run``, then its report."""
from __future__ import annotations

import sys
from pathlib import Path

from commprof.errors import CommprofError, UsageError

DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo_train.py"


def demo_command(out: str | None, steps: int, nproc: int) -> int:
    from commprof.cli.report import report_command
    from commprof.cli.run import run_command
    if steps < 1 or nproc < 1:
        raise UsageError("--steps and --nproc must be >= 1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={nproc}", str(DEMO), "--steps", str(steps)]
    returncode, run_dir = run_command(command, out=out)
    if returncode != 0:
        raise CommprofError(f"the demo job failed (exit status {returncode}); its output is above, "
                            f"its capture in {run_dir}")
    return report_command(str(run_dir), None, None, 2, None)
