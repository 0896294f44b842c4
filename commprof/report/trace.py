"""Chrome trace-event export (``commprof report RUN -o run.trace.json``; opens in Perfetto and
chrome://tracing).

Layout: one process per rank ("rank R (host)"), sorted by rank; in it a ``steps`` track, one track
per thread that issued or waited on communication (host-side calls and waits as slices, with
bytes, group size, sequence number and the call's busbw in ``args``), backward passes as slices
on their thread, and each collective's in-flight time (issue → completion) as an async slice.
One more process per node carries the node sampler's throughput as counter tracks.

Time: microseconds since the earliest capture start, on rank 0's clock: every rank is moved onto it
by :class:`commprof.analysis.cross.clocks.Timeline` (barrier probes at init and teardown, else one host's
shared monotonic clock, else wall-clock anchors).  Unlike the report document, the trace is built
from the run directory itself (every record), loaded by the analysis
(:func:`commprof.analysis.host.load.open_run`); this module only lays the records out as trace events.
"""
from __future__ import annotations

import json

import numpy as np

from commprof.format import schema

STEPS_TID = 0
INFLIGHT_TID = 1
_WAIT_NAMES = {schema.WAIT_WORK: "wait", schema.WAIT_TENSOR: "wait_tensor",
               schema.WAIT_SYNC_API: "wait (blocking call)"}


class TraceExporter:
    """An :class:`~commprof.report.renderers.Exporter`: the Chrome trace of a run directory."""

    name = "trace"
    suffixes = (".trace.json",)

    def render_run(self, run_dir) -> str:
        from commprof.analysis.host.load import open_run
        return json.dumps({"traceEvents": trace_events(open_run(run_dir)),
                           "displayTimeUnit": "ms",
                           "otherData": {"generator": "commprof", "clock": "us since first capture start"}},
                          separators=(",", ":")) + "\n"


def trace_events(source) -> list[dict]:
    """Every event of the run, metadata first, then per track in time order."""
    from commprof.analysis.cross.clocks import Timeline
    from commprof.analysis.measures.collectives import add_sizes
    from commprof.analysis.host.steps import step_windows
    ranks = list(source.iter_ranks())
    if not ranks:
        return []
    timeline = Timeline.of_ranks(ranks)
    meta, events = [], []
    for rd in ranks:
        p = rd.process
        pid = int(rd.rank) + 1_000_000 * int(rd.key["attempt"])
        to_axis = timeline.mapper(p)

        def us(t, to_axis=to_axis):
            return to_axis(np.asarray(t, dtype="float64")) / 1e3

        label = f"rank {rd.rank} ({p.get('host')})" + (f" attempt {rd.key['attempt']}" if rd.key["attempt"] else "")
        meta += [_meta(pid, 0, "process_name", {"name": label}),
                 _meta(pid, 0, "process_sort_index", {"sort_index": pid}),
                 _meta(pid, STEPS_TID, "thread_name", {"name": "steps"}),
                 _meta(pid, INFLIGHT_TID, "thread_name", {"name": "in flight (issue → completion)"})]
        tids: dict[int, int] = {}

        def tid(thread: int) -> int:
            if thread not in tids:
                tids[thread] = len(tids) + 2
                meta.append(_meta(pid, tids[thread], "thread_name", {"name": f"thread {thread:#x}"}))
            return tids[thread]

        steps = step_windows(rd.marks, rd.spans)
        for row in steps.itertuples():
            a, b = us([row.t_start, row.t_end])
            events.append(_slice(pid, STEPS_TID, f"step {row.step}", a, b, "step",
                                 {"source": row.source}))
        c = add_sizes(rd.collectives) if len(rd.collectives) else rd.collectives
        if len(c):
            ti, tr, te = us(c["t_issue"]), us(c["t_return"]), us(c["t_end"])
            for i, row in enumerate(c.itertuples()):
                dur_ns = row.t_end - row.t_issue if row.t_end == row.t_end else None
                args = {"bytes": int(row.size_bytes), "group_size": int(row.group_size),
                        "seq": int(row.seq), "dtype": str(row.dtype),
                        "busbw_gbps": round(row.bus_bytes / dur_ns, 6) if dur_ns else None}
                name = str(row.op)
                events.append(_slice(pid, tid(int(row.thread)), name, ti[i], tr[i], "collective", args))
                if np.isfinite(te[i]):
                    ident = f"{pid}:{int(row.id)}"
                    events.append({"ph": "b", "cat": "inflight", "name": name, "id": ident, "pid": pid,
                                   "tid": INFLIGHT_TID, "ts": float(ti[i]), "args": args})
                    events.append({"ph": "e", "cat": "inflight", "name": name, "id": ident, "pid": pid,
                                   "tid": INFLIGHT_TID, "ts": float(max(te[i], ti[i]))})
        w = rd.waits
        if len(w):
            a, b = us(w["t_start"]), us(w["t_end"])
            for i, row in enumerate(w.itertuples()):
                events.append(_slice(pid, tid(int(row.thread)), _WAIT_NAMES.get(int(row.source), "wait"),
                                     a[i], b[i], "wait", {}))
        s = rd.spans
        if len(s):
            a, b = us(s["t_start"]), us(s["t_end"])
            for i, row in enumerate(s.itertuples()):
                events.append(_slice(pid, tid(int(row.thread)), "backward", a[i], b[i], "backward", {}))
    events += _counters(getattr(source, "dirs", None) or [source.path], timeline, meta)
    return meta + sorted(events, key=lambda e: (e["pid"], e["tid"], e["ts"], -e.get("dur", 0)))


