"""Hang diagnosis from records (HangTracker) and tailing a growing capture file (CaptureTail)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from commprof.analysis.cross.hang import HangTracker
from commprof.format import reader, schema
from commprof.analysis.cross.hang_text import hang_lines
from synthetic import Coll, periodic_rank, write_capture

S = 1_000_000_000  # ns per second
SEND, RECV, ALL_REDUCE = (schema.OP_INDEX[o] for o in ("send", "recv", "all_reduce"))


def group(gid=0, name="0", ranks=(0, 1, 2)):
    return {"type": "group", "id": gid, "name": name, "desc": "default_pg", "size": len(ranks),
            "ranks": list(ranks)}


def coll(rows):
    """COLL records from (id, op, gid, seq, peer, bytes, t_issue[, flags]) tuples."""
    arr = np.zeros(len(rows), dtype=reader.DTYPES[schema.KIND_COLL])
    for i, r in enumerate(rows):
        rid, op, gid, seq, peer, nbytes, t = r[:7]
        arr[i] = (rid, op, gid, seq, 1, r[7] if len(r) > 7 else 0, peer, nbytes // 4, nbytes,
                  nbytes // 4, nbytes, 1, t, t)
    return arr


def done(ids, t=0):
    arr = np.zeros(len(ids), dtype=reader.DTYPES[schema.KIND_DONE])
    for i, rid in enumerate(ids):
        arr[i] = (rid, t, schema.DONE_FUTURE)
    return arr


def tracker_with(ranks: dict[int, tuple[list, list]], groups=None) -> HangTracker:
    """ranks: rank -> (COLL tuples, completed ids)."""
    tr = HangTracker()
    for rank, (rows, completed) in ranks.items():
        tr.add_rank(rank, {"rank": rank, "host": "h", "pid": 100 + rank})
        tr.feed(rank, {"coll": coll(rows), "done": done(completed)}, groups or [group()])
    return tr


def three_ranks_rank2_late():
    """Ranks 0 and 1 issued all_reduce #3 (1 MiB) at t=1 s; rank 2 stopped after #2."""
    mib = 1 << 20
    def rows(n):
        return [(i, ALL_REDUCE, 0, i, -1, mib, i * S // 10) for i in range(n)]
    return tracker_with({0: (rows(3) + [(3, ALL_REDUCE, 0, 3, -1, mib, 1 * S)], [0, 1, 2]),
                         1: (rows(3) + [(3, ALL_REDUCE, 0, 3, -1, mib, 1 * S)], [0, 1, 2]),
                         2: (rows(3), [0, 1, 2])})


def test_a_rank_that_never_arrives_is_named():
    diag = three_ranks_rank2_late().diagnose(now_ns=5 * S, timeout_s=3)
    (blocked,) = diag["blocked"]
    assert blocked["op"]["op"] == "all_reduce" and blocked["op"]["seq"] == 3
    assert blocked["op"]["bytes"] == 1 << 20 and blocked["op"]["group"] == "0"
    assert blocked["waiting_ranks"] == [0, 1] and blocked["never_arrived"] == [2]
    assert diag["oldest_pending_s"] == pytest.approx(4.0)
    by_rank = {r["rank"]: r for r in diag["ranks"]}
    assert by_rank[2]["last_completed"]["seq"] == 2 and by_rank[2]["pending"] == []
    assert by_rank[0]["pending"][0]["seq"] == 3 and by_rank[0]["issued"] == {"0": 4}
    assert json.loads(json.dumps(diag)) == diag  # JSON-ready
    text = "\n".join(hang_lines(diag))
    assert "all_reduce #3 on group 0" in text and "never arrived: ranks 2" in text


def test_nothing_is_reported_before_the_timeout():
    tr = three_ranks_rank2_late()
    assert tr.diagnose(now_ns=3 * S, timeout_s=3) is None  # pending exactly 2 s
    assert tr.diagnose(now_ns=4 * S + 1, timeout_s=3) is not None


def test_completion_arriving_in_a_later_poll_clears_the_hang():
    tr = three_ranks_rank2_late()
    tr.feed(2, {"coll": coll([(3, ALL_REDUCE, 0, 3, -1, 1 << 20, 4 * S)]), "done": done([3])}, [])
    for r in (0, 1):
        tr.feed(r, {"done": done([3])}, [])
    assert tr.diagnose(now_ns=9 * S, timeout_s=3) is None


def test_completion_seen_before_its_record_is_matched():
    # A fast future fires before the issuing call returns: DONE can be flushed before COLL.
    tr = HangTracker()
    tr.add_rank(0, {"rank": 0})
    tr.feed(0, {"done": done([0])}, [group(ranks=(0,))])
    tr.feed(0, {"coll": coll([(0, ALL_REDUCE, 0, 0, -1, 8, 0)])}, [])
    assert tr.diagnose(now_ns=100 * S, timeout_s=1) is None


def test_a_member_without_a_capture_is_listed_as_not_captured():
    tr = tracker_with({0: ([(0, ALL_REDUCE, 0, 0, -1, 8, 0)], [])})
    (blocked,) = tr.diagnose(now_ns=10 * S, timeout_s=1)["blocked"]
    assert blocked["waiting_ranks"] == [0] and blocked["not_captured"] == [1, 2]


def test_p2p_pairs_by_ordinal_between_two_ranks():
    g = [group(ranks=(0, 1))]
    # Rank 0 sent twice to rank 1; rank 1 received once: the second send waits on rank 1.
    tr = tracker_with({0: ([(0, SEND, 0, 0, 1, 64, 0), (1, SEND, 0, 1, 1, 64, S)], [0]),
                       1: ([(0, RECV, 0, 0, 0, 64, 0)], [0])}, groups=g)
    (blocked,) = tr.diagnose(now_ns=10 * S, timeout_s=2)["blocked"]
    assert blocked["op"]["op"] == "send" and blocked["op"]["peer"] == 1
    assert blocked["op"]["p2p_ordinal"] == 1
    assert blocked["waiting_ranks"] == [0] and blocked["never_arrived"] == [1]
    # Once rank 1 posts its second receive, both wait on the same transfer: nobody is missing.
    tr.feed(1, {"coll": coll([(1, RECV, 0, 1, 0, 64, 2 * S)])}, [])
    (blocked,) = tr.diagnose(now_ns=10 * S, timeout_s=2)["blocked"]
    assert blocked["waiting_ranks"] == [0, 1] and blocked["never_arrived"] == []


def test_unwaited_future_less_send_is_not_a_hang_once_a_later_one_completes():
    g = [group(ranks=(0, 1))]
    tr = tracker_with({0: ([(0, SEND, 0, 0, 1, 64, 0), (1, SEND, 0, 1, 1, 64, S)], [1])},
                      groups=g)
    assert tr.diagnose(now_ns=100 * S, timeout_s=2) is None


def test_failed_calls_are_not_pending():
    tr = tracker_with({0: ([(0, ALL_REDUCE, 0, 0, -1, 8, 0, schema.FLAG_FAILED)], [])},
                      groups=[group(ranks=(0,))])
    assert tr.diagnose(now_ns=100 * S, timeout_s=1) is None


def test_feeding_in_pieces_equals_feeding_at_once():
    rng = np.random.default_rng(0)
    n = 200
    rows = [(i, ALL_REDUCE, 0, i, -1, 8 * (i + 1), i * S // 100) for i in range(n)]
    completed = [i for i in range(n) if i < 150 or rng.random() < 0.3]
    whole = tracker_with({0: (rows, completed)}, groups=[group(ranks=(0,))])
    pieces = HangTracker()
    pieces.add_rank(0, {"rank": 0, "host": "h", "pid": 100})
    cuts = sorted(rng.choice(np.arange(1, n), size=9, replace=False).tolist())
    bounds = [0] + cuts + [n]
    for a, b in zip(bounds, bounds[1:]):
        ids = [i for i in completed if a <= i < b]
        pieces.feed(0, {"coll": coll(rows[a:b]), "done": done(ids)}, [group(ranks=(0,))] if a == 0 else [])
    assert whole.diagnose(now_ns=10 * S, timeout_s=1) == pieces.diagnose(now_ns=10 * S, timeout_s=1)


def test_capture_tail_follows_a_growing_file_byte_by_byte(tmp_path):
    spec = periodic_rank(0, steps=4)
    spec.collectives.append(Coll("send", peer=1, in_bytes=64, t_issue=500))
    full = write_capture(tmp_path / "full.cpf", spec)
    data = full.read_bytes()
    growing = tmp_path / "growing.cpf"
    growing.write_bytes(b"")
    tail = reader.CaptureTail(growing)
    got = {k: [] for k in reader.KIND_NAMES.values()}
    objects = []
    with open(growing, "ab") as fh:
        for i in range(0, len(data), 7):  # 7-byte writes: every frame is torn at some poll
            fh.write(data[i:i + 7])
            fh.flush()
            arrays, objs = tail.poll()
            for k, a in arrays.items():
                got[k].append(a)
            objects += objs
            assert tail.damage is None
    whole = reader.read_capture(full)
    assert tail.header == whole.header
    for k, arr in whole.arrays.items():
        assert np.array_equal(np.concatenate(got[k]) if got[k] else arr[:0], arr), k
    assert [o for o in objects if o.get("type") == "group"] == whole.groups
    assert [o for o in objects if o.get("type") == "trailer"] == [whole.trailer]


def test_capture_tail_stops_at_a_corrupt_frame(tmp_path):
    path = write_capture(tmp_path / "r.cpf", periodic_rank(0, steps=2))
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # inside the last frame's payload
    path.write_bytes(bytes(data))
    tail = reader.CaptureTail(path)
    tail.poll()
    assert "checksum mismatch" in tail.damage
    assert tail.poll() == ({}, [])


def test_capture_tail_of_a_file_that_is_not_a_capture(tmp_path):
    path = tmp_path / "x.cpf"
    path.write_bytes(b"NOTACAPTUREFILE-at-all")
    tail = reader.CaptureTail(path)
    tail.poll()
    assert "bad magic" in tail.damage


def test_a_rank_that_arrives_during_the_episode_stays_named():
    from commprof.launch.hangwatch import _keep_evidence
    op = {"op": "all_reduce", "group": "0", "seq": 2}
    before = {"blocked": [{"op": op, "waiting_ranks": [0], "never_arrived": [1], "not_captured": []}]}
    now = {"blocked": [{"op": dict(op), "waiting_ranks": [0, 1], "never_arrived": [],
                        "not_captured": []}]}
    _keep_evidence(before, now)
    assert now["blocked"][0]["arrived_late"] == [1] and now["blocked"][0]["never_arrived"] == []
    assert "arrived late: ranks 1" in "\n".join(hang_lines({"blocked": now["blocked"], "ranks": []}))
