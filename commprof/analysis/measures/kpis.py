"""The KPIs, as pure functions of per-step frames, and the one assembler of the report's ``kpis``
(definitions: docs/kpis.md; each KPI is declared in :mod:`commprof.analysis.measures.kpi_registry`, which
names the function here that computes it).

:func:`headline` assembles ``kpis`` for runs and traces alike from a :class:`KpiSource` (the
measured steps, ranks[], bandwidth, the time basis and, where measured, the GPU timeline's
figures and the what-if baseline's parts of a step).

Headline fractions are **time-weighted**: Σ over measured steps of (exposed) communication time ÷
Σ of their step times — per rank, and for the run over every rank's measured steps — so a few
slow steps, where the time actually goes, weigh as much as they cost.  Per-step medians and p90s
are distributions and carry their own names (``*_step_median``, ``*_step_p90``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from commprof.analysis.measures import kpi_registry as registry

DEFAULT_WARMUP = 2
STEP_COLUMNS = ["rank", "step", "t_start", "t_end", "source", "duration_s", "comm_s", "exposed_s",
                "comm_fraction", "exposed_comm_fraction", "bytes", "bus_bytes", "ops"]
RANK_STEP_COLUMNS = ("steps", "steps_total", "step_median_s", "step_mean_s", "comm_fraction",
                     "exposed_comm_fraction", "comm_fraction_step_median",
                     "exposed_comm_fraction_step_median", "bytes_per_step", "comm_s_per_step",
                     "exposed_comm_s_per_step")


def finish_steps(step_rows: list[pd.DataFrame]) -> pd.DataFrame:
    """Every rank's steps in one frame, with seconds and per-step fractions."""
    if not step_rows:
        return pd.DataFrame(columns=STEP_COLUMNS)
    s = pd.concat(step_rows, ignore_index=True)
    dur = (s["t_end"] - s["t_start"]).astype("float64")
    s["duration_s"] = dur / 1e9
    s["comm_s"] = s["comm_ns"] / 1e9
    s["exposed_s"] = s["exposed_ns"] / 1e9
    s["comm_fraction"] = np.where(dur > 0, s["comm_ns"] / dur.where(dur > 0, 1), 0.0)
    s["exposed_comm_fraction"] = np.where(dur > 0, s["exposed_ns"] / dur.where(dur > 0, 1), 0.0)
    return s[STEP_COLUMNS]


def ratio_of_sums(part: pd.Series, whole: pd.Series) -> float | None:
    """Σ part ÷ Σ whole (None when the whole is 0 or empty)."""
    total = float(pd.Series(whole).sum())
    return float(pd.Series(part).sum()) / total if total > 0 else None


def per_rank(meas: pd.DataFrame) -> pd.DataFrame:
    """Per rank, over its measured steps: time-weighted fractions, means per step, medians."""
    g = meas.groupby("rank")
    out = g.agg(steps=("step", "size"), step_median_s=("duration_s", "median"),
                step_mean_s=("duration_s", "mean"),
                comm_fraction_step_median=("comm_fraction", "median"),
                exposed_comm_fraction_step_median=("exposed_comm_fraction", "median"),
                bytes_per_step=("bytes", "mean"), comm_s_per_step=("comm_s", "mean"),
                exposed_comm_s_per_step=("exposed_s", "mean"),
                _dur=("duration_s", "sum"), _comm=("comm_s", "sum"), _exp=("exposed_s", "sum"))
    pos = out["_dur"] > 0
    out["comm_fraction"] = np.where(pos, out["_comm"] / out["_dur"].where(pos, 1), np.nan)
    out["exposed_comm_fraction"] = np.where(pos, out["_exp"] / out["_dur"].where(pos, 1), np.nan)
    return out.drop(columns=["_dur", "_comm", "_exp"]).reset_index()


def _median(series) -> float | None:
    series = pd.Series(series).dropna()
    return float(series.median()) if len(series) else None


def _quantile(series, q: float) -> float | None:
    series = pd.Series(series).dropna()
    return float(series.quantile(q)) if len(series) else None


