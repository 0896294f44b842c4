"""The report document ``commprof.report/1`` as one typed model (stdlib dataclasses).

Every key of the document is a field here, with its JSON type (the one assembler,
:func:`commprof.analysis.outcome.assemble.assemble`, builds a :class:`Report`; renderers read it):
``int`` (an integral JSON number), ``float`` (any finite JSON number), ``str``, ``bool``,
``X | None`` (may be null), ``list[X]``, ``dict[str, X]`` (an object with free keys), a nested
model class, or ``dict[str, Any]`` / ``Any`` for free-form content (the hang report, which has its
own schema ``commprof.hang/1``; a what-if scenario's parameters).

* :meth:`Report.from_dict` checks a document key by key, recursively (list items included), and
  raises :class:`~commprof.errors.ReportFileError` with one line naming the first bad key, e.g.
  ``kpis.exposed_comm_fraction: expected a number or null, got a string "12%"`` or
  ``ops[0].count: missing``.
* :meth:`Report.to_dict` gives the JSON document back (``Report.from_dict(d).to_dict() == d``).
* Keys the model does not know are allowed (the contract only ever adds keys) and kept, in
  ``extra_keys`` of the object that holds them.
* A field declared with :func:`optional` may be absent: the key was added to ``commprof.report/1``
  after documents were already saved without it, or the assembler writes it only when the run
  has the data (e.g. ``ranks[].wait_s`` needs two ranks).  Absent reads as ``None``
  (like a null); ``obj.has(key)`` tells the two apart.

The machinery (checks, key paths, schema) is :mod:`commprof.format.typed`; the classes of the
``links``, cross-rank and what-if sections are in :mod:`commprof.analysis.result.model_sections`; those of
``kpis`` are derived from the KPI registry in :mod:`commprof.analysis.result.model_kpis`.

:func:`json_schema` derives the JSON Schema (draft 2020-12) from these classes; it is published
as ``docs/report-schema.json`` (``python -m commprof.analysis.result.model > docs/report-schema.json``).
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from typing import Any

from commprof.errors import ReportFileError
from commprof.format import typed
from commprof.analysis.result.model_comm import GpuComm
from commprof.analysis.result.model_kpis import HostKpis, Kpis
from commprof.analysis.result.model_sections import (ClockAlignment, ClockRank, CrossRank, CrossRankStep,
                                            EfficiencyRow, FixRow, GaugeRow, InterfaceRow,
                                            LastCollective, Links, LossCurve, MetricSeries, OpGroupRow,
                                            ProbeCurvePoint, ProbeLatency, ProbeSummary, Recommendation,
                                            SamplerDegraded, SamplerRow, SourceStatus, Straggler,
                                            TcpRow, TimelineRow, Training, WhatIf, WhatIfInputs)
from commprof.format.typed import (KeyPath, Model, expected, field_type, is_free_form,
                                   is_optional, key, model_fields, optional, split_none)

__all__ = [  # the document's classes, and the typed helpers tests and tools use with them
    "SCHEMA", "Report", "Run", "GpuTiming", "OversubscribedHost", "Steps", "StepRow", "Kpis",
    "OpRow", "GpuTotals", "RankRow", "Overhead", "Assessment", "NoteItem", "DegradedRow", "OpSizeRow",
    "ClockAlignment", "ClockRank", "CrossRank", "CrossRankStep", "Straggler", "Links", "SamplerRow",
    "SourceStatus", "SamplerDegraded", "InterfaceRow", "GaugeRow", "TcpRow", "EfficiencyRow",
    "ProbeSummary", "ProbeLatency", "TimelineRow", "ProbeCurvePoint", "WhatIf", "WhatIfInputs", "HostKpis",
    "Training", "LossCurve", "MetricSeries", "FixRow", "LastCollective", "GpuComm",
    "Recommendation", "KeyPath", "Model", "key", "optional", "expected", "field_type",
    "is_free_form", "is_optional", "model_fields", "split_none", "key_paths", "defines",
    "json_schema", "schema_text",
]

SCHEMA = "commprof.report/1"


@dataclass(kw_only=True)
class GpuTiming(Model):
    """GPU-side times of NCCL calls (docs/kpis.md, "GPU-side times")."""

    calls_with_gpu_time: int = key("calls timed with CUDA events, all ranks")
    fr_entries_seen: int = key("Flight Recorder entries read, all ranks")
    fr_entries_lost: int = key("Flight Recorder entries overwritten before commprof read them")
    source: str | None = key("where the GPU times came from; null without any")


@dataclass(kw_only=True)
class OversubscribedHost(Model):
    """A host whose ranks run more intra-op threads than the CPUs they may use (docs/whatif.md)."""

    host: str = key()
    ranks: int = key("ranks on the host")
    threads: int = key("intra-op threads of those ranks, summed")
    cpus: int = key("CPUs in the union of their affinity masks")


@dataclass(kw_only=True)
class Run(Model):
    """The job: command, ranks, hosts, exit status, versions."""

    path: str = key("run directory (several joined with a separator when merged)")
    world_size: int = key()
    ranks_captured: int = key()
    processes: int = key("capture files read (one per rank and torchrun attempt)")
    hosts: list[str] = key()
    nodes: int = key()
    backend: str = key('"gloo", "nccl", "gloo,nccl", "none"')
    command: list[str] = key()
    exit_code: int | None = key()
    signal: int | None = key()
    status: str | None = key('the manifest\'s status: "finished", "running", "launcher-failed"')
    duration_s: float | None = key()
    torch_version: str | None = key()
    nccl_version: str | None = key()
    commprof_version: str | None = key()
    incomplete_ranks: list[int] = key("no trailer: died or killed")
    missing_ranks: list[int] = key("in the world, but no readable capture")
    collectives: int = key("records, all ranks")
    attempts: list[int] = key("torchrun restart counts captured")
    gpu_timing: GpuTiming = optional("added in commprof 0.1 after the first documents")
    oversubscribed_hosts: list[OversubscribedHost] = optional(
        "intra-op threads > CPUs; added after the first documents")
    source: str | None = optional("what the report was built from, when not a commprof run")
    devices: list[str] = optional("GPU names (profiler traces)")


@dataclass(kw_only=True)
class StepRow(Model):
    """One measured step, medians over ranks."""

    step: int = key()
    duration_s: float = key()
    comm_fraction: float | None = key("null: NCCL without a GPU timeline (kpis.time_basis)")
    exposed_comm_fraction: float | None = key()
    bytes: float | None = key("S issued in the step; null: unknown (a trace without message sizes)")
    duration_mean_s: float = optional("mean over ranks; added after the first documents")
    comm_s: float | None = optional("in flight, mean over ranks")
    exposed_s: float | None = optional("exposed, mean over ranks")


@dataclass(kw_only=True)
class Steps(Model):
    """Training steps (per rank, medians over ranks)."""

    count: int = key("steps per rank (median over ranks)")
    count_min_rank: int = key()
    count_max_rank: int = key()
    source: str = key('"explicit", "optimizer", "backward" or "none"')
    warmup: int = key("steps of each rank left out of the medians")
    measured: int = key()
    median_s: float | None = key()
    mean_s: float | None = optional("added after the first documents")
    p90_s: float | None = key()
    per_step: list[StepRow] = key()


@dataclass(kw_only=True)
class OpRow(Model):
    """One (op, group size): per rank, whole run."""

    op: str = key()
    group_size: int | None = key("null: unknown (a trace that does not say)")
    count: int = key()
    bytes: int | None = key("null: unknown (a trace without message sizes)")
    in_bytes: int | None = key()
    out_bytes: int | None = key()
    time_s: float = key()
    p50_s: float = key()
    p99_s: float = key()
    max_s: float = key()
    algbw_gbps: float | None = key()
    busbw_gbps: float | None = key()
    bus_factor: float | None = key()
    ranks: int = key("ranks that issued the op")
    dtype: str = key()
    gpu_time_s: float | None = optional("NCCL: CUDA-event times; added after the first documents")
    gpu_busbw_gbps: float | None = optional("added after the first documents")
    time_source: str = optional('"host" or "host + gpu"; added after the first documents')
    bytes_per_step: float | None = optional("S per measured step, per rank that issued the op: "
                                            "start-up traffic and warm-up apart (null: no steps)")
    calls_per_step: float | None = optional("calls per measured step, likewise")


@dataclass(kw_only=True)
class GpuTotals(Model):
    """The GPU-timeline KPIs over every GPU op of a rank's source (docs/kpis.md, "GPU timeline")."""

    comm_s: float = key("|union of communication kernels|")
    overlap_s: float = key("|comm ∩ computation|")
    exposed_comm_s: float = key("comm − overlap")
    compute_s: float = key()
    memcpy_s: float = key()
    idle_s: float = key("span − |union of all GPU ops|")
    comm_kernels: int = key()
    kernels: int = key()
    span_s: float = key()


