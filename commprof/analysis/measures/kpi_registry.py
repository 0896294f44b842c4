"""Every KPI of the report's ``kpis`` section, declared once (docs/kpis.md, "The KPIs").

A :class:`Kpi` names the JSON key, its unit, which direction is better, its definition, how
ranks and steps are combined, the ``commprof gate``/``compare`` name for it, and the function of
:mod:`commprof.analysis.measures.kpis` that computes it (by name, with its arguments).  From this one list:

* :func:`commprof.analysis.measures.kpis.headline` assembles ``kpis`` (runs and traces alike), in this
  order, with ``kpis.host`` (the host-side entries) and the ``host_launch`` nulls;
* :mod:`commprof.analysis.result.model_kpis` derives the typed model (``Kpis``, ``HostKpis``) and with it
  ``docs/report-schema.json``;
* :mod:`commprof.gate.rules` / :mod:`commprof.gate.measure` / :mod:`commprof.gate.compare` take
  their metric names, units and directions (:func:`gate_metrics`);
* the table in docs/kpis.md is :func:`markdown_table`
  (``python3 -m commprof.analysis.measures.kpi_registry docs/kpis.md`` rewrites it).

Adding a KPI: one :class:`Kpi` at the end of :data:`KPIS` and its function in
:mod:`commprof.analysis.measures.kpis` (docs/kpis.md, "How to add a KPI").  This module imports nothing
heavy: the gate, the report model and the docs read it without pandas.
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

# units a KPI may have ("label": a string naming something, not a number); the gate reads every
# numeric one (gate/rules.py: parse_value, fmt)
UNITS = ("s", "ms", "B", "frac", "GB/s", "label")
# kpis.time_basis: what communication times are timed on (docs/kpis.md, "Time basis")
HOST, GPU_WINDOWS, GPU_TRACE, HOST_LAUNCH = "host", "gpu_windows", "gpu_trace", "host_launch"
GPU_TIMELINE = "gpu_timeline"  # Kpi.only_with: present only where a GPU timeline was measured


@dataclass(frozen=True)
class Kpi:
    """One key of ``kpis`` (docs/kpis.md)."""

    name: str  # the JSON key
    unit: str  # one of UNITS
    better: str  # "lower", "higher" or "" (a label, or no direction)
    definition: str  # what it is, for docs/kpis.md's table
    aggregation: str  # how ranks and steps are combined
    compute: str  # the function of commprof.analysis.measures.kpis that computes it ...
    args: tuple = ()  # ... with these arguments after the source
    gate: str | None = None  # its name in commprof gate / compare (None: not a gate metric)
    required: bool = False  # in every commprof.report/1 document (False: added later)
    schema_doc: str = ""  # its description in docs/report-schema.json
    host_side: bool = False  # repeated under kpis.host when the headline is not on host clocks
    host_doc: str = ""  # its description there
    comm_time: bool = False  # rests on communication time: null on time_basis host_launch
    only_with: str = ""  # GPU_TIMELINE: the key is absent without a GPU timeline
    nullable: bool = True  # JSON null allowed


def _k(name, unit, better, definition, aggregation, compute, *args, **kw) -> Kpi:
    return Kpi(name, unit, better, definition, aggregation, compute, tuple(args), **kw)


_STEPS = "all ranks' measured steps together"
_FRAC = dict(host_side=True, comm_time=True)
_GPU = dict(only_with=GPU_TIMELINE)
_ADDED = "the keys below were added after the first documents"

KPIS: tuple[Kpi, ...] = (
    _k("step_time_s", "s", "lower", "Mean step time (on profiler traces: the step's GPU span).",
       f"mean over {_STEPS}", "step_mean", "duration_s", gate="step_time", schema_doc=_ADDED,
       host_side=True, host_doc="mean host step over the host's measured steps"),
    _k("bytes_per_step", "B", "lower", "S (nccl-tests' message size) issued inside a measured step; "
       "null when a size is unknown.", f"mean over {_STEPS}", "step_mean", "bytes",
       gate="bytes_per_step", required=True, schema_doc="per rank, median over measured steps (S, nccl-tests)"),
    _k("bus_bytes_per_step", "B", "lower", "Bus bytes (S × bus factor) issued inside a measured step.",
       f"mean over {_STEPS}", "step_mean", "bus_bytes", gate="bus_bytes_per_step", required=True,
       schema_doc="S x bus factor"),
    _k("comm_fraction", "frac", "lower", "Communication in flight ÷ step time.",
       f"time-weighted (Σ ÷ Σ) over {_STEPS}", "time_weighted", "comm_s", gate="comm_fraction",
       required=True, **_FRAC),
    _k("exposed_comm_fraction", "frac", "lower", "Exposed communication (the training thread "
       "blocked; on a GPU timeline: no compute beside it) ÷ step time.",
       f"time-weighted (Σ ÷ Σ) over {_STEPS}", "time_weighted", "exposed_s",
       gate="exposed_comm_fraction", required=True, **_FRAC),
    _k("comm_fraction_max_rank", "frac", "lower", "The worst rank's `comm_fraction`.",
       "max over ranks of each rank's time-weighted figure", "rank_max", "comm_fraction",
       required=True, **_FRAC),
    _k("exposed_comm_fraction_max_rank", "frac", "lower", "The worst rank's `exposed_comm_fraction`.",
       "max over ranks of each rank's time-weighted figure", "rank_max", "exposed_comm_fraction",
       required=True, **_FRAC),
    _k("comm_fraction_step_median", "frac", "lower", "Median of the per-step fraction.",
       "median over all measured rank-steps", "step_median", "comm_fraction",
       schema_doc="median over measured steps", **_FRAC),
    _k("exposed_comm_fraction_step_median", "frac", "lower", "Median of the per-step exposed fraction.",
       "median over all measured rank-steps", "step_median", "exposed_comm_fraction", **_FRAC),
    _k("comm_fraction_step_p90", "frac", "lower", "90th percentile of the per-step fraction.",
       "p90 over all measured rank-steps", "step_quantile", "comm_fraction", 0.9, **_FRAC),
    _k("exposed_comm_fraction_step_p90", "frac", "lower", "90th percentile of the per-step exposed "
       "fraction.", "p90 over all measured rank-steps", "step_quantile", "exposed_comm_fraction", 0.9,
       **_FRAC),
    _k("comm_s_per_step", "s", "lower", "Communication in flight per step.", f"mean over {_STEPS}",
       "step_mean", "comm_s", required=True, **_FRAC),
    _k("exposed_comm_s_per_step", "s", "lower", "Exposed communication per step.",
       f"mean over {_STEPS}", "step_mean", "exposed_s", required=True, **_FRAC),
    _k("hidden_comm_s_per_step", "s", "", "In flight but not exposed: "
       "`comm_s_per_step − exposed_comm_s_per_step`.", f"mean over {_STEPS}", "difference",
       "comm_s_per_step", "exposed_comm_s_per_step", **_FRAC),
    _k("compute_s_per_step", "s", "", "Step time with no communication in flight: "
       "`step_time_s − comm_s_per_step` (the first name of `no_comm_s_per_step`).",
       f"mean over {_STEPS}", "difference", "step_time_s", "comm_s_per_step",
       schema_doc="step − in flight (the first name of no_comm_s_per_step: on GPU timelines it "
                  "holds idle too)", **_FRAC),
    _k("comm_fraction_wall", "frac", "lower", "Communication in flight ÷ the whole-run window "
       "(IPM's %comm); GPU windows: GPU communication ÷ the windows' wall time.",
       "per rank over its window, median over ranks", "rank_wall", "comm_fraction_wall",
       gate="comm_fraction_wall", required=True, **_FRAC),
    _k("exposed_comm_fraction_wall", "frac", "lower", "Exposed communication ÷ the whole-run window.",
       "per rank over its window, median over ranks", "rank_wall", "exposed_comm_fraction_wall",
       gate="exposed_comm_fraction_wall", required=True, **_FRAC),
    _k("algbw_gbps", "GB/s", "higher", "Σ S ÷ Σ call time of the calls with S > 0 (nccl-tests' "
       "algbw; GPU-timed where the basis is a GPU timeline).", "all calls of all ranks",
       "bandwidth", "algbw_gbps", gate="algbw", required=True, host_side=True),
    _k("busbw_gbps", "GB/s", "higher", "Σ bus bytes ÷ Σ call time (nccl-tests' busbw).",
       "all calls of all ranks", "bandwidth", "busbw_gbps", gate="busbw", required=True,
       host_side=True),
    _k("wait_fraction_wall", "frac", "lower", "Waiting for the last rank to arrive ÷ the rank's "
       "window (cross-rank; null with one rank).", "per rank, median over ranks", "cross_rank_wall",
       "wait_s", required=True, schema_doc="cross-rank", comm_time=True),
    _k("transfer_fraction_wall", "frac", "", "Transfer after the last rank arrived ÷ the rank's "
       "window (cross-rank).", "per rank, median over ranks", "cross_rank_wall", "transfer_s",
       required=True, schema_doc="cross-rank", comm_time=True),
    _k("no_comm_s_per_step", "s", "", "Time with no communication in flight (compute, and on a "
       "GPU timeline idle too).", "mean over the what-if baseline's rank-steps", "step_part",
       "no_comm_s_per_step", schema_doc="time with no communication in flight: compute and idle; "
       "the parts add up: step = no_comm + hidden + exposed transfer + waiting"),
    _k("wait_s_per_step", "s", "lower", "Waiting for late ranks, counted exposed first (measured "
       "cross-rank).", "mean over the what-if baseline's rank-steps", "step_part", "wait_s_per_step",
       schema_doc="waiting for late ranks (exposed), measured cross-rank"),
    _k("transfer_s_per_step", "s", "", "Communication in flight less the waiting.",
       "mean over the what-if baseline's rank-steps", "step_part", "transfer_s_per_step",
       schema_doc="communication in flight less the waiting"),
    _k("exposed_transfer_s_per_step", "s", "lower", "Exposed communication less the waiting.",
       "mean over the what-if baseline's rank-steps", "step_part", "exposed_transfer_s_per_step",
       schema_doc="exposed communication less the waiting"),
    _k("idle_s_per_step", "s", "", "GPU idle per step: `gpu_idle_fraction × step_time_s` "
       "(profiler traces).", "from the headline's figures", "step_part", "idle_s_per_step",
       schema_doc="GPU idle per step (profiler traces)"),
    _k("gpu_comm_fraction", "frac", "lower", "GPU timeline: |∪ communication kernels| ÷ GPU span.",
       "Σ ÷ Σ over every rank's steps (whole traces without steps)", "gpu_share", "comm_fraction",
       schema_doc="GPU timeline, time-weighted over steps", **_GPU),
    _k("gpu_exposed_comm_fraction", "frac", "lower", "GPU timeline: communication with no "
       "computation beside it ÷ GPU span.", "Σ ÷ Σ over every rank's steps", "gpu_share",
       "exposed_comm_fraction", **_GPU),
    _k("gpu_compute_fraction", "frac", "", "GPU timeline: |∪ computation kernels| ÷ GPU span.",
       "Σ ÷ Σ over every rank's steps", "gpu_share", "compute_fraction", **_GPU),
    _k("gpu_memcpy_fraction", "frac", "", "GPU timeline: |∪ memcpy and memset| ÷ GPU span.",
       "Σ ÷ Σ over every rank's steps", "gpu_share", "memcpy_fraction", **_GPU),
    _k("gpu_idle_fraction", "frac", "lower", "GPU timeline: span − |∪ all GPU ops|, ÷ GPU span.",
       "Σ ÷ Σ over every rank's steps", "gpu_share", "idle_fraction", **_GPU),
    _k("gpu_overlap_ratio", "frac", "higher", "GPU timeline: |comm ∩ compute| ÷ |comm| (HTA's "
       "comm-comp overlap).", "Σ ÷ Σ over every rank's steps", "gpu_share", "overlap_ratio",
       schema_doc="overlap ÷ comm (HTA's comm-comp overlap)", **_GPU),
    _k("gpu_basis", "label", "", "What the `gpu_*` figures are over: `steps`, or `trace` (no "
       "ProfilerStep: whole traces).", "-", "gpu_share", "basis",
       schema_doc='"steps" or "trace" (no ProfilerStep: whole traces)', **_GPU),
    _k("time_basis", "label", "", "What the communication times are timed on: `host`, "
       "`gpu_windows`, `gpu_trace` or `host_launch` (docs/kpis.md, \"Time basis\").", "-",
       "time_basis", nullable=False, schema_doc='what the KPIs are timed on: "host", "gpu_windows", '
       '"gpu_trace" or "host_launch" (NCCL, no GPU timeline: communication times null)'),
)
BY_NAME = {k.name: k for k in KPIS}


def host_side() -> list[Kpi]:
    """The KPIs ``kpis.host`` repeats (host clocks) where the headline stands on a GPU timeline."""
    return [k for k in KPIS if k.host_side]


# -- the gate's metrics ------------------------------------------------------------------------

@dataclass(frozen=True)
class GateMetric:
    """A metric of ``commprof gate``/``compare``: a KPI by its gate name (``kpi``), or a statistic
    of the report's ``steps.per_step`` rows that is not a ``kpis`` key (``kpi`` None)."""

    name: str
    unit: str
    better: str
    definition: str
    kpi: str | None = None  # the kpis key whose value the gate reads


