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
    start = _torchrun_options_start(command)
    if start is None:
        return None
    from torch.distributed.run import get_args_parser
    try:
        args = get_args_parser().parse_args(command[start:])
    except SystemExit as exc:
        raise UsageError(f"cannot parse the torchrun command line: {' '.join(command)}") from exc
    end = len(command) - 1 - len(args.training_script_args)
    return command[:start] + [a for a in command[start:end] if a not in _TORCHRUN_FLAGS_WITHOUT_VALUE]


def _torchrun_options_start(command: list[str]) -> int | None:
    """Index of torchrun's first option in ``command``, None when it is not a torchrun command."""
    if command and os.path.basename(command[0]) == "torchrun":
        return 1
    for i in range(len(command) - 1):
        if command[i] == "-m" and command[i + 1] == "torch.distributed.run":
            return i + 2
    return None


def worker_args(out: Path, sizes: str, ops: str, backend: str | None, iters: int,
                budget: float, quiet: bool = False) -> list[str]:
    args = ["-m", "commprof.probe.sweep", "--out", str(out), "--sizes", sizes, "--ops", ops,
            "--iters", str(iters), "--budget", str(budget)]
    return args + (["--backend", backend] if backend else []) + (["--quiet"] if quiet else [])


def probe_environment(launcher: list[str], base: dict | None = None) -> dict:
    """The environment of the probe's torchrun: commprof's own processes, so torch's chatter stays
    out of the user's terminal.  Where torchrun would set OMP_NUM_THREADS=1 itself (several ranks
    per node, the variable unset) it is set here, which is the same but without torchrun's banner
    about it; C++ warnings of torch (``[W ...]`` lines) are off unless TORCH_CPP_LOG_LEVEL is set."""
    env = dict(os.environ if base is None else base)
    if "OMP_NUM_THREADS" not in env and (_local_world_size(launcher) or 1) > 1:
        env["OMP_NUM_THREADS"] = "1"
    env.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    return env


def _local_world_size(launcher: list[str]) -> int | None:
    """torchrun's processes per node for this launcher (``--nproc-per-node``), None if unknown."""
    start = _torchrun_options_start(launcher)
    if start is None:
        return None
    try:
        from torch.distributed.run import determine_local_world_size, get_args_parser
        args = get_args_parser().parse_args(list(launcher[start:]) + ["x.py"])
        return int(determine_local_world_size(args.nproc_per_node))
    except (Exception, SystemExit):  # noqa: BLE001 - unknown: leave OMP_NUM_THREADS to torchrun
        return None


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
    from commprof.format.layout import DEFAULT_ROOT
    path = Path(out) if out else Path(DEFAULT_ROOT) / (
        "probe-" + _dt.datetime.now().strftime("%Y%m%d-%H%M%S") + ".json")
    if not path.parent.is_dir():
        if out:
            raise UsageError(f"{path}: parent directory {path.parent} does not exist")
        path.parent.mkdir(mode=0o755)
    path = path.resolve()
    prefix = launcher or [sys.executable, "-m", "torch.distributed.run", "--standalone",
                          f"--nproc-per-node={nproc}"]
    doc = run_probe(prefix + worker_args(path, sizes, ops, backend, iters, budget), path,
                    env=probe_environment(prefix))
    if fmt == "json":
        sys.stdout.write(path.read_text())
    else:
        from commprof.report.probe_text import render_probe
        sys.stdout.write(render_probe(doc, color=sys.stdout.isatty() and "NO_COLOR" not in os.environ))
    print(f"commprof: wrote {path}", file=sys.stderr)
    return 0
