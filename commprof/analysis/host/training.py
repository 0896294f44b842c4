"""Training signals of a run: each step's loss, and the fixes ``commprof try`` applied (docs/try.md).

* **Loss** (capture/loss.py): the value of every one-element tensor passed to ``backward()``,
  with the step it belongs to.  A step's loss is what the job optimizes (:func:`step_losses`):
  one backward call's value; under gradient accumulation (N calls in the step) the *sum* of the
  values when each was the micro-batch loss scaled by 1/N (``loss / N``, detected from its
  ``grad_fn``), else their mean; the run's curve is the mean over ranks of each step (every rank
  sees its own data: the mean is the global batch's loss).
* **Metrics** (``commprof.metric``): the values the job reports (e.g. held-out accuracy), by name.
* **Fixes**: one ``fix`` event per process and fix (applied, skipped, withdrawn, and why).
* :func:`compare_losses`: the convergence columns of ``commprof compare`` / ``commprof try`` —
  final loss, mean relative difference over the last N steps, and the steps the other run takes
  to reach the baseline's final loss.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

LOSS_COLUMNS = ["step", "t", "value", "scale"]
CONVENTIONS = ("single", "scaled-sum", "mean")  # one backward; N calls of loss/N; N unscaled calls
LAST_N = 10


def loss_frame(frames: list[dict]) -> tuple[pd.DataFrame, int]:
    """(one row per recorded backward, values lost) of one process's ``losses`` frames
    (:attr:`commprof.analysis.host.capture_events.CaptureEvents.losses`)."""
    rows, lost = [], 0
    for e in frames:
        lost += int(e.get("lost") or 0)
        t, step, value = e.get("t") or [], e.get("step") or [], e.get("value") or []
        scale = e.get("scale") or [None] * len(value)  # captures before the scale was recorded
        if len(t) == len(step) == len(value) == len(scale):
            rows.append(pd.DataFrame({"step": step, "t": t, "value": value,
                                      "scale": [np.nan if x is None else x for x in scale]}))
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in LOSS_COLUMNS}), lost
    return pd.concat(rows, ignore_index=True).astype(
        {"step": "int64", "t": "int64", "value": "float64", "scale": "float64"}), lost


def step_losses(frame: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """One rank's (or several ranks', with a ``rank`` column) loss per step, and the convention
    detected.  A step with one backward call: its value ("single").  With N > 1 calls each of
    which divided its loss by N (``scale`` within 1 % of N): the sum of the values, the loss whose
    gradient the job applies ("scaled-sum").  Otherwise the mean of the values ("mean": unscaled
    micro-batch losses, whose gradients the job sums).  The convention named is the one of most
    accumulating steps ("single" when none accumulates)."""
    keys = [c for c in ("rank", "step") if c in frame.columns]
    d = frame.assign(scale=frame["scale"] if "scale" in frame.columns else np.nan)
    g = d.groupby(keys, as_index=False).agg(n=("value", "size"), total=("value", "sum"),
                                            mean=("value", "mean"),
                                            scaled=("scale", lambda x: bool(len(x)) and bool(
                                                np.all(np.abs(x.to_numpy() - len(x)) <= 0.01 * len(x)))))
    summed = (g["n"] > 1) & g["scaled"]
    g["value"] = np.where(summed, g["total"], g["mean"])
    many = g["n"] > 1
    if not many.any():
        convention = "single"
    else:
        convention = "scaled-sum" if summed[many].mean() >= 0.5 else "mean"
    return g[keys + ["value"]], convention


def fix_events(fixes: list[dict]) -> list[dict]:
    """The process's ``fix`` events (:attr:`~commprof.analysis.host.capture_events.CaptureEvents.fixes`),
    the last word per fix."""
    last: dict[str, dict] = {}
    for e in fixes:
        last[str(e["fix"])] = e
    return list(last.values())


def loss_curve(per_rank: list[tuple[int, pd.DataFrame]], lost: int = 0) -> dict | None:
    """The document's ``training.loss``: per step, the mean over ranks of each rank's step mean."""
    frames = [f.assign(rank=r) for r, f in per_rank if f is not None and len(f)]
    if not frames:
        return None
    d = pd.concat(frames, ignore_index=True)
    d = d[np.isfinite(d["value"])]
    if not len(d):
        return None
    by_rank, convention = step_losses(d)
    curve = by_rank.groupby("step")["value"].agg(["mean", "size"]).reset_index()
    return {"steps": curve["step"].astype(int).tolist(), "values": curve["mean"].astype(float).tolist(),
            "ranks": int(by_rank["rank"].nunique()), "final": float(curve["mean"].iloc[-1]),
            "lost": int(lost), "source": "backward", "convention": convention}


def metric_events(frames: list[dict]) -> list[dict]:
    """The process's ``metric`` frames (``commprof.metric``; :attr:`~commprof.analysis.
    capture_events.CaptureEvents.metrics`): name, step, t, value, higher_is_better."""
    return [{"name": str(e["name"]), "step": int(e.get("step") or 0), "t": int(e.get("t") or 0),
             "value": float(e["value"]), "higher_is_better": bool(e.get("higher_is_better"))}
            for e in frames if e.get("name") is not None
            and isinstance(e.get("value"), (int, float))]


def metric_table(per_rank: list[tuple[int, list[dict]]]) -> list[dict]:
    """The document's ``training.metrics``: per name, per step the mean over the ranks that
    reported it (often rank 0 alone), and whether higher is better (the job's word)."""
    rows = [dict(e, rank=r) for r, events in per_rank for e in events or []]
    if not rows:
        return []
    d = pd.DataFrame(rows)
    d = d[np.isfinite(d["value"])]
    out = []
    for name, g in d.groupby("name", sort=True):
        by_step = g.groupby("step")["value"].mean()
        out.append({"name": str(name), "steps": by_step.index.astype(int).tolist(),
                    "values": by_step.astype(float).tolist(), "ranks": sorted(int(r) for r in g["rank"].unique()),
                    "higher_is_better": bool(g["higher_is_better"].iloc[-1]),
                    "final": float(by_step.iloc[-1])})
    return out


def fix_table(per_rank: list[tuple[int, list[dict]]]) -> list[dict]:
    """The document's ``training.fixes``: per fix and status, the ranks it had it."""
    rows: dict[tuple, dict] = {}
    for rank, events in per_rank:
        for e in events:
            key = (e["fix"], e.get("status"), e.get("why"))
            row = rows.setdefault(key, {"fix": e["fix"], "status": e.get("status"), "why": e.get("why"),
                                        "changes": e.get("changes"), "ranks": []})
            row["ranks"].append(int(rank))
    return [dict(r, ranks=sorted(r["ranks"])) for r in rows.values()]


def compare_losses(base: dict | None, other: dict | None, last_n: int = LAST_N) -> dict | None:
    """Convergence of ``other`` against ``base`` (both ``training.loss``), over their common steps:
    final losses, the mean of |other − base| ÷ |base| over the last ``last_n`` common steps, and
    the first step at which ``other`` reaches ``base``'s final loss (None: never)."""
    if not base or not other:
        return None
    b = pd.Series(base["values"], index=base["steps"], dtype="float64")
    o = pd.Series(other["values"], index=other["steps"], dtype="float64")
    common = b.index.intersection(o.index).sort_values()
    if not len(common):
        return None
    tail = common[-last_n:]
    denom = b[tail].abs().where(b[tail].abs() > 0)
    rel = ((o[tail] - b[tail]).abs() / denom).dropna()
    target = float(b[common].iloc[-1])
    reached = o[common][o[common] <= target]
    return {"final_base": target, "final": float(o[common].iloc[-1]),
            "mean_rel_diff_last_n": float(rel.mean()) if len(rel) else None, "last_n": int(len(tail)),
            "steps_to_base_final": int(reached.index[0]) if len(reached) else None,
            "common_steps": int(len(common))}


def capture_path(last: dict | None) -> str | None:
    """Which c10d kernel recorded this process (its last ``capture_path`` event: "python",
    "native"), or None for captures written before the event existed."""
    return str(last.get("path")) if last else None
