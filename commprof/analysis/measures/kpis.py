"""The step KPIs, as pure functions of per-step frames (definitions: docs/kpis.md).

Headline fractions are **time-weighted**: Σ over measured steps of (exposed) communication time ÷
Σ of their step times — per rank, and for the run over every rank's measured steps — so a few
slow steps, where the time actually goes, weigh as much as they cost.  Per-step medians and p90s
are distributions and carry their own names (``*_step_median``, ``*_step_p90``).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

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


def time_weighted(part: pd.Series, whole: pd.Series) -> float | None:
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


def _max(series) -> float | None:
    series = pd.Series(series).dropna()
    return float(series.max()) if len(series) else None


def _quantile(series, q: float) -> float | None:
    series = pd.Series(series).dropna()
    return float(series.quantile(q)) if len(series) else None


def run_kpis(ranks: pd.DataFrame, meas: pd.DataFrame, bandwidth: dict) -> dict:
    """The run's KPIs (docs/kpis.md).  Step KPIs are over every rank's measured steps."""
    def col(name):
        return ranks[name] if name in ranks else pd.Series(dtype="float64")

    has = len(meas) > 0
    step_s = float(meas["duration_s"].mean()) if has else None
    comm = float(meas["comm_s"].mean()) if has else None
    exposed = float(meas["exposed_s"].mean()) if has else None
    return {
        "step_time_s": step_s,
        "bytes_per_step": float(meas["bytes"].mean()) if has else None,
        "comm_fraction": time_weighted(meas["comm_s"], meas["duration_s"]) if has else None,
        "exposed_comm_fraction": time_weighted(meas["exposed_s"], meas["duration_s"]) if has else None,
        "comm_fraction_max_rank": _max(col("comm_fraction")),
        "exposed_comm_fraction_max_rank": _max(col("exposed_comm_fraction")),
        "comm_fraction_step_median": _median(meas["comm_fraction"]) if has else None,
        "exposed_comm_fraction_step_median": _median(meas["exposed_comm_fraction"]) if has else None,
        "comm_fraction_step_p90": _quantile(meas["comm_fraction"], 0.9) if has else None,
        "exposed_comm_fraction_step_p90": _quantile(meas["exposed_comm_fraction"], 0.9) if has else None,
        "comm_s_per_step": comm,
        "exposed_comm_s_per_step": exposed,
        "hidden_comm_s_per_step": comm - exposed if has else None,
        "compute_s_per_step": step_s - comm if has else None,
        "bus_bytes_per_step": float(meas["bus_bytes"].mean()) if has else None,
        "comm_fraction_wall": _median(col("comm_fraction_wall")),
        "exposed_comm_fraction_wall": _median(col("exposed_comm_fraction_wall")),
        **bandwidth,
    }


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
