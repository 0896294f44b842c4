"""Plain-text lines describing a hang diagnosis (``commprof.hang/1``): the supervisor's stderr lines
while the job runs (launch/hangwatch.py) and the reports' hang section."""
from __future__ import annotations

from commprof.format.text import printable
from commprof.format.units import fmt_bytes


def describe_op(op: dict | None) -> str:
    """``all_reduce #12 on group 0 (4.00 MiB)`` / ``send to rank 1 (#3) on group 0 (8 B)``."""
    if not op:
        return "none"
    where = f"group {op.get('group')}"
    if op.get("group_desc") and op.get("group_desc") not in ("undefined",):
        where += f" [{op['group_desc']}]"
    if "peer" in op:
        direction = "to" if op.get("op") == "send" else "from"
        what = f"{op.get('op')} {direction} rank {op['peer']} (#{op.get('p2p_ordinal')})"
    else:
        what = f"{op.get('op')} #{op.get('seq')}"
    text = f"{what} on {where} ({fmt_bytes(op.get('bytes') or 0)})"
    if op.get("age_s") is not None:
        text += f", {op['age_s']:.1f} s ago"
    return text


def _ranks(ranks: list[int]) -> str:
    return ", ".join(str(r) for r in ranks) if ranks else "none"


def hang_lines(diag: dict) -> list[str]:
    """A few lines: what is stuck, on whom it waits, each rank's last completed collective."""
    lines = [f"HANG: a collective has been pending for {diag.get('oldest_pending_s', 0):.1f} s "
             f"(timeout {diag.get('timeout_s')} s)"]
    for b in diag.get("blocked", []):
        lines.append(f"  stuck: {describe_op(b.get('op'))} -- waiting: ranks "
                     f"{_ranks(b.get('waiting_ranks', []))}; never arrived: ranks "
                     f"{_ranks(b.get('never_arrived', []))}"
                     + (f"; arrived late: ranks {_ranks(b['arrived_late'])}" if b.get("arrived_late") else "")
                     + (f"; not captured here: ranks {_ranks(b['not_captured'])}"
                        if b.get("not_captured") else ""))
    for r in diag.get("ranks", []):
        pending = r.get("pending") or []
        state = f"pending {describe_op(pending[0])}" if pending else "nothing pending"
        if r.get("pending_count", 0) > 1:
            state += f" (+{r['pending_count'] - 1} more)"
        lines.append(f"  rank {r.get('rank')}: last completed {describe_op(r.get('last_completed'))}; "
                     f"{state}" + ("; exited" if r.get("exited") else ""))
    return [printable(line) for line in lines]  # group names and descriptions come from captures
