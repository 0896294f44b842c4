"""commprof's own cost: the native kernel's clocked time split into its parts (summary.py's
``self_overhead`` builds the report's ``overhead`` section from it)."""
from __future__ import annotations


def clocked_split(parts: list, calls: int, record_ns: int) -> tuple:
    """The kernels' clocked time as (once_ns, stalled_calls, stalled_ns, per_call_ns): the native
    kernel sets apart the first call on a new group (registered in Python under the GIL, once)
    and windows over its stall threshold (50 µs: the thread off its core); per call is the mean
    of the other windows (docs/kpis.md, "commprof's own cost").  Captures without the split (the
    Python path, older files): the plain mean, stalled_calls None."""
    split = [p.process for p in parts if p.process.get("self_stalled_calls") is not None]
    if not split or not calls:
        return 0, None, 0, (record_ns / calls if calls else 0.0)
    once_calls = sum(int(q.get("self_once_calls") or 0) for q in split)
    once_ns = sum(int(q.get("self_once_ns") or 0) for q in split)
    stalled_calls = sum(int(q.get("self_stalled_calls") or 0) for q in split)
    stalled_ns = sum(int(q.get("self_stalled_ns") or 0) for q in split)
    rest_calls = calls - once_calls - stalled_calls
    rest_ns = record_ns - once_ns - stalled_ns
    per_call = rest_ns / rest_calls if rest_calls > 0 else record_ns / calls
    return once_ns, stalled_calls, stalled_ns, per_call
