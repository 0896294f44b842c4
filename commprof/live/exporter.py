"""Prometheus metrics of a running job: ``--prometheus [HOST:]PORT`` and ``--prometheus-textfile DIR``.

One :class:`Metrics` per ``commprof run`` (one per node) turns the aggregator's snapshots into
metric families (``prometheus_client``'s custom-collector API), served over HTTP at ``/metrics``
by ``prometheus_client``'s own server, bound to the host given only, and/or written for
node_exporter's textfile collector (write to a temporary file in DIR, fsync, rename: a reader
sees the old file or the new one, never half of one).  Names, units and the label bound:
docs/monitoring.md.  Counters never go down: each is the larger of what was exported before and
what the snapshot says.
"""
from __future__ import annotations

import os
import socket
import tempfile
import threading
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from commprof.errors import UsageError
from commprof.live.panel import bucket_name

STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                30.0, 60.0, 120.0)
RANK_LABELS = ("rank", "host", "job", "attempt")
NODE_LABELS = ("host", "job")
DEFAULT_HOST = "127.0.0.1"


def parse_listen(spec: str) -> tuple[str, int]:
    """``"9400"`` -> (127.0.0.1, 9400); ``"0.0.0.0:9400"``, ``"[::1]:9400"`` -> (host, port)."""
    text = spec.strip()
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = DEFAULT_HOST, text
    host = host.strip("[]") or DEFAULT_HOST
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--prometheus {spec}: PORT must be a number from 1 to 65535 "
                         "([HOST:]PORT, e.g. 9400 or 127.0.0.1:9400)")
    return host, int(port)


def textfile_path(directory: str, job: str) -> Path:
    """The ``.prom`` file in DIR, checked writable now (a clear error before the job starts)."""
    d = Path(directory)
    if not d.is_dir():
        raise UsageError(f"--prometheus-textfile {directory}: no such directory")
    try:  # a fresh, unpredictable name (O_EXCL): a link planted in DIR is never followed
        fd, probe = tempfile.mkstemp(dir=d, prefix=".commprof-write-test.")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(f"--prometheus-textfile {directory}: not writable ({exc.strerror or exc})") from exc
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in job)
    return d / f"commprof_{safe}_{socket.gethostname()}.prom"


TEXTFILE_MODE = 0o644  # node_exporter (often another user) reads it; metrics only, no command line


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename.

    The temporary file is made by :func:`tempfile.mkstemp` (``O_CREAT | O_EXCL``, an unpredictable
    name), so a symbolic link another user planted in a shared DIR is never followed; the rename
    replaces a link at ``path`` itself, never its target.  A failed write removes its temporary file.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # not *.prom
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), TEXTFILE_MODE)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:  # already gone: nothing left behind either way
            pass
        raise


