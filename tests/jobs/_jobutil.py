"""Shared helpers of the capture-coverage jobs (imported by the job scripts, never by commprof).

Each job records, next to what it does, the ground truth the test checks the capture against:
the shapes and dtypes of the tensors of every communication call it makes (or expects torch to
make on its behalf), the process groups it used, and the lines it printed.  Nothing here asks
commprof anything: the expectation is derived from torch and the job's own arithmetic only.

The expectation of rank R goes to ``$COMMPROF_TEST_EXPECT/expect.rankR.json``.
"""
from __future__ import annotations

import json
import os
import sys
import time

ENV_EXPECT = "COMMPROF_TEST_EXPECT"


def spec(t) -> list:
    """[shape, dtype name] of one tensor (the test turns it into bytes itself)."""
    return [list(t.shape), str(t.dtype).replace("torch.", "")]


def specs(tensors) -> list:
    """Specs of a tensor, or of a (nested) list of tensors, flattened."""
    if tensors is None:
        return []
    if isinstance(tensors, (list, tuple)):
        out = []
        for t in tensors:
            out.extend(specs(t))
        return out
    return [spec(tensors)]


class Expect:
    """The ground truth one process writes for the test."""

    def __init__(self, job: str, rank: int = 0, world: int = 1):
        self.data = {"job": job, "rank": rank, "world": world, "ops": [], "groups": {},
                     "lines": [], "facts": {}}

    @property
    def rank(self) -> int:
        return self.data["rank"]

    def group(self, label: str, pg, ranks) -> None:
        """Remember a process group: its c10d name (from torch) and global ranks."""
        from torch.distributed import distributed_c10d as c10d
        self.data["groups"][label] = {"name": c10d._get_process_group_name(pg),
                                      "ranks": list(ranks), "size": pg.size(),
                                      "rank": pg.rank()}

    def op(self, op: str, group: str, inputs=None, outputs=None, *, backward: bool = False,
           peer: int | None = None, step: int | None = None, note: str = "") -> None:
        """One expected communication record (canonical op name, group label, tensor specs)."""
        self.data["ops"].append({"op": op, "group": group, "in": specs(inputs),
                                 "out": specs(outputs), "backward": backward, "peer": peer,
                                 "step": step, "note": note})

    def fact(self, key: str, value) -> None:
        self.data["facts"][key] = value

    def say(self, line: str) -> None:
        """Print one line (a single write, so ranks never interleave inside a line)."""
        self.data["lines"].append(line)
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def save(self) -> None:
        folder = os.environ.get(ENV_EXPECT)
        if not folder:
            return
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"expect.rank{self.rank}.json")
        with open(path + ".tmp", "w") as fh:
            json.dump(self.data, fh, indent=1)
        os.replace(path + ".tmp", path)


def finish(expect: Expect, distributed: bool = True) -> None:
    """Save the expectation, then tear down the way that avoids gloo's exit abort."""
    expect.save()
    if distributed:
        import torch.distributed as dist
        if dist.is_initialized():
            dist.destroy_process_group()
        time.sleep(0.2)
