"""Link KPIs: what the fabric carried during the run, and how the job's collectives compare
with what it can carry (docs/kpis.md, "Links").

Inputs: the node sampler files (``RUN/nodes/*.cps``), per host the union of the intervals during
which any local rank had a collective in flight (the *communication windows*), per host the
collectives' bus bytes, the job's calls bucketed by size, and an optional probe result.

* **throughput** of a counter series: ``Δbytes / Δt`` between consecutive samples (bytes/s);
  *mean* = (last − first) / (t_last − t_first); *peak* = the largest one-interval rate;
  *during communication* = bytes counted in the intervals weighted by their overlap with the
  communication windows, divided by the overlap time.
* **wire / logical**: bytes an interface transmitted over the run ÷ Σ over this host's ranks of
  the collectives' bus bytes (S × nccl-tests factor, i.e. what a ring algorithm sends per rank).
  ≈ 1 when all of the collectives' traffic crossed that interface with negligible overhead.
* **efficiency**: the job's busbw for an (op, group size, message-size bucket) — Σ bus bytes /
  Σ call durations (issue → completion) — divided by the probe's busbw for the same op at the
  same size (log-log interpolation of the probe's sweep).

Pure functions of numpy/pandas data; no printing.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from commprof.analysis.measures import intervals
from commprof.analysis.host.load_nodes import NodeSamples, load_node_samples, read_node_samples

__all__ = ["NodeSamples", "load_node_samples", "read_node_samples", "summarize_links"]


# -- counters ----------------------------------------------------------------------------------

def counter_rates(t: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(interval starts, interval ends, rate per second) of a cumulative counter; intervals where
    the counter went backwards (a reset) are dropped."""
    order = np.argsort(t, kind="stable")
    t, v = t[order].astype("float64"), v[order].astype("float64")
    dt, dv = np.diff(t), np.diff(v)
    ok = (dt > 0) & (dv >= 0)
    return t[:-1][ok], t[1:][ok], dv[ok] / dt[ok] * 1e9


def throughput(t: np.ndarray, v: np.ndarray, windows: tuple[np.ndarray, np.ndarray] | None) -> dict:
    """Total, mean, peak and during-communication rate of one counter (see the module doc)."""
    a, b, rate = counter_rates(t, v)
    out = {"bytes": float(v.max() - v.min()) if len(v) else 0.0,
           "mean_Bps": None, "peak_Bps": None, "comm_Bps": None}
    if not len(rate):
        return out
    span = b[-1] - a[0]
    out["bytes"] = float(np.sum(rate * (b - a) / 1e9))
    out["mean_Bps"] = out["bytes"] / span * 1e9 if span > 0 else None
    out["peak_Bps"] = float(rate.max())
    if windows is not None and len(windows[0]):
        overlap = intervals.covered(windows[0], windows[1], a, b)
        if overlap.sum() > 0:
            out["comm_Bps"] = float(np.sum(rate * overlap) / overlap.sum())
    return out


def link_rows(node: NodeSamples, windows, bus_bytes: float | None) -> list[dict]:
    """One row per (source, device) byte counter pair: tx/rx throughput and wire/logical."""
    rows = []
    s = node.series
    counters = s[(s["kind"] == "counter") & s["metric"].isin(["tx_bytes", "rx_bytes"])]
    for (source, device), grp in counters.groupby(["source", "device"], sort=True):
        row = {"host": node.host, "source": source, "device": device,
               "loopback": bool((grp["note"] == "loopback").any())}
        for metric in ("tx_bytes", "rx_bytes"):
            ids = grp.loc[grp["metric"] == metric, "id"]
            d = metric[:2]
            if not len(ids):
                continue
            smp = node.samples[node.samples["series"] == int(ids.iloc[0])]
            tp = throughput(smp["t"].to_numpy(), smp["value"].to_numpy(), windows)
            row.update({f"{d}_bytes": tp["bytes"], f"{d}_mean_Bps": tp["mean_Bps"],
                        f"{d}_peak_Bps": tp["peak_Bps"], f"{d}_comm_Bps": tp["comm_Bps"]})
        tx = row.get("tx_bytes")
        row["logical_bus_bytes"] = bus_bytes
        row["wire_to_logical"] = tx / bus_bytes if bus_bytes and tx is not None else None
        rows.append(row)
    return rows


def gauge_rows(node: NodeSamples) -> list[dict]:
    """Per (source, device, metric) gauge (PCIe rates, GPU utilisation): mean and peak."""
    rows = []
    s = node.series
    for _, ser in s[(s["kind"] == "gauge") & (s["source"] != "tcp")].iterrows():
        v = node.samples.loc[node.samples["series"] == int(ser["id"]), "value"].to_numpy()
        if len(v):
            rows.append({"host": node.host, "source": ser["source"], "device": ser["device"],
                         "metric": ser["metric"], "unit": ser["unit"], "mean": float(v.mean()),
                         "peak": float(v.max())})
    return rows