def _counters(run_dir, timeline, meta: list) -> list[dict]:
    from commprof.analysis.host.links import counter_rates, load_node_samples
    nodes, _ = load_node_samples(run_dir)
    out = []
    for n, node in enumerate(nodes):
        pid = 10_000_000 + n
        meta += [_meta(pid, 0, "process_name", {"name": f"node {node.host} links"}),
                 _meta(pid, 0, "process_sort_index", {"sort_index": pid})]
        shift = timeline.shift_ns(node.header.get("clock") or {})
        s = node.series
        for (source, device), grp in s[s["metric"].isin(["tx_bytes", "rx_bytes"])].groupby(["source", "device"]):
            for metric in ("tx_bytes", "rx_bytes"):
                ids = grp.loc[grp["metric"] == metric, "id"]
                if not len(ids):
                    continue
                smp = node.samples[node.samples["series"] == int(ids.iloc[0])]
                a, _, rate = counter_rates(smp["t"].to_numpy(), smp["value"].to_numpy())
                if not len(rate) or not rate.any():
                    continue
                name = f"{source}/{device} {metric[:2]} (B/s)"
                for t, r in zip((a + shift) / 1e3, rate):
                    out.append({"ph": "C", "name": name, "pid": pid, "tid": 0, "ts": float(t),
                                "args": {"B/s": round(float(r), 1)}})
    return out


def _meta(pid: int, tid: int, name: str, args: dict) -> dict:
    return {"ph": "M", "name": name, "pid": pid, "tid": tid, "ts": 0, "args": args}


def _slice(pid, tid, name, a, b, cat, args) -> dict:
    a, b = float(a), float(b)
    return {"ph": "X", "name": name, "cat": cat, "pid": pid, "tid": tid, "ts": a,
            "dur": max(b - a, 0.0), "args": args}


def merge_profiler_traces(paths) -> str:
    """PyTorch-profiler traces given to ``commprof report -o x.trace.json``: one Chrome trace with
    every rank's events, each rank's processes renamed ``rank R: …`` (they already are traces;
    merged, Perfetto shows all ranks on one timeline)."""
    from commprof.format import kineto
    traces, _ = kineto.read_traces(paths)
    events = []
    for t in traces:
        for e in kineto.raw_events(t.path):
            e = dict(e)
            if "pid" in e:
                e["pid"] = f"rank {t.rank}: {e['pid']}"
            events.append(e)
    return json.dumps({"traceEvents": events, "displayTimeUnit": "ns"}) + "\n"