@dataclass(kw_only=True)
class RankRow(Model):
    """One rank process."""

    rank: int = key()
    host: str | None = key("null: the capture does not name its host (a file of an older minor "
                           "header version)")
    attempt: int = key()
    ops: int = key()
    bytes: int | None = key("null: unknown (a trace without message sizes)")
    comm_s: float | None = optional("whole-run window; absent when no rank has one")
    exposed_comm_s: float | None = optional("whole-run window")
    comm_fraction: float | None = key()
    exposed_comm_fraction: float | None = key()
    comm_fraction_step_median: float | None = optional("added after the first documents")
    exposed_comm_fraction_step_median: float | None = optional("added after the first documents")
    comm_fraction_wall: float | None = optional()
    exposed_comm_fraction_wall: float | None = optional()
    wall_s: float | None = optional()
    steps: int | None = key()
    steps_total: int | None = key()
    step_median_s: float | None = key()
    step_mean_s: float | None = optional("added after the first documents")
    bytes_per_step: float | None = key()
    comm_s_per_step: float | None = key()
    exposed_comm_s_per_step: float | None = key()
    complete: bool = key("the process wrote its trailer")
    exit_reason: str | None = key('"exit", "SIGTERM", "exception: ValueError" (uncaught), ...; '
                                  'null if incomplete')
    last_record_s: float | None = key("incomplete only: s from capture start to its last record")
    last_collective: LastCollective | None = optional("incomplete only: where the rank was")
    wait_s: float | None = optional("cross-rank (two or more ranks), whole run")
    transfer_s: float | None = optional("cross-rank, whole run")
    last_share: float | None = optional("share of matched collectives it arrived last at")
    gpu: GpuTotals | None = optional("GPU timeline: profiler traces, or commprof run's GPU windows")


