"""Hang diagnosis: which collective is stuck, on which ranks, and who never arrived.

A *pending* collective is one a rank issued (its COLL record exists) whose completion (DONE) has
not been seen.  It is *stuck* when it has been pending longer than the hang timeout.  Like
PyTorch's Flight Recorder + ``torchfrtrace``, but from commprof's own records (so gloo too):

* collectives on a group are matched across ranks by their sequence number on that group (every
  member issues a group's collectives in the same order; ``COLL.seq``), the group by its name;
* a point-to-point op is matched by its ordinal among the ops between the same two ranks in the
  same direction (the k-th send from r to p pairs with p's k-th receive from r).

A member of the stuck collective's group that has not issued that sequence number *never arrived*.
A pending record is presumed complete once a later record of the same kind on the same group
completed on that rank (completion of future-less Works is only observed at their wait, so a
fire-and-forget ``isend`` must not read as a hang).

:class:`HangTracker` consumes records incrementally (what ``commprof run --hang-timeout`` feeds it
from the growing capture files); :meth:`HangTracker.diagnose` returns a JSON-ready dict.
Pure numpy/Python: the supervisor imports it without pandas.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from commprof.format import schema

HANG_SCHEMA = "commprof.hang/1"
_P2P_OPS = {schema.OP_INDEX["send"], schema.OP_INDEX["recv"]}
_ORPHAN_CAP = 65536  # completions seen before their record (flush order): kept this many at most


@dataclass
class _Op:
    """One collective or P2P call of one rank, as the diagnosis names it."""

    rid: int
    op: int
    gid: int
    seq: int
    nbytes: int
    t_issue: int  # ns, the rank's monotonic clock
    peer: int  # group-local peer, -1 for collectives
    p2p_ordinal: int = -1  # k-th op between this rank and peer in this direction

    def describe(self, rank: "_RankState", now_ns: int | None = None) -> dict:
        group = rank.groups.get(self.gid, {})
        out = {"op": schema.OPS[self.op] if self.op < len(schema.OPS) else f"op{self.op}",
               "group": group.get("name", str(self.gid)), "group_desc": group.get("desc"),
               "group_size": group.get("size"), "bytes": self.nbytes}
        if self.peer >= 0:  # P2P ops pair up by ordinal between two ranks, not by group seq
            out["peer"] = rank.global_rank(self.gid, self.peer)
            out["p2p_ordinal"] = self.p2p_ordinal
        else:
            out["seq"] = self.seq
        if now_ns is not None:
            out["age_s"] = round((rank.now_local(now_ns) - self.t_issue) / 1e9, 3)
        return out


@dataclass
class _RankState:
    rank: int
    header: dict
    clock_offset_ns: int = 0  # watcher clock minus this rank's clock
    groups: dict[int, dict] = field(default_factory=dict)  # gid -> group JSON
    issued: dict[tuple[int, bool], int] = field(default_factory=dict)  # (gid, p2p) -> next seq
    p2p_count: dict[tuple[int, int, int], int] = field(default_factory=dict)  # (gid, peer, op)
    pending: dict[int, _Op] = field(default_factory=dict)  # rid -> op
    last_done: dict[tuple[int, bool], _Op] = field(default_factory=dict)
    orphans: set = field(default_factory=set)  # DONE ids seen before their COLL record
    last_record_ns: int = 0
    exited: bool = False

    def now_local(self, now_ns: int) -> int:
        return now_ns - self.clock_offset_ns

    def global_rank(self, gid: int, local: int) -> int:
        ranks = self.groups.get(gid, {}).get("ranks")
        if ranks and 0 <= local < len(ranks):
            return int(ranks[local])
        return int(local)

    def group_key(self, gid: int) -> str:
        return str(self.groups.get(gid, {}).get("name", gid))

    def members(self, gid: int) -> list[int] | None:
        """Global ranks of a group, in group-rank order (None when the capture lacks them)."""
        ranks = self.groups.get(gid, {}).get("ranks")
        return [int(r) for r in ranks] if ranks else None


class HangTracker:
    """Incremental state of every rank's issued, pending and completed collectives."""

    def __init__(self):
        self.ranks: dict[int, _RankState] = {}

    def add_rank(self, rank: int, header: dict, clock_offset_ns: int = 0) -> None:
        """Start tracking a capture file (the latest one of ``rank`` replaces earlier ones)."""
        self.ranks[rank] = _RankState(rank, header, clock_offset_ns)

    def feed(self, rank: int, arrays: dict[str, np.ndarray], objects: list[dict]) -> None:
        """New records of ``rank`` (as :class:`commprof.format.reader.CaptureTail` returns them)."""
        st = self.ranks[rank]
        for obj in objects:
            if obj.get("type") == "group" and "id" in obj:
                st.groups[int(obj["id"])] = obj
            elif obj.get("type") == "trailer":
                st.exited = True
        coll = arrays.get("coll")
        done = arrays.get("done")
        done_ids = done["id"] if done is not None else np.empty(0, dtype=np.int64)
        later = done_ids  # completions of records fed in earlier calls (or not yet fed)
        if coll is not None and len(coll):
            st.last_record_ns = max(st.last_record_ns, int(coll["t_return"].max()))
            self._add_records(st, coll, done_ids)
            later = done_ids[~np.isin(done_ids, coll["id"])]
        for rid in later.tolist():  # few: a batch's completions mostly match its own records
            op = st.pending.pop(rid, None)
            if op is not None:
                self._completed(st, op)
            elif len(st.orphans) < _ORPHAN_CAP:
                st.orphans.add(rid)

    def _add_records(self, st: _RankState, coll: np.ndarray, done_ids: np.ndarray) -> None:
        failed = (coll["flags"] & schema.FLAG_FAILED) != 0
        is_p2p = np.isin(coll["op"], list(_P2P_OPS))
        # Sequence bookkeeping for every record; details only for the few still pending.
        kind = coll["group"].astype(np.int64) * 2 + is_p2p  # (group, is P2P) as one key
        for k in np.unique(kind).tolist():
            key = (k // 2, bool(k % 2))
            top = int(coll["seq"][kind == k].max()) + 1
            st.issued[key] = max(st.issued.get(key, 0), top)
        ids = coll["id"]
        known_done = np.isin(ids, done_ids)
        if st.orphans:
            was_orphan = np.isin(ids, np.fromiter(st.orphans, dtype=np.int64))
            st.orphans.difference_update(ids[was_orphan].tolist())
            known_done |= was_orphan
        p2p_rows = np.flatnonzero(is_p2p)
        ordinals = {}
        for i in p2p_rows.tolist():  # P2P ordinals need every P2P record, in issue order
            key = (int(coll["group"][i]), int(coll["peer"][i]), int(coll["op"][i]))
            ordinals[i] = st.p2p_count.get(key, 0)
            st.p2p_count[key] = ordinals[i] + 1
        # The last completed record per (group, kind), and everything still pending.
        interesting = np.flatnonzero(~known_done & ~failed).tolist()
        done_rows = np.flatnonzero(known_done | failed)
        for k in np.unique(kind[done_rows]).tolist():
            rows = done_rows[kind[done_rows] == k]
            interesting.append(int(rows[np.argmax(coll["seq"][rows])]))
        for i in interesting:
            row = coll[i]
            op = _Op(int(row["id"]), int(row["op"]), int(row["group"]), int(row["seq"]),
                     int(max(row["in_bytes"], row["out_bytes"])), int(row["t_issue"]),
                     int(row["peer"]) if bool(is_p2p[i]) else -1, ordinals.get(i, -1))
            if known_done[i] or failed[i]:
                self._completed(st, op)
            else:
                st.pending[op.rid] = op

    @staticmethod
    def _completed(st: _RankState, op: _Op) -> None:
        key = (op.gid, op.peer >= 0)
        last = st.last_done.get(key)
        if last is None or op.seq > last.seq:
            st.last_done[key] = op
        # Earlier records of the same kind on this group are presumed complete (see module doc).
        for rid in [r for r, p in st.pending.items() if (p.gid, p.peer >= 0) == key and p.seq < op.seq]:
            del st.pending[rid]

    # -- diagnosis ----------------------------------------------------------------------------
    def stuck(self, now_ns: int, timeout_s: float) -> list[tuple[_RankState, _Op]]:
        """Pending records older than ``timeout_s`` (watcher clock ``now_ns``)."""
        out = []
        for st in self.ranks.values():
            now_local = st.now_local(now_ns)
            for op in st.pending.values():
                if now_local - op.t_issue > timeout_s * 1e9:
                    out.append((st, op))
        return sorted(out, key=lambda so: (so[1].t_issue + so[0].clock_offset_ns))

    def diagnose(self, now_ns: int, timeout_s: float) -> dict | None:
        """The hang report, or None when nothing has been pending longer than ``timeout_s``."""
        stuck = self.stuck(now_ns, timeout_s)
        if not stuck:
            return None
        blocked: dict[tuple, dict] = {}
        for st, op in stuck:
            key = self._match_key(st, op)
            entry = blocked.setdefault(key, {"op": op.describe(st), "waiting_ranks": [],
                                             "never_arrived": [], "not_captured": []})
            entry["waiting_ranks"].append(st.rank)
            if op.peer >= 0:
                self._p2p_arrivals(st, op, entry)
            else:
                self._collective_arrivals(st, op, entry)
        for entry in blocked.values():
            for k in ("waiting_ranks", "never_arrived", "not_captured"):
                entry[k] = sorted(set(entry[k]))
        ranks = []
        for st in sorted(self.ranks.values(), key=lambda s: s.rank):
            last = max(st.last_done.values(), key=lambda o: o.t_issue, default=None)
            pending = sorted(st.pending.values(), key=lambda o: o.t_issue)
            ranks.append({
                "rank": st.rank, "host": st.header.get("host"), "pid": st.header.get("pid"),
                "exited": st.exited,
                "last_completed": last.describe(st, now_ns) if last else None,
                "pending": [p.describe(st, now_ns) for p in pending[:8]],
                "pending_count": len(pending),
                "issued": {f"{st.group_key(g)}{'/p2p' if p else ''}": n
                           for (g, p), n in sorted(st.issued.items())},
                "last_record_age_s": round((st.now_local(now_ns) - st.last_record_ns) / 1e9, 3)
                if st.last_record_ns else None,
            })
        oldest_st, oldest = stuck[0]
        return {"schema": HANG_SCHEMA, "timeout_s": timeout_s,
                "oldest_pending_s": round((oldest_st.now_local(now_ns) - oldest.t_issue) / 1e9, 3),
                "blocked": list(blocked.values()), "ranks": ranks}

    def _match_key(self, st: _RankState, op: _Op) -> tuple:
        if op.peer < 0:
            return ("coll", st.group_key(op.gid), op.seq)
        peer = st.global_rank(op.gid, op.peer)
        send = op.op == schema.OP_INDEX["send"]
        src, dst = (st.rank, peer) if send else (peer, st.rank)
        return ("p2p", st.group_key(op.gid), src, dst, op.p2p_ordinal)

    def _find_group(self, st: _RankState, name: str) -> int | None:
        for gid, g in st.groups.items():
            if str(g.get("name", gid)) == name:
                return gid
        return None

    def _collective_arrivals(self, st: _RankState, op: _Op, entry: dict) -> None:
        members = st.members(op.gid)
        if members is None:
            members = sorted(self.ranks)
        name = st.group_key(op.gid)
        for m in members:
            other = self.ranks.get(m)
            if other is None:
                entry["not_captured"].append(m)
                continue
            gid = self._find_group(other, name)
            issued = other.issued.get((gid, False), 0) if gid is not None else 0
            if issued <= op.seq:
                entry["never_arrived"].append(m)

    def _p2p_arrivals(self, st: _RankState, op: _Op, entry: dict) -> None:
        peer = st.global_rank(op.gid, op.peer)
        other = self.ranks.get(peer)
        if other is None:
            entry["not_captured"].append(peer)
            return
        gid = self._find_group(other, st.group_key(op.gid))
        members = other.members(gid) if gid is not None else None
        my_local = members.index(st.rank) if members and st.rank in members else st.rank
        opposite = schema.OP_INDEX["recv" if op.op == schema.OP_INDEX["send"] else "send"]
        count = other.p2p_count.get((gid, my_local, opposite), 0) if gid is not None else 0
        if count <= op.p2p_ordinal:
            entry["never_arrived"].append(peer)