def ranks_frame(rows: list[dict], meas: pd.DataFrame, steps: pd.DataFrame) -> pd.DataFrame:
    """The ranks[] rows (``rows``: one dict per rank) with their step KPIs over ``meas`` (the
    headline's measured steps) and ``steps_total`` (all of ``steps``)."""
    ranks_df = pd.DataFrame(rows)
    if len(meas):
        ranks_df = ranks_df.merge(per_rank(meas), on="rank", how="left")
        ranks_df = ranks_df.merge(steps.groupby("rank").size().rename("steps_total").reset_index(),
                                  on="rank", how="left")
    for col in RANK_STEP_COLUMNS:  # the document's keys exist even when there are no steps
        if col not in ranks_df:
            ranks_df[col] = None
    return ranks_df


def with_cross_rank(ranks: pd.DataFrame, cross: dict | None, keep_columns: bool = False) -> pd.DataFrame:
    """ranks[] with the cross-rank analysis' ``wait_s``, ``transfer_s`` and ``last_share``; without
    one the columns are left out, or null with ``keep_columns``."""
    if cross is None:
        return ranks.assign(wait_s=None, transfer_s=None, last_share=None) if keep_columns else ranks
    extra = cross["per_rank"].assign(wait_s=lambda d: d["wait_ns"] / 1e9,
                                     transfer_s=lambda d: d["transfer_ns"] / 1e9)
    return ranks.merge(extra[["rank", "wait_s", "transfer_s", "last_share"]], on="rank", how="left")


# -- the headline: every key of ``kpis``, from the registry (commprof/analysis/measures/kpi_registry.py) --

@dataclass
class KpiSource:
    """What the headline KPIs are computed from (:func:`headline`)."""

    steps: pd.DataFrame  # the headline's measured rank-steps (STEP_COLUMNS)
    ranks: pd.DataFrame  # ranks[] over those steps (:func:`ranks_frame`, :func:`with_cross_rank`)
    bandwidth: dict  # algbw_gbps, busbw_gbps
    time_basis: str = "host"  # docs/kpis.md, "Time basis"
    wall: dict | None = None  # *_fraction_wall where they are not the ranks' own (GPU windows)
    gpu: dict | None = None  # gpu_timeline.fractions of the GPU timeline, with its "basis"
    step_parts: Callable[[dict], dict] | None = None  # whatif.step_components of the baseline
    host: "KpiSource | None" = None  # host clocks' source, for kpis.host
    _values: dict = field(default_factory=dict, repr=False)

    def kpi(self, name: str):
        """The value of KPI ``name`` on this source (computed once; before host_launch nulls)."""
        if name not in self._values:
            k = registry.BY_NAME[name]
            self._values[name] = compute_function(k)(self, *k.args)
        return self._values[name]


def compute_function(k: registry.Kpi) -> Callable:
    """The function of this module that computes ``k`` (``Kpi.compute`` names it)."""
    fn = globals().get(k.compute)
    if not callable(fn):
        raise LookupError(f"KPI {k.name}: no function {k.compute!r} in {__name__}")
    return fn


def headline(src: KpiSource) -> dict:
    """The ``kpis`` section: every registry KPI in registry order (GPU-timeline ones only with a
    GPU timeline; communication times null on ``host_launch``), and ``host`` where ``src`` has
    host clocks' figures beside its own."""
    out = {}
    for k in registry.KPIS:
        if k.only_with == registry.GPU_TIMELINE and src.gpu is None:
            continue
        out[k.name] = None if k.comm_time and src.time_basis == registry.HOST_LAUNCH else src.kpi(k.name)
    if src.host is not None:
        out["host"] = {k.name: src.host.kpi(k.name) for k in registry.host_side()}
    return out


def run_kpis(ranks: pd.DataFrame, meas: pd.DataFrame, bandwidth: dict) -> dict:
    """The KPIs of measured steps and their ranks alone (the live view's window), with
    ``bandwidth`` as given."""
    src = KpiSource(meas, ranks, bandwidth)
    return {**{k: src.kpi(k) for k in STEP_KPIS}, **bandwidth}


# The registry's KPIs that need only steps and ranks[] (run_kpis).
STEP_KPIS = tuple(k.name for k in registry.KPIS
                  if k.compute in ("step_mean", "time_weighted", "rank_max", "step_median",
                                   "step_quantile", "difference", "rank_wall"))


# -- the functions the registry names (Kpi.compute): f(source, *Kpi.args) -> value ----------------

def _col(ranks: pd.DataFrame, name: str) -> pd.Series:
    return ranks[name] if name in ranks else pd.Series(dtype="float64")


def step_mean(src: KpiSource, column: str) -> float | None:
    """Mean of a step column over every measured rank-step."""
    return float(src.steps[column].mean()) if len(src.steps) else None


