"""Run jobs under ``commprof run`` for integration tests (real processes, real gloo)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(script: Path | str, *args: str, nproc: int = 2) -> list[str]:
    """A torchrun command line (via ``python -m torch.distributed.run``) on a free port."""
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}",
            "--master-addr=127.0.0.1", f"--master-port={free_port()}", "--max-restarts=0",
            str(script), *args]


def commprof(*args: str, env: dict | None = None, timeout: float = 180,
             cwd: str | os.PathLike | None = None) -> subprocess.CompletedProcess:
    """``python -m commprof ARGS`` with captured output."""
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "commprof", *args], capture_output=True,
                          text=True, timeout=timeout, env=full_env, cwd=cwd)


def report_json(run_dir: Path, *extra: str) -> dict:
    proc = commprof("report", str(run_dir), "--format", "json", *extra)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def cpu_seconds() -> tuple[float, float]:
    """(machine-wide busy CPU seconds incl. steal, this process's + reaped children's): their
    difference over an interval is what *other* processes used (tests that compare wall times of
    separate runs skip when it is large, instead of judging a loaded machine)."""
    import os
    import resource
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    busy = (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")
    own = sum(getattr(resource.getrusage(w), f) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
              for f in ("ru_utime", "ru_stime"))
    return busy, own
