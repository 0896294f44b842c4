"""What a DDP model's gradients look like, recorded in every run (so that a fix that depends on
them, PowerSGD, can be projected from a baseline that did not run it; docs/try.md,
"Projections").

``DistributedDataParallel.__init__`` is wrapped once per process; after each construction (the
first :data:`MAX_MODELS`) one ``ddp_model`` event is written::

    {"type": "event", "event": "ddp_model", "device": "cpu", "bucket_cap_mb": 25.0,
     "params": [{"shape": [512, 256], "element_size": 4, "count": 1}, ...]}

``params``: the parameters DDP reduces (``requires_grad``), identical shapes counted together
(in order of first appearance).  A failure is recorded through ``degrade`` and never raised
into the job; the job's DDP runs unchanged.
"""
from __future__ import annotations

import functools

MAX_MODELS = 4  # events per process (a job that builds DDP models in a loop writes no more)
MAX_SHAPES = 512  # distinct shapes kept per model (the event stays small)


def shape_rows(params) -> list[dict]:
    """The distinct (shape, element size) of ``params`` with their counts, in first-seen order."""
    rows: dict[tuple, dict] = {}
    for p in params:
        key = (tuple(int(d) for d in p.shape), int(p.element_size()))
        row = rows.get(key)
        if row is None:
            if len(rows) >= MAX_SHAPES:
                continue
            row = rows[key] = {"shape": list(key[0]), "element_size": key[1], "count": 0}
        row["count"] += 1
    return list(rows.values())


def model_event(ddp) -> dict:
    """The ``ddp_model`` event of one DDP instance."""
    params = [p for p in ddp.module.parameters() if p.requires_grad]
    cap = getattr(ddp, "bucket_bytes_cap", None)
    return {"type": "event", "event": "ddp_model", "params": shape_rows(params),
            "device": str(params[0].device.type) if params else None,
            "bucket_cap_mb": float(cap) / 2 ** 20 if cap else None}


def install(torch_module, emit, degrade) -> None:
    """Wrap ``DistributedDataParallel.__init__`` to emit :func:`model_event` after it."""
    DDP = torch_module.nn.parallel.DistributedDataParallel
    original = DDP.__init__
    seen = {"n": 0}

    @functools.wraps(original)
    def __init__(ddp, *args, **kwargs):
        original(ddp, *args, **kwargs)
        if seen["n"] >= MAX_MODELS:
            return
        seen["n"] += 1
        try:
            emit(model_event(ddp))
        except Exception as exc:  # noqa: BLE001 - recorded, never raised into the job
            degrade("fixes.model_shapes", exc)

    DDP.__init__ = __init__
