"""commprof: is communication what slows your distributed training down, how much, and what to do.

Public API (safe to call whether or not the process runs under ``commprof run``):

* :func:`step` — mark the end of a training step (jobs without an optimizer, or custom loops);
* :func:`metric` — record a value ``commprof try`` should judge by (e.g. held-out accuracy);
* :func:`train_steps` — the steps to train for, shortened by ``commprof try --steps``;
* :func:`load_run` — a run directory as lazy pandas frames (calls, waits, steps, ranks, ops, links,
  gpu_kernels, hang; docs/data.md).
"""
from __future__ import annotations

from commprof._version import __version__

__all__ = ["step", "step_scope", "metric", "train_steps", "load_run", "__version__"]


def step() -> None:
    """Mark the end of one training step.  A no-op outside ``commprof run``.

    Optimizer steps are detected automatically; call this when there is no optimizer, or when a
    "step" of yours is not one optimizer step.  Once called, explicit marks define the steps.
    """
    from commprof.capture import agent
    agent.step()


def metric(name: str, value, higher_is_better: bool = False) -> None:
    """Record ``value`` of the metric ``name`` (a number or a one-element tensor) at the current
    step: e.g. ``commprof.metric("val_acc", acc, higher_is_better=True)`` after an evaluation.
    ``commprof try`` judges fixes by the last metric recorded, instead of the training loss.
    A no-op outside ``commprof run``; never raises into the job (a value that is not a number is
    recorded as a capture problem).  A GPU tensor is read with ``.item()`` (a synchronization:
    call it where the job already has the value on the host)."""
    from commprof.capture import agent
    agent.metric(name, value, higher_is_better)


def train_steps(requested: int) -> int:
    """The number of training steps to run: ``requested``, or N under ``commprof try --steps N``
    (``commprof run --max-steps N``).  A job that loops over ``range(commprof.train_steps(n))``
    stops training itself at N and still runs its evaluation after the loop; a job that does not
    call it is ended at step N (docs/try.md).  Outside ``commprof run``: ``requested``."""
    from commprof.capture import agent
    return agent.train_steps(requested)


class step_scope:
    """Context manager around one training step: ``with commprof.step_scope(): train_one_step()``.

    Entering marks the step's start and leaving marks its end (like :func:`step`), so time spent
    outside the ``with`` block belongs to no step.  A no-op outside ``commprof run``.
    """

    def __enter__(self):
        from commprof.capture import agent
        agent.step_begin()
        return self

    def __exit__(self, *exc) -> bool:
        step()
        return False


def load_run(path=None, warmup: int = 2):
    """A run directory (default: the latest under ./commprof-runs) as a
    :class:`~commprof.analysis.outcome.frames.Run`: documented pandas frames (docs/data.md), each read on
    first access.  ``warmup``: each rank's first steps left out of ``steps.measured`` (as
    ``commprof report --warmup``)."""
    from commprof.analysis.outcome.frames import Run
    return Run(path, warmup=warmup)
