"""commprof: is communication what slows your distributed training down, how much, and what to do.

Public API (safe to call whether or not the process runs under ``commprof run``):

* :func:`step` — mark the end of a training step (jobs without an optimizer, or custom loops);
* :func:`load_run` — a run directory as lazy pandas frames (calls, waits, steps, ranks, ops, links,
  gpu_kernels, hang; docs/data.md).
"""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["step", "step_scope", "load_run", "__version__"]


def step() -> None:
    """Mark the end of one training step.  A no-op outside ``commprof run``.

    Optimizer steps are detected automatically; call this when there is no optimizer, or when a
    "step" of yours is not one optimizer step.  Once called, explicit marks define the steps.
    """
    from commprof.capture import agent
    agent.step()


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
    :class:`~commprof.analysis.frames.Run`: documented pandas frames (docs/data.md), each read on
    first access.  ``warmup``: each rank's first steps left out of ``steps.measured`` (as
    ``commprof report --warmup``)."""
    from commprof.analysis.frames import Run
    return Run(path, warmup=warmup)
