"""``commprof probe [OPTIONS] [-- torchrun …]`` and the probe step of ``commprof run --probe``."""
from __future__ import annotations

import datetime as _dt
import os
import subprocess
import sys
from pathlib import Path

from commprof.errors import CommprofError, UsageError
from commprof.probe.sweep import OPS

_TORCHRUN_FLAGS_WITHOUT_VALUE = {"-m", "--module", "--no-python", "--no_python"}


def torchrun_prefix(command: list[str]) -> list[str] | None:
    """The launcher part of a torchrun command line (everything but the script and its
    arguments), or None when ``command`` is not torchrun / ``python -m torch.distributed.run``."""
    start = None
    if command and os.path.basename(command[0]) == "torchrun":
        start = 1
    else:
        for i in range(len(command) - 1):
            if command[i] == "-m" and command[i + 1] == "torch.distributed.run":
                start = i + 2
                break
    if start is None:
        return None
    from torch.distributed.run import get_args_parser
    try:
        args = get_args_parser().parse_args(command[start:])
    except SystemExit as exc:
        raise UsageError(f"cannot parse the torchrun command line: {' '.join(command)}") from exc
    end = len(command) - 1 - len(args.training_script_args)
    return command[:start] + [a for a in command[start:end] if a not in _TORCHRUN_FLAGS_WITHOUT_VALUE]


def worker_args(out: Path, sizes: str, ops: str, backend: str | None, iters: int,
                budget: float) -> list[str]:
    args = ["-m", "commprof.probe.sweep", "--out", str(out), "--sizes", sizes, "--ops", ops,
            "--iters", str(iters), "--budget", str(budget)]
    return args + (["--backend", backend] if backend else [])


def check_options(sizes: str, ops: str, backend: str | None, nproc: int, iters: int,
                  budget: float) -> None:
    from commprof.probe.sizes import parse_sizes
    try:
        parse_sizes(sizes)
    except ValueError as exc:
        raise UsageError(f"--sizes {exc}") from exc
    unknown = [o for o in ops.split(",") if o.strip() and o.strip() not in OPS]
    if unknown or not ops.strip():
        raise UsageError(f"--ops {ops!r}: unknown {', '.join(unknown) or 'empty'}; choose from "
                         + ",".join(OPS))
    if backend not in (None, "gloo", "nccl"):
        raise UsageError(f"--backend {backend!r}: gloo or nccl")
    if nproc < 1 or iters < 1 or budget <= 0:
        raise UsageError("--nproc and --iters must be >= 1, --budget > 0")


def run_probe(cmd: list[str], out: Path, env: dict | None = None) -> dict:
    """Run the probe command line; return its ``commprof.probe/1`` document."""
    from commprof.format.reader import read_probe
    proc = subprocess.run(cmd, env=env)
    if proc.returncode != 0:
        raise CommprofError(f"probe failed (exit {proc.returncode}): {' '.join(cmd)}")
    doc = read_probe(out)
    if doc is None:
        raise CommprofError(f"{out}: the probe exited 0 but wrote no result")
    return doc


def probe_command(launcher: list[str], nproc: int, sizes: str, ops: str, backend: str | None,
                  iters: int, budget: float, out: str | None, fmt: str | None) -> int:
    check_options(sizes, ops, backend, nproc, iters, budget)
    if launcher and torchrun_prefix(launcher + ["x.py"]) is None:
        raise UsageError(f"after `--`, give a torchrun launcher without a script "
                         f"(e.g. `-- torchrun --nnodes 2 --node-rank 0 ...`), not {launcher[0]!r}")
    path = Path(out) if out else Path("commprof-runs") / (
        "probe-" + _dt.datetime.now().strftime("%Y%m%d-%H%M%S") + ".json")
    if not path.parent.is_dir():
        if out:
            raise UsageError(f"{path}: parent directory {path.parent} does not exist")
        path.parent.mkdir(mode=0o755)
    path = path.resolve()
    prefix = launcher or [sys.executable, "-m", "torch.distributed.run", "--standalone",
                          f"--nproc-per-node={nproc}"]
    doc = run_probe(prefix + worker_args(path, sizes, ops, backend, iters, budget), path)
    if fmt == "json":
        sys.stdout.write(path.read_text())
    else:
        from commprof.report.probe_text import render_probe
        sys.stdout.write(render_probe(doc, color=sys.stdout.isatty() and "NO_COLOR" not in os.environ))
    print(f"commprof: wrote {path}", file=sys.stderr)
    return 0
