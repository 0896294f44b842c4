"""Oversubscribed cores: more compute threads on a host than the CPUs its ranks may use.

Then communication's CPU work (gloo's threads, the kernel's network stack) and the other ranks
take cores from compute threads, and OpenMP's spin-waiting barriers turn every such
interruption into lost compute time, so the compute time of a step grows with the bytes moved.
What-if projections hold compute constant; on such a host they under-project the saving of
sending fewer bytes (docs/whatif.md: measured 0.76–0.84 of the projection before the demo
set one thread per rank).
"""
from __future__ import annotations

import pandas as pd


def oversubscribed_hosts(procs: pd.DataFrame) -> list[dict]:
    """Per host whose ranks' intra-op threads outnumber the CPUs they may run on (the union of
    their affinity masks): ``{host, ranks, threads, cpus}``.  Hosts whose captures do not say
    (older captures) are left out."""
    if not len(procs) or "intra_op_threads" not in procs or "cpus" not in procs:
        return []
    out = []
    for host, g in procs.groupby("host", sort=True):
        threads = pd.to_numeric(g["intra_op_threads"], errors="coerce")
        masks = [m for m in g["cpus"] if isinstance(m, list)]
        if threads.isna().any() or len(masks) != len(g):
            continue
        cpus = len(set().union(*map(set, masks)))
        if cpus and threads.sum() > cpus:
            out.append({"host": str(host), "ranks": int(len(g)), "threads": int(threads.sum()),
                        "cpus": int(cpus)})
    return out


def note(hosts: list[dict]) -> str | None:
    """The report note for :func:`oversubscribed_hosts` (None when there is none)."""
    if not hosts:
        return None
    h = hosts[0]
    more = f" (and {len(hosts) - 1} more host(s))" if len(hosts) > 1 else ""
    per_rank = max(1, h["cpus"] // max(h["ranks"], 1))
    return (f"host {h['host']}{more}: {h['ranks']} rank(s) run {h['threads']} intra-op threads on "
            f"{h['cpus']} CPUs: communication's CPU work then slows compute, and what-if "
            f"projections (which hold compute constant) under-estimate savings; set "
            f"OMP_NUM_THREADS={per_rank} (or torch.set_num_threads) before torch is imported")
