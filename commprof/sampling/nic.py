"""Network interfaces: cumulative bytes and packets, both directions (psutil)."""
from __future__ import annotations

from commprof.sampling.series import Emit, Series

_METRICS = (("bytes_sent", "tx_bytes", "B"), ("bytes_recv", "rx_bytes", "B"),
            ("packets_sent", "tx_packets", "packets"), ("packets_recv", "rx_packets", "packets"))


def is_loopback(name: str) -> bool:
    return name == "lo" or name.startswith("lo:") or name.lower().startswith("loopback")


class NicSource:
    """Every interface psutil sees in this network namespace."""

    name = "nic"
    period_s = 0.0

    def __init__(self, psutil_module=None):
        if psutil_module is None:
            import psutil as psutil_module
        self._psutil = psutil_module
        self._series: dict[tuple[str, str], Series] = {}

    def status(self) -> dict:
        try:
            names = sorted(self._psutil.net_io_counters(pernic=True))
        except OSError as exc:
            return {"available": False, "why": f"psutil.net_io_counters: {exc}"}
        return {"available": bool(names), "why": None if names else "no interfaces",
                "interfaces": names}

    def read(self, emit: Emit) -> None:
        for nic, c in self._psutil.net_io_counters(pernic=True).items():
            for attr, metric, unit in _METRICS:
                key = (nic, metric)
                s = self._series.get(key)
                if s is None:
                    s = self._series[key] = Series("nic", nic, metric, unit,
                                                   note="loopback" if is_loopback(nic) else "")
                emit(s, float(getattr(c, attr)))
