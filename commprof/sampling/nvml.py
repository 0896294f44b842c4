"""GPUs through NVML: NVLink TX/RX, PCIe TX/RX, utilisation.  Read-only: no device setting is
ever changed.

Seam: the NVML binding is the ``pynvml`` module of the ``nvidia-ml-py`` distribution, or the
module named by ``COMMPROF_NVML_MODULE`` (tests inject a fake one there; this is the only
mocked part of commprof, because CI machines have no GPU).

* NVLink: ``nvmlDeviceGetFieldValues`` with ``NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX/RX`` (138/139,
  cumulative KiB).  ``scopeId = UINT_MAX`` asks for the sum over links; where a driver refuses
  that, links 0..17 are read one by one and summed.  Emitted in bytes (× 1024).
* PCIe: ``nvmlDeviceGetPcieThroughput`` (KB/s over a 20 ms window: a gauge), emitted in B/s.
* Utilisation: ``nvmlDeviceGetUtilizationRates().gpu`` in %.
"""
from __future__ import annotations

import importlib
import logging
import os

from commprof.sampling.series import GAUGE, Emit, Series

log = logging.getLogger("commprof.sampling")
FI_NVLINK_TX = 138  # NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX
FI_NVLINK_RX = 139  # NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX
ALL_LINKS = 0xFFFFFFFF  # scopeId: aggregate over links
MAX_LINKS = 18  # NVML_NVLINK_MAX_LINKS
PCIE_TX, PCIE_RX = 0, 1  # NVML_PCIE_UTIL_TX_BYTES / NVML_PCIE_UTIL_RX_BYTES


def load_nvml():
    """The NVML binding module (see the module docstring), or raise ImportError."""
    return importlib.import_module(os.environ.get("COMMPROF_NVML_MODULE") or "pynvml")


class _Gpu:
    def __init__(self, index: int, handle, name: str):
        self.index, self.handle, self.name = index, handle, name
        self.nvlink_scopes: list[int] | None = None  # scopeIds that answer
        self.pcie = False
        self.util = False
        self.why: dict[str, str] = {}


class NvmlSource:
    """Every GPU NVML lists on this node."""

    name = "nvml"
    period_s = 0.0

    def __init__(self, nvml=None):
        self._why = None
        self.gpus: list[_Gpu] = []
        self.system: dict = {}
        try:
            self.nv = nvml if nvml is not None else load_nvml()
        except ImportError as exc:
            self.nv, self._why = None, f"no NVML binding ({exc}); install nvidia-ml-py"
            return
        try:
            self.nv.nvmlInit()
            count = self.nv.nvmlDeviceGetCount()
        except Exception as exc:  # noqa: BLE001 - NVMLError_LibraryNotFound, DriverNotLoaded, ...
            self._why = f"no NVML ({_err(exc)})"
            return
        if count == 0:
            self._why = "NVML lists no GPU"
        self.system = {}
        for key, fn in (("driver_version", "nvmlSystemGetDriverVersion"),
                        ("cuda_driver_version", "nvmlSystemGetCudaDriverVersion")):
            try:
                value = getattr(self.nv, fn)()
                self.system[key] = value.decode() if isinstance(value, bytes) else value
            except Exception as exc:  # noqa: BLE001 - an older driver: unknown
                self.system[key] = None
                log.debug("%s: %s", fn, exc)
        for i in range(count):
            try:
                h = self.nv.nvmlDeviceGetHandleByIndex(i)
                name = self.nv.nvmlDeviceGetName(h)
            except Exception as exc:  # noqa: BLE001
                self._why = f"GPU {i}: {_err(exc)}"
                continue
            gpu = _Gpu(i, h, name.decode() if isinstance(name, bytes) else str(name))
            self._probe(gpu)
            self.gpus.append(gpu)

    def _probe(self, gpu: _Gpu) -> None:
        nv = self.nv
        scopes = None
        if self._field_ok(gpu, ALL_LINKS):
            scopes = [ALL_LINKS]
        else:
            links = [link for link in range(MAX_LINKS) if self._field_ok(gpu, link)]
            scopes = links or None
        gpu.nvlink_scopes = scopes
        if scopes is None:
            gpu.why["nvlink"] = "no NVLink on this GPU (throughput fields not supported)"
        try:
            nv.nvmlDeviceGetPcieThroughput(gpu.handle, PCIE_TX)
            gpu.pcie = True
        except Exception as exc:  # noqa: BLE001
            gpu.why["pcie"] = _err(exc)
        try:
            nv.nvmlDeviceGetUtilizationRates(gpu.handle)
            gpu.util = True
        except Exception as exc:  # noqa: BLE001
            gpu.why["utilization"] = _err(exc)

    def _field_ok(self, gpu: _Gpu, scope: int) -> bool:
        try:
            values = self.nv.nvmlDeviceGetFieldValues(gpu.handle, [(FI_NVLINK_TX, scope)])
        except Exception:  # noqa: BLE001 - an old driver without field values
            return False
        return len(values) == 1 and values[0].nvmlReturn == 0

    def status(self) -> dict:
        if self.nv is None or (self._why and not self.gpus):
            return {"available": False, "why": self._why}
        return {"available": True, "why": self._why, **self.system,
                "gpus": [{"index": g.index, "name": g.name,
                          "nvlink": g.nvlink_scopes is not None, "pcie": g.pcie,
                          "utilization": g.util, "why": g.why} for g in self.gpus]}

    def read(self, emit: Emit) -> None:
        nv = self.nv
        for g in self.gpus:
            dev = f"gpu{g.index}"
            if g.nvlink_scopes:
                fields = [(f, s) for s in g.nvlink_scopes for f in (FI_NVLINK_TX, FI_NVLINK_RX)]
                values = nv.nvmlDeviceGetFieldValues(g.handle, fields)
                tx = sum(v.value.ullVal for v, (f, _) in zip(values, fields)
                         if f == FI_NVLINK_TX and v.nvmlReturn == 0)
                rx = sum(v.value.ullVal for v, (f, _) in zip(values, fields)
                         if f == FI_NVLINK_RX and v.nvmlReturn == 0)
                emit(Series("nvlink", dev, "tx_bytes", "B"), float(tx * 1024))
                emit(Series("nvlink", dev, "rx_bytes", "B"), float(rx * 1024))
            if g.pcie:
                emit(Series("pcie", dev, "tx_rate", "B/s", GAUGE),
                     float(nv.nvmlDeviceGetPcieThroughput(g.handle, PCIE_TX)) * 1024)
                emit(Series("pcie", dev, "rx_rate", "B/s", GAUGE),
                     float(nv.nvmlDeviceGetPcieThroughput(g.handle, PCIE_RX)) * 1024)
            if g.util:
                emit(Series("gpu", dev, "utilization", "%", GAUGE),
                     float(nv.nvmlDeviceGetUtilizationRates(g.handle).gpu))

    def close(self) -> None:
        if self.nv is not None and self.gpus:
            try:
                self.nv.nvmlShutdown()
            except Exception as exc:  # noqa: BLE001 - shutting down a library we only read from
                log.debug("nvmlShutdown: %s", exc)


def _err(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
