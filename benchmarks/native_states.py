"""The harness of the in-process state benchmarks (per_call_breakdown.py, c10d_hooks_cost.py): a
1-rank gloo job run under ``commprof run --capture native`` that prints ``RESULT name|median|min``
lines, read back here."""
from __future__ import annotations

import socket
import subprocess
import sys
import tempfile


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_states(job_text: str, args: list[str], states: int, prefix: str) -> dict[str, tuple[float, float]]:
    """Run ``job_text`` (its argv: a free port, then ``args``) under the native capture; the
    ``RESULT`` rows it printed, name -> (median, min) µs.  Exits with the job's output unless it
    printed ``states`` of them."""
    with tempfile.TemporaryDirectory(prefix=prefix) as d:
        job = f"{d}/job.py"
        with open(job, "w") as f:
            f.write(job_text)
        proc = subprocess.run([sys.executable, "-m", "commprof", "run", "-q", "--capture", "native",
                               "--sample-hz", "0", "--out", f"{d}/run", "--", sys.executable, job,
                               str(free_port()), *args], capture_output=True, text=True)
    rows = {}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            name, med, low = line[7:].split("|")
            rows[name] = (float(med), float(low))
    if len(rows) != states:
        sys.exit(f"the job failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return rows