def time_weighted(src: KpiSource, part: str) -> float | None:
    """Σ part ÷ Σ step time over every measured rank-step (None when the whole is 0 or empty)."""
    return ratio_of_sums(src.steps[part], src.steps["duration_s"]) if len(src.steps) else None


def rank_max(src: KpiSource, column: str) -> float | None:
    """The largest of the ranks' figures."""
    series = _col(src.ranks, column).dropna()
    return float(series.max()) if len(series) else None


def step_median(src: KpiSource, column: str) -> float | None:
    """Median of a per-step figure over every measured rank-step."""
    return _median(src.steps[column]) if len(src.steps) else None


def step_quantile(src: KpiSource, column: str, q: float) -> float | None:
    """Quantile ``q`` of a per-step figure over every measured rank-step."""
    return _quantile(src.steps[column], q) if len(src.steps) else None


def difference(src: KpiSource, a: str, b: str) -> float | None:
    """KPI ``a`` − KPI ``b`` (None when either is)."""
    x, y = src.kpi(a), src.kpi(b)
    return None if x is None or y is None else x - y


def rank_wall(src: KpiSource, column: str) -> float | None:
    """A whole-window fraction: the source's own (GPU windows), else the median over ranks."""
    if src.wall is not None:
        return src.wall.get(column)
    return _median(_col(src.ranks, column))


def bandwidth(src: KpiSource, key: str) -> float | None:
    """algbw/busbw as the caller measured them (host calls, Flight Recorder or kernels)."""
    return src.bandwidth.get(key)


def cross_rank_wall(src: KpiSource, column: str) -> float | None:
    """Median over ranks of a cross-rank time (``wait_s``/``transfer_s``) ÷ the rank's window;
    None without a cross-rank result."""
    r = src.ranks
    if column not in r or not r[column].notna().any() or "wall_s" not in r:
        return None
    frac = (r[column] / r["wall_s"]).dropna()
    return float(frac.median()) if len(frac) else None


def step_part(src: KpiSource, key: str) -> float | None:
    """One of the parts of a mean step (:func:`commprof.analysis.outcome.whatif.step_components`)."""
    if "_step_parts" not in src._values:
        src._values["_step_parts"] = src.step_parts({
            "time_basis": src.time_basis, "step_time_s": src.kpi("step_time_s"),
            "gpu_idle_fraction": gpu_share(src, "idle_fraction") if src.gpu else None,
        }) if src.step_parts else {}
    return src._values["_step_parts"].get(key)


def gpu_share(src: KpiSource, key: str):
    """A figure of the GPU timeline (:func:`commprof.analysis.gpu.gpu_timeline.fractions`)."""
    value = src.gpu[key]
    return value if isinstance(value, str) else float(value)


def time_basis(src: KpiSource) -> str:
    """What the communication times are timed on."""
    return src.time_basis


def step_info(steps: pd.DataFrame, meas: pd.DataFrame, warmup: int) -> dict:
    """The document's ``steps`` section: counts, distribution of step times, per-step rows (for
    each measured step: medians over ranks, plus means over ranks of its times)."""
    counts = steps.groupby("rank").size() if len(steps) else pd.Series(dtype="int64")
    per_step = (meas.groupby("step").agg(duration_s=("duration_s", "median"),
                                         comm_fraction=("comm_fraction", "median"),
                                         exposed_comm_fraction=("exposed_comm_fraction", "median"),
                                         bytes=("bytes", "median"),
                                         duration_mean_s=("duration_s", "mean"),
                                         comm_s=("comm_s", "mean"), exposed_s=("exposed_s", "mean"))
                if len(meas) else pd.DataFrame())
    return {
        "count": int(counts.median()) if len(counts) else 0,
        "count_min_rank": int(counts.min()) if len(counts) else 0,
        "count_max_rank": int(counts.max()) if len(counts) else 0,
        "source": str(steps["source"].iloc[0]) if len(steps) else "none",
        "warmup": int(warmup),
        "measured": int(meas.groupby("rank").size().median()) if len(meas) else 0,
        "median_s": _median(meas.groupby("rank")["duration_s"].median()) if len(meas) else None,
        "mean_s": float(meas["duration_s"].mean()) if len(meas) else None,
        "p90_s": float(meas["duration_s"].quantile(0.9)) if len(meas) else None,
        "per_step": per_step.reset_index().to_dict("records") if len(per_step) else [],
    }
