"""Series identities and the emit callback that sources write through."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

COUNTER = "counter"  # cumulative: the analysis differentiates it
GAUGE = "gauge"  # an instantaneous value


@dataclass(frozen=True)
class Series:
    """One time series: ``source/device/metric`` in ``unit`` (``B``, ``packets``, ``ms``, ``%``, ...)."""

    source: str
    device: str
    metric: str
    unit: str
    kind: str = COUNTER
    note: str = ""  # e.g. "loopback"

    def describe(self, sid: int) -> dict:
        out = {"type": "series", "id": sid, "source": self.source, "device": self.device,
               "metric": self.metric, "unit": self.unit, "kind": self.kind}
        if self.note:
            out["note"] = self.note
        return out


Emit = Callable[[Series, float], None]


class Source(Protocol):
    """What the sampler asks of each source."""

    name: str
    period_s: float  # read at most this often (0: every tick)

    def status(self) -> dict:
        """``{"available": bool, "why": str | None, ...}``: why a column may be empty."""

    def read(self, emit: Emit) -> None:
        """Emit the current value of every series."""