class Metrics:
    """A custom collector: the latest snapshot as Prometheus metric families."""

    def __init__(self, job: str, host: str | None = None):
        self.job = job
        self.host = host or socket.gethostname()
        self.registry = CollectorRegistry(auto_describe=False)
        self._lock = threading.Lock()
        self._snap: dict | None = None
        self._running = 1
        self._hang = 0
        self._counters: dict[tuple, float] = {}  # (name, labels) -> last value exported
        self._hist: dict[tuple, dict] = {}  # rank labels -> {"last": step, "counts": [...], ...}
        self.registry.register(self)
        self.server = None

    # -- input --------------------------------------------------------------------------------
    def update(self, snap: dict, hang: bool = False, running: bool = True) -> None:
        """Take a new snapshot (observing each step's duration once)."""
        with self._lock:
            for r in snap["ranks"]:
                if not r["local"]:
                    continue
                h = self._hist.setdefault(self._rank_labels(r), {
                    "last": -1, "counts": [0] * len(STEP_BUCKETS), "sum": 0.0, "count": 0})
                for step, dur in r["step_durations"]:
                    if step <= h["last"]:
                        continue
                    h["last"] = step
                    h["sum"] += dur
                    h["count"] += 1
                    for i, le in enumerate(STEP_BUCKETS):
                        if dur <= le:
                            h["counts"][i] += 1
            self._snap = snap
            self._hang = int(hang)
            self._running = int(running)

    def _rank_labels(self, r: dict) -> tuple:
        return (str(r["rank"]), str(r["host"]), self.job, str(r["attempt"]))

    def _mono(self, name: str, labels: tuple, value: float) -> float:
        key = (name, labels)
        value = max(self._counters.get(key, 0.0), float(value))
        self._counters[key] = value
        return value

    # -- output -------------------------------------------------------------------------------
    def collect(self):
        """The metric families (called by prometheus_client at each scrape / text write)."""
        with self._lock:
            return list(self._families())

    def _families(self):
        snap = self._snap
        node = (self.host, self.job)
        running = GaugeMetricFamily("commprof_running", "1 while the job runs, 0 once it ended",
                                    labels=NODE_LABELS)
        running.add_metric(node, self._running)
        hang = GaugeMetricFamily("commprof_hang", "1 while the hang watch reports a stuck collective",
                                 labels=NODE_LABELS)
        hang.add_metric(node, self._hang)
        yield running
        yield hang
        if snap is None:
            return
        fams = {
            "bytes": CounterMetricFamily("commprof_collective_bytes", "Σ nccl-tests S of the calls "
                                         "issued (bytes)", labels=RANK_LABELS + ("op", "group")),
            "calls": CounterMetricFamily("commprof_collective_calls", "calls issued",
                                         labels=RANK_LABELS + ("op", "group")),
            "seconds": CounterMetricFamily("commprof_collective_seconds", "Σ over calls of issue → "
                                           "completion (s)", labels=RANK_LABELS + ("op",)),
            "comm": CounterMetricFamily("commprof_comm_seconds", "length of the union of the "
                                        "rank's communication intervals (s)",
                                        labels=RANK_LABELS + ("kind",)),
            "busbw": GaugeMetricFamily("commprof_busbw_bytes_per_second", "Σ bus bytes / Σ call "
                                       "time since the start (bytes/s)",
                                       labels=RANK_LABELS + ("op", "size_bucket")),
            "overhead": CounterMetricFamily("commprof_overhead_seconds", "commprof's own time in "
                                            "the rank (recording, dispatch estimate, GPU windows; s)",
                                            labels=RANK_LABELS),
            "frac": GaugeMetricFamily("commprof_comm_fraction", "communication share of step time "
                                      "over the last steps (time-weighted, 0-1)",
                                      labels=RANK_LABELS + ("kind",)),
            "bps": GaugeMetricFamily("commprof_bytes_per_step", "mean S per step over the last "
                                     "steps (bytes)", labels=RANK_LABELS),
            "steps": HistogramMetricFamily("commprof_step_seconds", "step durations (s)",
                                           labels=RANK_LABELS),
        }
        per_rank = {int(r["rank"]): r for r in snap["window"].get("per_rank", [])}
        for r in snap["ranks"]:
            if not r["local"]:
                continue
            lab = self._rank_labels(r)
            t = r["totals"]
            for (op, group), v in sorted(t.bytes.items()):
                fams["bytes"].add_metric(lab + (op, group), self._mono("b", lab + (op, group), v))
                fams["calls"].add_metric(lab + (op, group),
                                         self._mono("c", lab + (op, group), t.calls.get((op, group), 0)))
            for op, v in sorted(t.seconds.items()):
                fams["seconds"].add_metric(lab + (op,), self._mono("s", lab + (op,), v))
            for kind, v in (("in_flight", t.comm_ns), ("exposed", t.exposed_ns)):
                fams["comm"].add_metric(lab + (kind,), self._mono("u", lab + (kind,), v / 1e9))
            per_bucket: dict = {}
            per_op: dict = {}
            for (op, _n, bucket), (_c, _b, bus, ns) in t.buckets.items():
                for d, key in ((per_bucket, (op, bucket_name(bucket))), (per_op, (op, "all"))):
                    old = d.get(key, (0.0, 0.0))
                    d[key] = (old[0] + bus, old[1] + ns)
            for key, (bus, ns) in sorted(per_bucket.items()) + sorted(per_op.items()):
                if ns > 0:
                    fams["busbw"].add_metric(lab + key, bus / ns * 1e9)
            fams["overhead"].add_metric(lab, self._mono("o", lab, r["overhead_s"]))
            w = per_rank.get(int(r["rank"]))
            if w is not None and r is self._latest(snap, r["rank"]):
                for kind, col in (("in_flight", "comm_fraction"), ("exposed", "exposed_comm_fraction")):
                    if w.get(col) is not None and w[col] == w[col]:
                        fams["frac"].add_metric(lab + (kind,), float(w[col]))
                fams["bps"].add_metric(lab, float(w["bytes_per_step"]))
            h = self._hist.get(lab)
            if h is not None:
                cum = [(str(le), c) for le, c in zip(STEP_BUCKETS, h["counts"])]
                fams["steps"].add_metric(lab, cum + [("+Inf", h["count"])], h["sum"])
        yield from fams.values()
        yield from self._node_families(snap, node)

    @staticmethod
    def _latest(snap: dict, rank: int) -> dict:
        return max((r for r in snap["ranks"] if r["rank"] == rank), key=lambda r: r["attempt"])

    def _node_families(self, snap: dict, node: tuple):
        links = CounterMetricFamily("commprof_link_bytes", "bytes an interface counted since the "
                                    "sampler started", labels=NODE_LABELS + ("link", "direction"))
        for row in snap["links"]:
            lab = node + (row["link"], row["direction"])
            links.add_metric(lab, self._mono("l", lab, row["bytes"]))
        yield links
        st = snap["straggler"]
        rank = GaugeMetricFamily("commprof_straggler_rank", "the rank the others waited for most "
                                 "over the last steps (-1: none)", labels=NODE_LABELS)
        rank.add_metric(node, -1 if st is None else st["rank"])
        wait = GaugeMetricFamily("commprof_straggler_wait_seconds", "wait each other rank suffered "
                                 "per step on the straggler's account (s)", labels=NODE_LABELS)
        wait.add_metric(node, 0.0 if st is None else st["wait_s_per_step"])
        yield rank
        yield wait
        eff = GaugeMetricFamily("commprof_busbw_probe_ratio", "job busbw over the probe's at the "
                                "same size, last steps (0-1+)", labels=NODE_LABELS + ("op", "size_bucket"))
        import math
        for e in snap["busbw"]["efficiency"]:
            if e.get("efficiency") is not None:
                eff.add_metric(node + (e["op"], bucket_name(int(math.floor(math.log2(e["size_bytes"]))))),
                               e["efficiency"])
        yield eff
        cpu = CounterMetricFamily("commprof_launcher_cpu_seconds", "CPU time of this commprof run "
                                  "process (tails, panel, exporter, sampler; s)", labels=NODE_LABELS)
        cpu.add_metric(node, self._mono("cpu", node, snap.get("launcher_cpu_s", 0.0)))
        yield cpu

    def text(self) -> bytes:
        """The exposition text of the latest snapshot."""
        return generate_latest(self.registry)

    # -- transports ---------------------------------------------------------------------------
    def serve(self, host: str, port: int, spec: str) -> None:
        """Start the HTTP server now (a clear error if the address cannot be bound)."""
        from prometheus_client import start_http_server
        try:
            self.server, _ = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise UsageError(f"--prometheus {spec}: cannot listen on {host}:{port}: "
                             f"{exc.strerror or exc}") from exc
        except Exception as exc:  # noqa: BLE001 - e.g. a host name that does not resolve
            raise UsageError(f"--prometheus {spec}: cannot listen on {host}:{port}: {exc}") from exc

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
