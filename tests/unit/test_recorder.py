"""The in-worker recorder: nothing appended concurrently with flushes is lost or duplicated."""
from __future__ import annotations

import threading

from commprof.capture.recorder import Recorder
from commprof.format import schema
from commprof.format.reader import capture_paths, read_capture


def _coll(i: int) -> tuple:
    return (i, schema.OP_INDEX["all_reduce"], 0, i, 1, 0, -1, 1, 4, 1, 4, 7, i, i + 1)


def test_concurrent_appends_and_flushes_lose_nothing(tmp_path):
    rec = Recorder(str(tmp_path), lambda: ("rank00000.a0.p1.cpf", {"rank": 0}), flush_interval=0.001)
    rec.wants_file = True
    done_list = rec.done  # what a completion callback captures when its Work is tracked
    per_thread, threads = 20_000, 4

    def producer(k: int) -> None:
        for j in range(per_thread):
            i = k * per_thread + j
            rec.coll.append(_coll(i))
            done_list.append((i, i + 2, schema.DONE_FUTURE))

    rec.start()
    workers = [threading.Thread(target=producer, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    rec.close("exit")
    (path,) = capture_paths(tmp_path)
    cap = read_capture(path)
    assert cap.damage is None and cap.complete
    ids = sorted(cap.arrays["coll"]["id"].tolist())
    assert ids == list(range(per_thread * threads))
    assert sorted(cap.arrays["done"]["id"].tolist()) == ids


def test_degraded_failures_are_recorded_once_per_change(tmp_path):
    rec = Recorder(str(tmp_path), lambda: ("rank00000.a0.p1.cpf", {"rank": 0}))
    rec.wants_file = True
    for _ in range(3):
        rec.degrade("collective", ValueError("boom"))
    rec.flush()
    rec.flush()  # unchanged count: not written again
    rec.degrade("collective", ValueError("boom"))
    rec.close("exit")
    (path,) = capture_paths(tmp_path)
    events = [e for e in read_capture(path).events if e["type"] == "degraded"]
    assert [e["count"] for e in events] == [3, 4]
    assert events[0]["error"] == "ValueError: boom"


def test_nothing_is_written_for_a_process_without_events(tmp_path):
    rec = Recorder(str(tmp_path), lambda: ("rank00000.a0.p1.cpf", {"rank": 0}))
    rec.close("exit")
    assert capture_paths(tmp_path) == []
