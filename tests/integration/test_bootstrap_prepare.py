"""``supervisor.prepare_bootstrap`` on a directory several ``commprof run --join`` processes share:
preparing it at the same moment never fails and always leaves a whole module and a working link
(CI once failed on the link one process created while another checked for it)."""
from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

from commprof.format import layout
from commprof.launch import supervisor


ROUNDS = 100


def _prepare(base: str, start) -> None:
    for k in range(ROUNDS):  # each round, every process prepares the same new directory at once
        start.wait()
        supervisor.prepare_bootstrap(Path(base) / str(k))


def test_concurrent_preparation_of_a_shared_directory(tmp_path):
    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(4, timeout=10)  # a process that fails breaks it: the others stop too
    for k in range(ROUNDS):
        (tmp_path / str(k)).mkdir()
    procs = [ctx.Process(target=_prepare, args=(str(tmp_path), start)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    for k in range(ROUNDS):
        boot = layout.bootstrap_dir(tmp_path / str(k))
        link = boot / layout.BOOTSTRAP_PACKAGE_LINK
        assert Path(os.readlink(link)) == Path(supervisor.commprof.__file__).parent
        assert (boot / layout.BOOTSTRAP_MODULE).read_bytes() == supervisor.BOOTSTRAP_SRC.read_bytes()
        assert sorted(p.name for p in boot.iterdir()) == sorted([layout.BOOTSTRAP_MODULE,
                                                                  layout.BOOTSTRAP_PACKAGE_LINK])
