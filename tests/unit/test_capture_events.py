"""One pass over a capture's JSON events (analysis/host/capture_events.py): each kind kept in file
order, or its last frame where only the last counts; the scanners read their kind only."""
from commprof.analysis.gpu import gpu_activity
from commprof.analysis.host import training
from commprof.analysis.host.capture_events import sort_events


def _events():
    return [
        {"type": "run", "run_id": "x"},
        {"type": "losses", "t": [1], "step": [0], "value": [2.0], "scale": [None], "lost": 1},
        {"type": "event", "event": "fix", "fix": "bf16-compress", "status": "applied"},
        {"type": "self_cost", "calls": 1},
        {"type": "event", "event": "gpu_window_skipped", "window": 0, "why": "profiler"},
        {"type": "gpu_window", "window": 1, "t_open": 10, "t_close": 20},
        {"type": "event", "event": "capture_path", "path": "python"},
        {"type": "event", "event": "fix", "fix": None},  # names no fix: not kept
        {"type": "event", "event": "gpu_window_yielded", "window": 1},
        {"type": "metric", "name": "acc", "value": 0.5},
        {"type": "event", "event": "gpu_windows_off", "why": "first"},
        {"type": "event", "event": "capture_path", "path": "native"},
        {"type": "event", "event": "gpu_windows_off", "why": "last"},
        {"type": "self_cost", "calls": 7},
        {"type": "fr", "seen": 3},
        {"type": "degraded", "where": "wait", "count": 1, "error": "E"},
        {"type": "gpu_names", "first": 0, "names": ["k"]},
        {"type": "stopped", "errno": "ENOSPC"},
        {"type": "event", "event": "fix", "fix": "bf16-compress", "status": "withdrawn"},
    ]


def test_each_kind_in_file_order_and_the_last_where_the_last_counts():
    events = _events()
    ev = sort_events(events)
    by_type = {t: [e for e in events if e["type"] == t] for t in ("losses", "metric", "fr", "degraded",
                                                                   "gpu_names")}
    assert ev.losses == by_type["losses"] and ev.metrics == by_type["metric"]
    assert ev.fr == by_type["fr"] and ev.degraded == by_type["degraded"]
    assert ev.gpu_names == by_type["gpu_names"]
    assert [e["status"] for e in ev.fixes] == ["applied", "withdrawn"]
    assert [e.get("window") for e in ev.gpu_windows] == [0, 1]  # skipped, then recorded: file order
    assert ev.gpu_windows_yielded == 1 and ev.gpu_windows_off["why"] == "last"
    assert ev.self_cost["calls"] == 7 and ev.capture_path["path"] == "native"
    assert ev.stopped["errno"] == "ENOSPC"


def test_an_empty_capture_sorts_to_nothing():
    ev = sort_events([])
    assert not (ev.losses or ev.metrics or ev.fixes or ev.fr or ev.degraded or ev.gpu_windows)
    assert ev.self_cost is ev.capture_path is ev.stopped is ev.gpu_windows_off is None
    assert ev.gpu_windows_yielded == 0


def test_the_scanners_read_their_kind():
    ev = sort_events(_events())
    assert [e["status"] for e in training.fix_events(ev.fixes)] == ["withdrawn"]  # the last word
    assert training.capture_path(ev.capture_path) == "native"
    assert training.capture_path(None) is None
    stats = gpu_activity.window_stats(ev.gpu_windows, ev.gpu_windows_yielded, ev.gpu_windows_off)
    assert stats == {"gpu_windows_recorded": 1, "gpu_windows_skipped": 1, "gpu_windows_yielded": 1,
                     "gpu_windows_off": "last"}
    assert list(gpu_activity.windows_frame(ev.gpu_windows)["status"]) == ["skipped", "recorded"]
    losses, lost = training.loss_frame(ev.losses)
    assert lost == 1 and list(losses["value"]) == [2.0]