# Medians over steps of each step's median over ranks (steps.per_step): not the KPIs of the same
# names (medians over all rank-steps); the gate has always computed them from its per-step series.
STEP_SERIES_METRICS = (
    GateMetric("step_time_median", "s", "lower", "median step (each step's median over ranks)"),
    GateMetric("comm_fraction_step_median", "frac", "lower",
               "median over steps of the per-step fraction (each step's median over ranks)"),
    GateMetric("exposed_comm_fraction_step_median", "frac", "lower",
               "median over steps of the per-step exposed fraction (each step's median over ranks)"),
)
# The order commprof compare and the gate's messages list metrics in; gate metrics not named here
# (KPIs added later) follow in registry order.
GATE_ORDER = ("step_time", "comm_fraction", "exposed_comm_fraction", "bytes_per_step",
              "step_time_median", "comm_fraction_step_median", "exposed_comm_fraction_step_median",
              "comm_fraction_wall", "exposed_comm_fraction_wall", "bus_bytes_per_step", "algbw",
              "busbw")


def gate_metrics() -> list[GateMetric]:
    """Every gate metric, in :data:`GATE_ORDER` then registry order."""
    found = {g.name: g for g in STEP_SERIES_METRICS}
    found.update({k.gate: GateMetric(k.gate, k.unit, k.better, k.definition, k.name)
                  for k in KPIS if k.gate})
    order = list(GATE_ORDER) + [k.gate for k in KPIS if k.gate and k.gate not in GATE_ORDER]
    return [found[name] for name in order]


