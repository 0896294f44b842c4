"""analysis/host/cpu.py: oversubscribed cores, against counts the test makes by hand."""
from __future__ import annotations

import pandas as pd

from commprof.analysis.host import cpu


def _procs(rows):
    return pd.DataFrame(rows, columns=["rank", "host", "intra_op_threads", "cpus"])


def test_two_ranks_with_two_threads_on_two_shared_cpus_are_oversubscribed():
    procs = _procs([(0, "n1", 2, [0, 1]), (1, "n1", 2, [0, 1])])
    assert cpu.oversubscribed_hosts(procs) == [{"host": "n1", "ranks": 2, "threads": 4, "cpus": 2}]
    text = cpu.note(cpu.oversubscribed_hosts(procs))
    assert "4 intra-op threads on 2 CPUs" in text and "OMP_NUM_THREADS=1" in text


def test_one_thread_per_cpu_or_disjoint_pinning_is_not():
    assert cpu.oversubscribed_hosts(_procs([(0, "n1", 1, [0, 1]), (1, "n1", 1, [0, 1])])) == []
    # each rank pinned to its own two cores: 4 threads on 4 CPUs
    assert cpu.oversubscribed_hosts(_procs([(0, "n1", 2, [0, 1]), (1, "n1", 2, [2, 3])])) == []
    # two hosts, each fine on its own
    assert cpu.oversubscribed_hosts(_procs([(0, "a", 2, [0, 1]), (1, "b", 2, [0, 1])])) == []


def test_captures_that_do_not_say_are_left_out():
    assert cpu.oversubscribed_hosts(_procs([(0, "n1", None, None), (1, "n1", 4, [0])])) == []
    assert cpu.oversubscribed_hosts(pd.DataFrame({"rank": [0], "host": ["n1"]})) == []
    assert cpu.note([]) is None
