"""Reading the node samplers' files (``nodes/*.cps``): the Links section's input, read here so
that :mod:`commprof.analysis.host.links` computes without touching files."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from commprof.errors import CaptureFormatError
from commprof.format import layout, reader


@dataclass
class NodeSamples:
    """One node sampler file, as frames."""

    path: Path
    header: dict
    series: pd.DataFrame  # id, source, device, metric, unit, kind, note
    samples: pd.DataFrame  # series, t, value
    cost: dict | None
    degraded: list[dict] = field(default_factory=list)
    damage: str | None = None

    @property
    def host(self) -> str:
        return str(self.header.get("host", "?"))


def read_node_samples(path: Path) -> NodeSamples:
    """Parse one ``*.cps`` file (torn tails are kept up to the last good frame)."""
    path = Path(path)
    cap = reader.read_capture(path, need_rank=False, within=path.parent.parent)
    series = pd.DataFrame([e for e in cap.events if e.get("type") == "series"],
                          columns=["id", "source", "device", "metric", "unit", "kind", "note"])
    costs = [e for e in cap.events if e.get("type") == "cost"]
    cost = cap.trailer if cap.trailer and "cpu_ns" in cap.trailer else (costs[-1] if costs else None)
    samples = pd.DataFrame(cap.arrays["sample"]) if len(cap.arrays["sample"]) else \
        pd.DataFrame({"series": pd.Series(dtype="int64"), "t": pd.Series(dtype="int64"),
                      "value": pd.Series(dtype="float64")})
    degraded = {e.get("where"): e for e in cap.events if e.get("type") == "degraded"}  # last wins
    return NodeSamples(path, cap.header, series, samples, cost, list(degraded.values()), cap.damage)


def load_node_samples(run_dirs) -> tuple[list[NodeSamples], list[str]]:
    """Every sampler file of a run (one directory, or a list), and notes about unreadable ones."""
    nodes, notes = [], []
    dirs = run_dirs if isinstance(run_dirs, (list, tuple)) else [run_dirs]
    for path in [p for d in dirs for p in layout.sample_paths(d)]:
        try:
            ns = read_node_samples(path)
        except CaptureFormatError as exc:
            notes.append(f"{path.name}: {exc.reason}: left out")
            continue
        if ns.damage:
            notes.append(f"{path.name}: {ns.damage}; samples before it were kept")
        nodes.append(ns)
    return nodes, notes