# -- the docs table ----------------------------------------------------------------------------

TABLE_BEGIN = "<!-- kpi-table: generated by `python3 -m commprof.analysis.measures.kpi_registry docs/kpis.md` -->"
TABLE_END = "<!-- kpi-table end -->"


def markdown_table() -> str:
    """The KPI table of docs/kpis.md, from :data:`KPIS`."""
    rows = ["| `kpis.` key | unit | better | gate | combined | definition |",
            "|---|---|---|---|---|---|"]
    for k in KPIS:
        notes = [n for n, on in (("in `kpis.host`", k.host_side),
                                 ("null on `host_launch`", k.comm_time),
                                 ("only with a GPU timeline", k.only_with == GPU_TIMELINE)) if on]
        text = k.definition + (f" ({'; '.join(notes)})" if notes else "")
        cells = [f"`{k.name}`", k.unit, k.better or "-", f"`{k.gate}`" if k.gate else "-",
                 k.aggregation, text]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    rows.append("")
    rows.append("Gate metrics that are not `kpis` keys (statistics of `steps.per_step`): "
                + "; ".join(f"`{g.name}` ({g.unit}, {g.definition})" for g in STEP_SERIES_METRICS)
                + ".")
    return "\n".join(rows)


def with_table(doc: str) -> str:
    """``doc`` (docs/kpis.md's text) with the generated table between its markers."""
    pattern = re.compile(re.escape(TABLE_BEGIN) + r"\n.*?" + re.escape(TABLE_END), re.S)
    if not pattern.search(doc):
        raise ValueError(f"no {TABLE_BEGIN!r} ... {TABLE_END!r} markers")
    return pattern.sub(lambda _: f"{TABLE_BEGIN}\n{markdown_table()}\n{TABLE_END}", doc)


if __name__ == "__main__":  # python3 -m commprof.analysis.measures.kpi_registry [docs/kpis.md]
    if len(sys.argv) > 1:
        target = Path(sys.argv[1])
        target.write_text(with_table(target.read_text()))
    else:
        print(markdown_table())
