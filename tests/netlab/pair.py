"""``python tests/netlab/pair.py --rate MBIT -- SCRIPT [ARGS...]``: SCRIPT as a 2-node torchrun job
(one rank per "node") over a shaped link, from one command.

Both nodes inherit this process's environment, so under ``commprof run`` (or ``commprof try``)
both ranks are captured into the one run directory, as a multi-node job with a shared file
system would be.  Exit status: the first non-zero node's, else 0.  Needs root (namespaces).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from netlab import Lab  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=200.0, help="link rate, Mbit/s")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("script", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    script = args.script[1:] if args.script[:1] == ["--"] else args.script
    with Lab(rate_mbit=args.rate) as lab:
        a, b = lab.torchrun_pair(script, timeout=args.timeout)
    for name, proc in (("node 0", a), ("node 1", b)):
        sys.stdout.write(proc.stdout)
        if proc.returncode:
            sys.stderr.write(f"pair: {name} exited with {proc.returncode}\n{proc.stderr[-3000:]}")
    return next((p.returncode for p in (a, b) if p.returncode), 0)


if __name__ == "__main__":
    sys.exit(main())
