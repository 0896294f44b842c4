"""Decides whether this Python process is a worker to capture, and starts the agent after torch loads.

Called from ``commprof/_bootstrap/sitecustomize.py`` (put first on PYTHONPATH by ``commprof run``)
in every Python process the job starts.  Skipped: the torchrun agent (launcher) process, and
processes spawned by a captured worker with the same RANK (DataLoader workers).  Forked children
are disabled by :func:`os.register_at_fork` in the agent.
"""
from __future__ import annotations

import os
import sys

ENV_OWNER = "COMMPROF_OWNER"  # "<RANK>:<pid>" of the process that captures that RANK

_LAUNCHER_SUFFIXES = ("torchrun", os.path.join("torch", "distributed", "run.py"),
                      os.path.join("torch", "distributed", "launch.py"))


def is_launcher(argv: list[str]) -> bool:
    """True for the torchrun / torch.distributed.run agent process (it runs no training)."""
    if not argv:
        return False
    first = argv[0]
    return first.endswith(_LAUNCHER_SUFFIXES) or (
        first == "-m" and len(argv) > 1 and argv[1] in ("torch.distributed.run", "torch.distributed.launch"))


def should_capture(env=os.environ, argv=None, pid=None) -> bool:
    """Whether this process is one to capture (see the module docstring)."""
    argv = sys.argv if argv is None else argv
    pid = os.getpid() if pid is None else pid
    if "LOCAL_RANK" not in env and is_launcher(argv):
        return False
    rank = env.get("RANK")
    owner = env.get(ENV_OWNER)
    if rank is not None and owner:
        owner_rank, _, owner_pid = owner.partition(":")
        if owner_rank == rank and owner_pid != str(pid):
            return False  # a child of the captured rank (DataLoader worker, spawned helper)
    return True


def activate() -> None:
    """Arrange for the agent to start once torch has been imported."""
    if "torch" in sys.modules:
        _start(sys.modules["torch"])
        return
    sys.meta_path.insert(0, _TorchImportWatcher())


def _start(torch_module) -> None:
    # sys.argv is complete only now (at sitecustomize time it may still be partial).
    if not should_capture():
        return
    if "RANK" in os.environ:
        os.environ[ENV_OWNER] = f"{os.environ['RANK']}:{os.getpid()}"
    from commprof.capture import agent
    agent.start(torch_module)


class _TorchImportWatcher:
    """A one-shot meta-path finder: wraps torch's loader so the agent starts after ``import torch``."""

    def find_spec(self, name, path=None, target=None):
        if name != "torch":
            return None
        try:
            sys.meta_path.remove(self)
        except ValueError:
            pass
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if find is None:
                continue
            spec = find(name, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        exec_module = getattr(loader, "exec_module", None)
        if exec_module is None:
            return spec

        def exec_then_start(module):
            exec_module(module)
            try:
                _start(module)
            except Exception as exc:  # noqa: BLE001 - never into the user's import
                sys.stderr.write(f"commprof: capture not started: {exc}\n")

        loader.exec_module = exec_then_start
        return spec
