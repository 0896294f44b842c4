"""Step boundaries and the spans that define exposed communication, without code changes.

* ``torch.optim`` global optimizer step post-hooks mark the end of each optimizer step;
* :func:`commprof.step` marks explicit boundaries (jobs without an optimizer, custom loops);
* ``torch.autograd.backward`` is wrapped to record backward spans (DDP's gradient all-reduces
  finish inside backward: its tail is where DDP exposes communication);
* ``init_process_group`` / ``destroy_process_group`` are wrapped to bound the whole-run window.
"""
from __future__ import annotations

import functools
import threading

from commprof.capture.recorder import Recorder
from commprof.capture import clocksync
from commprof.format import schema


class StepHooks:
    """Installs the step, backward and process-group hooks into one :class:`Recorder`."""

    def __init__(self, recorder: Recorder, collectives, torch_module):
        self.rec = recorder
        self.collectives = collectives  # CollectiveHooks or None: its in_backward is kept here
        self.torch = torch_module
        self.optimizers: dict[int, int] = {}  # id(optimizer) -> ordinal of first step
        self.explicit_steps = 0
        self.first_optimizer_steps = 0  # step() calls of optimizer ordinal 0 (the analysis' steps)
        self.on_boundary = None  # callable(source, steps ended, t): GPU windows' schedule
        self.on_backward = None  # callable(args of torch.autograd.backward): the loss tap
        self.max_steps = None  # --max-steps: on_max_steps() runs when that many steps ended
        self.on_max_steps = None

    def steps_ended(self) -> int:
        """Steps ended so far, counted as the analysis counts them (explicit steps win)."""
        return self.explicit_steps or self.first_optimizer_steps

    def _boundary(self, source: str, count: int, t: int) -> None:
        if self.on_boundary is not None:
            self.on_boundary(source, count, t)
        if self.max_steps is not None and count >= self.max_steps and self.on_max_steps is not None:
            if source == "explicit" or not self.explicit_steps:
                self.on_max_steps()

    def install(self) -> None:
        for name, fn in (("optimizer_hook", self._install_optimizer_hook),
                         ("backward", self._patch_backward),
                         ("process_group", self._patch_process_group)):
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - that part degrades, visibly
                self.rec.degrade(f"install.{name}", exc)

    # -- optimizer steps -------------------------------------------------------------------------
    def _install_optimizer_hook(self) -> None:
        from torch.optim.optimizer import register_optimizer_step_post_hook
        register_optimizer_step_post_hook(self._on_optimizer_step)

    def _on_optimizer_step(self, optimizer, args, kwargs) -> None:
        rec = self.rec
        if not rec.enabled:
            return
        t = rec.clock()
        try:
            ordinal = self.optimizers.get(id(optimizer))
            if ordinal is None:
                ordinal = self.optimizers[id(optimizer)] = len(self.optimizers)
            rec.wants_file = True  # first: the append then creates the file (format/region.py)
            rec.mark.append((schema.MARK_STEP_OPTIMIZER, t, ordinal))
        except Exception as exc:  # noqa: BLE001
            rec.degrade("optimizer_hook", exc)
            return
        if ordinal == 0:
            self.first_optimizer_steps += 1
            self._boundary("optimizer", self.first_optimizer_steps, t)

    def explicit_step(self) -> None:
        """Mark the end of a training step (``commprof.step()``)."""
        rec = self.rec
        if rec.enabled:
            self.explicit_steps += 1
            t = rec.clock()
            rec.wants_file = True
            rec.mark.append((schema.MARK_STEP_EXPLICIT, t, self.explicit_steps))
            self._boundary("explicit", self.explicit_steps, t)

    def explicit_begin(self) -> None:
        """Mark the start of a training step (``with commprof.step_scope():``)."""
        rec = self.rec
        if rec.enabled:
            rec.mark.append((schema.MARK_STEP_BEGIN, rec.clock(), self.explicit_steps + 1))

    # -- backward spans ----------------------------------------------------------------------------
    def _patch_backward(self) -> None:
        autograd = self.torch.autograd
        original = autograd.backward
        rec = self.rec
        clock = rec.clock
        hooks = self.collectives
        get_ident = threading.get_ident

        steps = self

        @functools.wraps(original)
        def backward(*args, **kwargs):
            t0 = clock()
            tap = steps.on_backward
            if tap is not None and rec.enabled:
                try:
                    tap(args if args else (kwargs.get("tensors"),))
                except Exception as exc:  # noqa: BLE001 - recorded, never raised
                    rec.degrade("loss", exc)
            if hooks is not None:
                hooks.in_backward += 1
            try:
                return original(*args, **kwargs)
            finally:
                if hooks is not None:
                    hooks.in_backward -= 1
                if rec.enabled:
                    rec.span.append((schema.SPAN_BACKWARD, get_ident(), t0, clock()))

        backward.__commprof_original__ = original
        autograd.backward = backward

    # -- process-group lifetime ----------------------------------------------------------------------
    def _patch_process_group(self) -> None:
        import torch.distributed as dist
        from torch.distributed import distributed_c10d
        modules = [distributed_c10d, dist]
        try:
            from torch.distributed import device_mesh
            modules.append(device_mesh)
        except ImportError:
            pass
        rec = self.rec
        clock = rec.clock
        torch = self.torch

        def init_marker(result, args, kwargs):
            rec.wants_file = True
            rec.mark.append((schema.MARK_PG_INIT, clock(), 0))
            clocksync.exchange(rec, torch, phase=0)

        def destroy_marker(result, args, kwargs):
            group = args[0] if args else kwargs.get("group")
            rec.mark.append((schema.MARK_PG_DESTROY, clock(), 0 if group is None else 1))

        def before_destroy(args, kwargs):
            group = args[0] if args else kwargs.get("group")
            if group is None or group is distributed_c10d.GroupMember.WORLD:
                clocksync.exchange(rec, torch, phase=1)

        for name, after, before in (("init_process_group", init_marker, None),
                                    ("destroy_process_group", destroy_marker, before_destroy)):
            original = getattr(distributed_c10d, name)
            wrapped = _wrap_after(original, after, rec, name, before)
            for mod in modules:
                if getattr(mod, name, None) is original:
                    setattr(mod, name, wrapped)


def _wrap_after(original, after, rec: Recorder, where: str, before=None):
    """``original`` that then calls ``after(result, args, kwargs)`` (and first ``before(args,
    kwargs)``, if given); their errors are recorded, never raised."""

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        if before is not None and rec.enabled:
            try:
                before(args, kwargs)
            except Exception as exc:  # noqa: BLE001
                rec.degrade(where + ".before", exc)
        result = original(*args, **kwargs)
        if rec.enabled:
            try:
                after(result, args, kwargs)
            except Exception as exc:  # noqa: BLE001
                rec.degrade(where, exc)
        return result

    wrapper.__commprof_original__ = original
    return wrapper
