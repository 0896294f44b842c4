"""The loss of every step, with no code change: the tensor the job passes to ``backward()``.

``StepHooks`` already wraps ``torch.autograd.backward`` (``Tensor.backward`` calls it); it hands
the first argument to :meth:`LossTap.on_backward`.  A one-element floating-point tensor is a loss:
on the CPU its value is read at once (no device involved); on a GPU it is copied non-blocking into
pinned memory with an event behind it and read once the event has completed (a later step's
backward or the flush) — never with a device sync.  Values leave as ``losses`` JSON frames
(``{"type": "losses", "t": [...], "step": [...], "value": [...]}``; ``step``: the steps ended when
that backward began, i.e. the index of the step it belongs to; ``scale``: N when the tensor is the
job's loss divided by a constant N — ``loss / N`` or ``loss * (1/N)``, read from its ``grad_fn``
before backward runs; null otherwise: gradient accumulation's 1/N convention, docs/try.md).
Standard library + torch only.
"""
from __future__ import annotations

import threading

_MAX_PENDING = 64  # GPU copies in flight before the oldest is dropped (counted as lost)


class LossTap:
    """Collects loss values for one process.  ``steps()`` gives the steps ended so far."""

    def __init__(self, rec, torch_module, steps):
        self.rec = rec
        self.torch = torch_module
        self.steps = steps
        self.t: list[int] = []
        self.step: list[int] = []
        self.value: list[float] = []
        self.scale: list[float | None] = []
        self.pending: list[tuple] = []  # (t, step, pinned tensor, event)
        self.lost = 0
        self.non_scalar = 0  # backward calls on tensors that are not a loss (not counted as steps)
        self._lock = threading.Lock()  # pending is read by the training thread and the flusher

    def on_backward(self, args) -> None:
        first = args[0] if args else None
        if isinstance(first, (list, tuple)):
            first = first[0] if len(first) == 1 else None
        torch = self.torch
        if not isinstance(first, torch.Tensor) or not first.is_floating_point() or first.numel() != 1:
            self.non_scalar += 1
            return
        t, step = self.rec.clock(), self.steps()
        scale = divisor(first)
        loss = first.detach()
        if loss.device.type == "cpu":
            self._add(t, step, float(loss), scale)
            return
        self._collect()
        buf = torch.empty((), dtype=torch.float32, pin_memory=True)
        buf.copy_(loss.reshape(()).float(), non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        with self._lock:
            self.pending.append((t, step, buf, event, scale))
            if len(self.pending) > _MAX_PENDING:
                self.pending.pop(0)
                self.lost += 1

    def _add(self, t: int, step: int, value: float, scale: float | None) -> None:
        self.t.append(t)
        self.step.append(step)
        self.value.append(value)
        self.scale.append(scale)

    def _collect(self, final: bool = False) -> None:
        """Read the GPU copies whose events completed (all of them at the final flush)."""
        with self._lock:
            self._collect_locked(final)

    def _collect_locked(self, final: bool) -> None:
        while self.pending:
            t, step, buf, event, scale = self.pending[0]
            if not final and not event.query():
                break
            if final:
                event.synchronize()  # at exit only: the job has finished its work
            self.pending.pop(0)
            self._add(t, step, float(buf), scale)

    def flush(self) -> None:
        """The flusher's hook: move collected values into one ``losses`` frame."""
        self._collect(final=self.rec.closing)
        n = len(self.value)
        if not n and not self.lost:
            return
        t, step, value, scale = self.t[:n], self.step[:n], self.value[:n], self.scale[:n]
        del self.t[:n], self.step[:n], self.value[:n], self.scale[:n]
        self.rec.json.append({"type": "losses", "t": t, "step": step, "value": value,
                              "scale": scale, "lost": self.lost})
        self.lost = 0


_SCALE_OPS = {"DivBackward0": False, "DivBackward1": False, "MulBackward0": True, "MulBackward1": True}


def divisor(loss) -> float | None:
    """N when ``loss`` is a tensor divided by a constant N (``loss / N``, or ``loss * (1/N)`` with
    0 < 1/N < 1): its ``grad_fn`` is a division or multiplication whose other operand is a
    one-element CPU tensor or number that does not require grad.  None otherwise (never reads a
    device tensor: no synchronization)."""
    fn = getattr(loss, "grad_fn", None)
    inverse = _SCALE_OPS.get(type(fn).__name__) if fn is not None else None
    if inverse is None:
        return None
    try:
        other = fn._saved_other
    except (AttributeError, RuntimeError):
        return None
    if hasattr(other, "device"):
        if other.device.type != "cpu" or other.numel() != 1 or other.requires_grad:
            return None
        other = float(other)
    if not isinstance(other, (int, float)) or other <= 0:
        return None
    if inverse:
        return 1.0 / other if other < 1 else None
    return float(other) if other > 1 else None