@dataclass(kw_only=True)
class Overhead(Model):
    """commprof's own cost in the run."""

    calls: int = key("records written, all ranks")
    record_us_per_call: float | None = key("hooks' own recording time, measured in-run")
    dispatch_us_per_call_estimate: float = key("dispatcher hop, a benchmark constant")
    estimated_s_per_rank: float = key()
    estimated_fraction_of_wall: float | None = key()
    blocking_calls: int = optional("calls torch.distributed waited on itself (async_op False); "
                                   "added after the first documents")
    gpu_windows: int = optional("GPU windows recorded, all ranks (added with GPU windows)")
    gpu_window_s_per_rank: float = optional("their start, sync, stop and conversion time, measured "
                                            "in-run; part of estimated_s_per_rank")
    capture_path: str | None = optional('the c10d kernel that recorded: "python", "native" (or both)')
    once_s_per_rank: float | None = optional(
        "native kernel: the first call on each new process group (its registration in Python, "
        "under the GIL), measured; part of estimated_s_per_rank, not of record_us_per_call; null "
        "where the capture has no split (Python path, older captures)")
    stalled_calls: int | None = optional(
        "native kernel: calls whose clocked window exceeded the stall threshold (50 µs: the "
        "thread was off its core or waiting); left out of record_us_per_call's mean; null where "
        "the capture has no split")
    stalled_s_per_rank: float | None = optional(
        "those windows' wall time (not counted in estimated_s_per_rank: that counts them at "
        "record_us_per_call); null where the capture has no split")


@dataclass(kw_only=True)
class OpSizeRow(Model):
    """Calls per (op, group size, size bucket [2^bucket, 2^(bucket+1)) bytes), all ranks summed."""

    op: str = key()
    group_size: int = key()
    bucket: int = key()
    count: int = key()
    bytes: float = key()
    bus_bytes: float = key()
    time_s: float = key()


@dataclass(kw_only=True)
class DegradedRow(Model):
    """A commprof hook that failed on a rank (the job went on)."""

    rank: int = key()
    where: str = key()
    count: int = key()
    error: str = key()