def tcp_rows(node: NodeSamples) -> list[dict]:
    """Per peer address: smoothed RTT (median, p90, max), RTT variance, new retransmits."""
    rows = []
    s = node.series[node.series["source"] == "tcp"]
    for peer, grp in s.groupby("device", sort=True):
        def values(metric):
            ids = grp.loc[grp["metric"] == metric, "id"]
            if not len(ids):
                return np.zeros(0)
            return node.samples.loc[node.samples["series"] == int(ids.iloc[0]), "value"].to_numpy()
        srtt, var, retr, conns, minrtt = (values(m) for m in ("srtt_ms", "rttvar_ms", "retrans",
                                                              "connections", "minrtt_ms"))
        if not len(srtt):
            continue
        rows.append({"host": node.host, "peer": peer, "samples": int(len(srtt)),
                     "srtt_ms_median": float(np.median(srtt)),
                     "srtt_ms_p90": float(np.percentile(srtt, 90)), "srtt_ms_max": float(srtt.max()),
                     "rttvar_ms_median": float(np.median(var)) if len(var) else None,
                     "minrtt_ms": float(minrtt.min()) if len(minrtt) else None,
                     "retrans": float(retr.max() - retr.min()) if len(retr) else None,
                     "connections_max": int(conns.max()) if len(conns) else None})
    return rows


def sampler_row(node: NodeSamples) -> dict:
    """The sampler's own cost on one node: CPU time as a share of one core."""
    cost = node.cost or {}
    wall, cpu = cost.get("wall_ns"), cost.get("cpu_ns")
    return {"host": node.host, "hz": node.header.get("hz"), "ticks": cost.get("ticks"),
            "cpu_fraction_of_core": cpu / wall if wall and cpu is not None else None,
            "sources": node.header.get("sources", {}), "degraded": node.degraded}


# -- efficiency against a probe ---------------------------------------------------------------

BUCKET_COLUMNS = ["op", "group_size", "bucket", "count", "bytes", "bus_bytes", "time_ns"]


