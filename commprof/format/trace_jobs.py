"""Profiler traces given together must come from one job: :func:`check_one_job` refuses a mix
(a directory holding traces of several jobs) in one line naming the files."""
from __future__ import annotations

from pathlib import Path

from commprof.errors import UsageError


def check_one_job(traces: list, path) -> None:
    """Refuse traces of different jobs (different world sizes, or one process group named with
    different members): one line naming the files of each."""
    sizes: dict = {}
    for t in traces:
        if t.world_size:
            sizes.setdefault(int(t.world_size), []).append(Path(t.path).name)
    groups: dict = {}
    clash = None
    for t in traces:
        for pg in t.pg_config or []:
            if not isinstance(pg, dict) or pg.get("pg_name") is None:
                continue
            member = (pg.get("pg_size"), tuple(pg.get("ranks") or ()))
            seen = groups.setdefault(str(pg["pg_name"]), (member, Path(t.path).name))
            if seen[0] != member and clash is None:
                clash = (str(pg["pg_name"]), seen[1], Path(t.path).name)
    if len(sizes) > 1:
        raise UsageError(f"{path}: traces of different jobs (world sizes " + "; ".join(
            f"{w}: {_short_names(n)}" for w, n in sorted(sizes.items())) + "): report each job's traces on their own")
    if clash:
        raise UsageError(f"{path}: traces of different jobs: process group {clash[0]} has other members "
                         f"in {clash[1]} than in {clash[2]}: report each job's traces on their own")


def _short_names(names: list[str]) -> str:
    return ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