@dataclass(kw_only=True)
class Assessment(Model):
    """The verdict's parts: level, label, the sentence and the numbers it rests on."""

    level: str = key('"none", "not_bound", "partly_bound", "bound" or "unmeasured"')
    label: str = key()
    sentence: str = key("the same text as the document's verdict")
    exposed_fraction: float | None = key()
    comm_fraction: float | None = key()
    basis: str = key('"step time" or "wall time", marked "GPU step time" (traces) or "step time '
                     '(GPU timeline)" (GPU windows); "none" when unmeasured')
    speedup_if_hidden: float | None = key("perfect overlap: steps no shorter than max(compute, "
                                          "transfer) (docs/whatif.md)")
    speedup_bound: float | None = key("communication removed: T/(T−C) on host clocks, T/(T−E) "
                                      "on a GPU timeline; >= every what-if row")


@dataclass(kw_only=True)
class NoteItem(Model):
    """A note with its kind and severity (the same text as in ``notes``)."""

    kind: str = key()
    severity: str = key('"info", "warning" or "error"')
    text: str = key()


@dataclass(kw_only=True)
class Report(Model):
    """The report document ``commprof.report/1`` (docs/report-schema.md)."""

    schema: str = key('"commprof.report/1"')
    run: Run = key()
    steps: Steps = key()
    kpis: Kpis = key()
    ops: list[OpRow] = key()
    ranks: list[RankRow] = key()
    overhead: Overhead = key()
    verdict: str = key()
    assessment: Assessment = optional("added after the first documents")
    hang: dict[str, Any] | None = key("RUN/hang.json (commprof.hang/1, docs/format.md)")
    links: Links | None = key()
    op_sizes: list[OpSizeRow] = key()
    op_groups: list[OpGroupRow] = optional("the op table per process group")
    stragglers: list[Straggler] = key()
    clock_alignment: ClockAlignment | None = key()
    cross_rank: CrossRank | None = key()
    notes: list[str] = key("damaged files, missing steps, ...")
    note_items: list[NoteItem] = optional("the notes with kind and severity; added after the first documents")
    degraded: list[DegradedRow] = key()
    whatif: list[WhatIf] = optional("added after the first documents")
    recommendations: list[Recommendation] = optional("added after the first documents")
    training: Training = optional("loss curve and fixes (commprof try); only when recorded")
    gpu_comm: GpuComm | None = optional("profiler traces: the rule that counted each kernel as "
                                        "communication; added with the launch-based rule")

    @classmethod
    def from_dict(cls, doc: Any, path: str | os.PathLike = "<report>") -> "Report":
        """``doc`` checked key by key; :class:`ReportFileError` ``(path, "<key>: <what>")`` on
        the first key that is missing or of the wrong type."""
        if not isinstance(doc, dict):
            raise ReportFileError(path, f"expected a JSON object, got {typed.describe(doc)}")
        if isinstance(doc.get("schema"), str) and doc["schema"] != SCHEMA:
            raise ReportFileError(path, f"schema: expected {json.dumps(SCHEMA)}, "
                                        f"got {typed.describe(doc['schema'])}")
        return typed.parse(cls, doc, path)


def key_paths() -> list[KeyPath]:
    """Every key path of the document, e.g. ``ops[].count``, ``run.hosts[]``,
    ``links.sampler[].sources.*.why`` (:func:`commprof.format.typed.key_paths`)."""
    return typed.key_paths(Report)


def defines(parts) -> bool:
    """Whether the document's model defines the key path ``parts``, e.g. ``("run", "nodes")`` or
    ``("ops", "[]", "count")`` (:func:`commprof.format.typed.defines`)."""
    return typed.defines(Report, parts)


def json_schema() -> dict:
    """The JSON Schema (draft 2020-12) of ``commprof.report/1``, derived from the model."""
    schema = typed.json_schema_of(
        Report, SCHEMA,
        "The commprof report document (docs/report-schema.md), generated from "
        "commprof/analysis/result/model.py by commprof.analysis.result.model.json_schema(). "
        "Keys may be added, never renamed or removed: unknown keys are allowed.")
    schema["properties"]["schema"] = {"const": SCHEMA, "description": "the document's version"}
    return schema


def schema_text() -> str:
    """``docs/report-schema.json`` as committed: :func:`json_schema`, indented, one final newline."""
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":  # python -m commprof.analysis.result.model > docs/report-schema.json
    sys.stdout.write(schema_text())