def size_buckets(coll: pd.DataFrame) -> pd.DataFrame:
    """One rank's calls per (op, group size, power-of-two size bucket): count, Σ S, Σ bus bytes,
    Σ duration (ns).  ``coll`` has :func:`commprof.analysis.measures.collectives.add_sizes`' columns.
    numpy only (it runs once per rank)."""
    size = coll["size_bytes"].to_numpy("float64")
    dur = coll["duration_ns"].to_numpy("float64")
    ok = (size > 0) & np.isfinite(dur) & (dur > 0)
    if not ok.any():
        return pd.DataFrame(columns=BUCKET_COLUMNS)
    from commprof.analysis.measures.collectives import op_codes
    from commprof.format import schema
    codes = op_codes(coll["op"])[ok]
    uniq, op_code = np.unique(codes, return_inverse=True)
    ops = np.array([schema.OPS[c] for c in uniq.tolist()], dtype=object)
    n = coll["group_size"].to_numpy()[ok].astype(np.int64)
    bucket = np.floor(np.log2(size[ok])).astype(np.int64)
    key = (op_code.astype(np.int64) * (1 << 32) + n) * 128 + bucket
    keys, inv = np.unique(key, return_inverse=True)
    m = len(keys)

    def total(values):
        return np.bincount(inv, weights=values, minlength=m)

    return pd.DataFrame({"op": ops[keys // 128 // (1 << 32)], "group_size": (keys // 128) % (1 << 32),
                         "bucket": keys % 128, "count": np.bincount(inv, minlength=m),
                         "bytes": total(size[ok]),
                         "bus_bytes": total(coll["bus_bytes"].to_numpy("float64")[ok]),
                         "time_ns": total(dur[ok])})


_PROBE_OP = {"all_reduce": "all_reduce", "all_gather": "all_gather",
             "reduce_scatter": "reduce_scatter", "broadcast": "broadcast",
             "all_to_all": "all_to_all", "send": "sendrecv", "recv": "sendrecv"}


def probe_busbw(probe: dict, op: str, size: float) -> float | None:
    """The probe's busbw (GB/s) for ``op`` at ``size`` bytes, log-log interpolated; None outside
    the swept range or for an op the probe did not run."""
    name = _PROBE_OP.get(op)
    pts = sorted((r["size_bytes"], r["busbw_gbps"]) for r in probe.get("results", [])
                 if r.get("op") == name and r.get("busbw_gbps"))
    if not pts or size < pts[0][0] or size > pts[-1][0]:
        return None
    xs = np.log([p[0] for p in pts])
    ys = np.log([p[1] for p in pts])
    return float(math.exp(np.interp(math.log(size), xs, ys)))


def efficiency_rows(buckets: pd.DataFrame, probe: dict | None) -> list[dict]:
    """Job busbw vs probed busbw per (op, group size, size bucket), largest traffic first."""
    if probe is None or not len(buckets):
        return []
    n_probe = probe.get("world_size")
    rows = []
    for _, r in buckets.sort_values("bus_bytes", ascending=False).iterrows():
        size = r["bytes"] / r["count"]
        ref = probe_busbw(probe, r["op"], size)
        if ref is None:
            continue
        job = r["bus_bytes"] / r["time_ns"]  # bytes/ns = GB/s
        rows.append({"op": r["op"], "group_size": int(r["group_size"]), "size_bytes": float(size),
                     "count": int(r["count"]), "job_busbw_gbps": float(job),
                     "probe_busbw_gbps": ref, "efficiency": float(job / ref) if ref else None,
                     "same_group_size": n_probe is None or int(n_probe) == int(r["group_size"])})
    return rows[:12]


TIMELINE_POINTS = 600  # per series, at most (the HTML report's link chart)
TIMELINE_WINDOWS = 300  # communication windows per host, at most


def timeline(node: NodeSamples, windows, rows: list[dict]) -> list[dict]:
    """Throughput over time of the interfaces that carried traffic, and the host's communication
    windows, on one time axis (seconds from the sampler's first sample); downsampled by averaging."""
    s = node.series
    if not len(node.samples):
        return []
    t0 = float(node.samples["t"].min())
    busy = {(r["source"], r["device"]) for r in rows if (r.get("tx_bytes") or 0) + (r.get("rx_bytes") or 0) > 0}
    out = []
    for source, device in sorted(busy):
        entry = {"host": node.host, "source": source, "device": device}
        for metric in ("tx_bytes", "rx_bytes"):
            ids = s.loc[(s["source"] == source) & (s["device"] == device) & (s["metric"] == metric), "id"]
            if not len(ids):
                continue
            smp = node.samples[node.samples["series"] == int(ids.iloc[0])]
            a, b, rate = counter_rates(smp["t"].to_numpy(), smp["value"].to_numpy())
            mid = ((a + b) / 2 - t0) / 1e9
            k = max(1, int(np.ceil(len(rate) / TIMELINE_POINTS)))
            n = len(rate) // k * k
            if n:
                entry["t_s"] = mid[:n].reshape(-1, k).mean(axis=1).round(4).tolist()
                entry[f"{metric[:2]}_Bps"] = rate[:n].reshape(-1, k).mean(axis=1).round(1).tolist()
        out.append(entry)
    if out and windows is not None and len(windows[0]):
        ws, we = (np.asarray(windows[0]) - t0) / 1e9, (np.asarray(windows[1]) - t0) / 1e9
        if len(ws) > TIMELINE_WINDOWS:  # merge gaps shorter than 1/TIMELINE_WINDOWS of the span
            gap = (we.max() - ws.min()) / TIMELINE_WINDOWS
            ws, we = intervals.union(ws, we + gap)
            we = we - gap
        for entry in out:
            entry["comm_windows_s"] = [[round(float(a), 4), round(float(b), 4)] for a, b in zip(ws, we)]
    return out


def summarize_links(nodes: list[NodeSamples], notes: list[str], windows: dict, bus_bytes: dict,
                    buckets: pd.DataFrame, probe: dict | None) -> dict | None:
    """The document's ``links`` section, or None when the run has no sampler file and no probe.

    ``nodes``, ``notes``: the run's sampler files and notes about unreadable ones
    (:func:`commprof.analysis.host.load_nodes.load_node_samples`); ``windows``: host -> (starts, ends)
    union of in-flight intervals; ``bus_bytes``: host -> Σ bus bytes of its ranks' collectives.
    """
    notes = list(notes)
    if not nodes and probe is None and not notes:
        return None
    out = {"sampler": [], "interfaces": [], "gauges": [], "tcp": [], "efficiency": [],
           "probe": _probe_summary(probe), "timeline": [], "notes": notes,
           "probe_curve": [{k: r.get(k) for k in ("op", "size_bytes", "busbw_gbps")}
                           for r in (probe or {}).get("results", [])]}
    for node in nodes:
        out["sampler"].append(sampler_row(node))
        rows = link_rows(node, windows.get(node.host), bus_bytes.get(node.host))
        out["interfaces"] += rows
        out["timeline"] += timeline(node, windows.get(node.host), rows)
        out["gauges"] += gauge_rows(node)
        out["tcp"] += tcp_rows(node)
        srcs = node.header.get("sources", {})
        if srcs.get("infiniband", {}).get("available"):
            notes.append(f"{node.host}: no RTT is sampled on InfiniBand/RoCE (TCP sockets only)")
    out["efficiency"] = efficiency_rows(buckets, probe)
    return out


def _probe_summary(probe: dict | None) -> dict | None:
    if probe is None:
        return None
    return {k: probe.get(k) for k in ("backend", "world_size", "nodes", "latency_us",
                                       "started_wall_ns", "source")}
