"""What a run's captures say about its training, beyond its report (``commprof try``'s checks,
docs/try.md): the bytes of each op per measured step (all of its calls, and those issued in
backward: a DDP model's gradient all-reduces), the gradient all-reduces per step (DDP's buckets),
the backend, every fix event as the worker wrote it (PowerSGD's ``bytes_ratio``), each rank's
loss over the last steps, and the DDP model's gradient shapes (``ddp_model``: the first
``ddp_model`` event of the lowest rank's capture, commprof/fixes/model_shapes.py).

:func:`run_facts` returns a plain dict (``FACTS_KEYS``); ``None`` values are unknown.  Measured
steps are the report's (its ``steps.per_step`` rows), so the bytes agree with its KPIs.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from commprof.analysis.result.model import Report
from commprof.errors import CommprofError

LAST_N = 10  # the steps each rank's final loss is averaged over (analysis/host/training.py's N)
FACTS_KEYS = ("backend", "measured_steps", "last_step", "max_steps_exit", "ops", "ddp", "fsdp", "ddp_buckets",
              "gradient_bytes", "fixes", "loss_by_rank", "ddp_model")


def run_facts(run: str | Path, report: Report) -> dict | None:
    """The facts of the run directory ``run`` whose report is ``report``; None when ``run``
    is not a run directory (a saved report, a baseline file, profiler traces)."""
    from commprof.analysis.outcome import frames
    from commprof.analysis.host import load
    p = Path(run)
    if not p.is_dir():
        return None
    try:
        data = load.load_run(p)
    except (CommprofError, OSError):
        return None
    from commprof.format.schema import SPAN_BACKWARD
    calls = frames.build_calls(data)
    measured = sorted({int(r.step) for r in report.steps.per_step or []})
    backward_seen = bool(len(data.spans)) and bool((data.spans["kind"] == SPAN_BACKWARD).any())
    return {
        "backend": _backend(data, report),
        "measured_steps": len(measured),
        "last_step": _last_step(data),
        "max_steps_exit": _max_steps_exit(data),
        **op_bytes_per_step(calls, measured, backward_seen),
        "fixes": _fix_events(data),
        "loss_by_rank": loss_by_rank(data.losses),
        "ddp_model": ddp_model(p),
    }


def op_bytes_per_step(calls, measured: list[int], backward_seen: bool = True) -> dict:
    """``ops``: op -> {"bytes", "backward"}: the mean over ranks of that rank's bytes of the op
    per measured step (all calls; those issued in backward); ``ddp``: all-reduces were issued in
    backward (gradients) anywhere in the run — None (unknown) when there were all-reduces but
    ``backward_seen`` is False (no backward span recorded: the flag cannot be trusted);
    ``fsdp``: reduce_scatter in backward (FSDP's gradients);
    ``ddp_buckets``: the median over ranks and measured steps of all_reduce calls in backward;
    ``gradient_bytes``: their bytes per step."""
    out = {"ops": {}, "ddp": None, "fsdp": None, "ddp_buckets": None, "gradient_bytes": None}
    if calls is None:
        return out
    ops, back = calls["op"].astype(str), calls["in_backward"].astype(bool)
    out["ddp"] = bool(((ops == "all_reduce") & back).any())  # over the whole run, steps or not
    if not out["ddp"] and not backward_seen and (ops == "all_reduce").any():
        out["ddp"] = None
    out["fsdp"] = bool(((ops == "reduce_scatter") & back).any())
    if not measured:
        return out
    step = calls["step"].astype("float64").to_numpy()
    c = calls[np.isin(step, measured)]
    ranks = sorted(set(calls["rank"].astype(int)))
    if not ranks:
        return out
    n = len(measured)
    for op, g in c.groupby("op", observed=True):
        back = g[g["in_backward"].astype(bool)]
        out["ops"][str(op)] = {
            "bytes": float(g["bytes"].sum()) / n / len(ranks),
            "backward": float(back["bytes"].sum()) / n / len(ranks)}
    grads = c[(c["op"].astype(str) == "all_reduce") & c["in_backward"].astype(bool)]
    if len(grads):
        per = grads.groupby(["rank", "step"], observed=True).size()
        counts = per.reindex([(r, s) for r in ranks for s in measured], fill_value=0)
        out["ddp_buckets"] = int(np.median(counts.to_numpy()))
        out["gradient_bytes"] = out["ops"]["all_reduce"]["backward"]
    return out


def loss_by_rank(losses) -> dict | None:
    """Rank -> the mean of its step losses over its last ``LAST_N`` recorded steps."""
    if losses is None or not len(losses):
        return None
    by = losses[np.isfinite(losses["value"])].groupby(["rank", "step"])["value"].mean()
    out = {}
    for rank, series in by.groupby(level=0):
        out[int(rank)] = float(series.sort_index().iloc[-LAST_N:].mean())
    return out or None


def _backend(data, report: Report) -> str | None:
    groups = data.groups
    if len(groups):
        default = groups[groups["desc"].astype(str) == "default_pg"]
        pick = default if len(default) else groups
        value = pick["backend"].dropna()
        if len(value):
            return str(value.iloc[0]).lower()
    backend = report.run.backend
    return str(backend).lower() if backend else None


def _last_step(data) -> int | None:
    if data.losses is not None and len(data.losses):
        return int(data.losses["step"].max())
    return None


def _max_steps_exit(data) -> bool:
    """``--max-steps`` ended the processes (inside the last optimizer step's post-hooks: hooks
    registered after commprof's, such as local SGD's averaging, did not run for that step)."""
    reasons = data.processes["exit_reason"] if "exit_reason" in data.processes else []
    return any(str(r) == "max_steps" for r in reasons)


def _fix_events(data) -> list[dict]:
    events = []
    if "fixes" in data.processes:
        for rank, fixes in zip(data.processes["rank"], data.processes["fixes"]):
            for e in fixes if isinstance(fixes, list) else []:
                events.append(dict(e, rank=int(rank)))
    return events


def ddp_model(run: Path) -> dict | None:
    """The first ``ddp_model`` event (the DDP model's gradient shapes) of the lowest rank's
    capture file that has one, or None (no DDP model, or captured before commprof recorded it)."""
    from commprof.format import reader
    for path in sorted(Path(run).glob("ranks/*.cpf")):
        try:
            events = reader.read_capture(path, within=Path(run)).events
        except (CommprofError, OSError):
            continue
        found = next((e for e in events if e.get("event") == "ddp_model"), None)
        if found is not None:
            return found
    return None
