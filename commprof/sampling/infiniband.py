"""InfiniBand / RoCE port counters from sysfs.

``/sys/class/infiniband/<dev>/ports/<port>/counters/port_{xmit,rcv}_data`` count in units of
4 bytes (lanes of 32-bit words); emitted here already multiplied by 4, in bytes.
"""
from __future__ import annotations

import os

from commprof.sampling.series import Emit, Series

DEFAULT_ROOT = "/sys/class/infiniband"
_FILES = (("port_xmit_data", "tx_bytes", 4), ("port_rcv_data", "rx_bytes", 4),
          ("port_xmit_packets", "tx_packets", 1), ("port_rcv_packets", "rx_packets", 1))


class InfinibandSource:
    """Every port of every InfiniBand/RoCE device under ``root``."""

    name = "infiniband"
    period_s = 0.0

    def __init__(self, root: str = DEFAULT_ROOT):
        self.root = root
        self._ports = self._discover()

    def _discover(self) -> list[tuple[str, str, str]]:
        ports = []
        try:
            devices = sorted(os.listdir(self.root))
        except OSError:
            return ports
        for dev in devices:
            pdir = os.path.join(self.root, dev, "ports")
            try:
                for port in sorted(os.listdir(pdir)):
                    cdir = os.path.join(pdir, port, "counters")
                    if os.path.isdir(cdir):
                        ports.append((dev, port, cdir))
            except OSError:
                continue
        return ports

    def status(self) -> dict:
        if not self._ports:
            return {"available": False, "why": f"no InfiniBand/RoCE device under {self.root}"}
        return {"available": True, "why": None,
                "ports": [f"{d}/{p}" for d, p, _ in self._ports],
                "rtt": "not sampled: RTT is read from TCP sockets only"}

    def read(self, emit: Emit) -> None:
        for dev, port, cdir in self._ports:
            for fname, metric, scale in _FILES:
                try:
                    with open(os.path.join(cdir, fname)) as fh:
                        value = int(fh.read().strip())
                except (OSError, ValueError):
                    continue
                emit(Series("infiniband", f"{dev}/{port}", metric,
                            "B" if metric.endswith("bytes") else "packets"), float(value * scale))
