"""Decides whether this Python process is a worker to capture, and starts the agent after torch loads.

Called from ``commprof/_bootstrap/sitecustomize.py`` (put first on PYTHONPATH by ``commprof run``)
in every Python process the job starts.  Skipped: the torchrun agent (launcher) process, and
every process a captured worker started (spawned DataLoader workers, helper subprocesses, whatever
RANK they have or set: the launcher, not a rank, starts ranks).  Forked children are disabled by
:func:`os.register_at_fork` in the agent.
"""
from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from commprof.capture.config import CaptureConfig

_LAUNCHER_SUFFIXES = ("torchrun", os.path.join("torch", "distributed", "run.py"),
                      os.path.join("torch", "distributed", "launch.py"))


def is_launcher(argv: list[str]) -> bool:
    """True for the torchrun / torch.distributed.run agent process (it runs no training)."""
    if not argv:
        return False
    first = argv[0]
    return first.endswith(_LAUNCHER_SUFFIXES) or (
        first == "-m" and len(argv) > 1 and argv[1] in ("torch.distributed.run", "torch.distributed.launch"))


def should_capture(config: CaptureConfig | None = None, argv=None, pid=None) -> bool:
    """Whether this process is one to capture (see the module docstring); ``config``: this
    process's (read now when not given)."""
    from commprof.capture.config import CaptureConfig
    config = CaptureConfig.from_env() if config is None else config
    argv = sys.argv if argv is None else argv
    pid = os.getpid() if pid is None else pid
    if config.local_rank is None and is_launcher(argv):
        return False
    if config.owner:
        _, _, owner_pid = config.owner.partition(":")
        if owner_pid != str(pid):
            # Started by a captured rank (it set COMMPROF_OWNER): a DataLoader worker or a helper
            # -- e.g. a `python -c` making its own one-process group, with its own RANK or none --
            # never a rank the launcher assigned, which no captured process is the parent of.
            return False
    return True


def activate() -> None:
    """Arrange for the agent to start once torch has been imported.  Runs at interpreter start-up
    in every process of the job: it imports nothing (the settings are read at :func:`_start`)."""
    if "torch" in sys.modules:
        _start(sys.modules["torch"])
        return
    sys.meta_path.insert(0, _TorchImportWatcher())


def _start(torch_module) -> None:
    # sys.argv is complete only now (at sitecustomize time it may still be partial), and so is
    # the environment (a script may set RANK before it imports torch): the settings are read here.
    from commprof.capture.config import CaptureConfig, claim_rank
    config = CaptureConfig.from_env()
    if not should_capture(config):
        return
    if config.rank is not None:
        claim_rank(config.rank, os.getpid())
    from commprof.capture import agent
    agent.start(torch_module, config)


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
