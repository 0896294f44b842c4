"""A fake NVML binding (the ``pynvml`` API subset commprof uses), for machines without a GPU.

Injected through commprof's documented seam, ``COMMPROF_NVML_MODULE=fakes.fake_pynvml`` (or by
passing the module to ``NvmlSource``).  Two GPUs: GPU 0 has NVLink, whose cumulative TX/RX KiB
counters advance by ``NVLINK_KIB_PER_READ`` at every read, and answers the all-links scope;
GPU 1 has no NVLink (field values return NOT_SUPPORTED) and no utilisation counter.
Set ``FAIL_INIT`` to make nvmlInit raise like a machine without the driver.
"""
from __future__ import annotations

from types import SimpleNamespace

NVML_SUCCESS, NVML_ERROR_NOT_SUPPORTED = 0, 3
NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX, NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX = 138, 139
NVLINK_KIB_PER_READ = {138: 1000, 139: 2000}
PCIE_KBPS = {0: 300, 1: 700}  # TX, RX
FAIL_INIT = False
calls: list[str] = []  # every API call, so tests can check that nothing but getters ran


class NVMLError(Exception):
    def __init__(self, value):
        self.value = value
        super().__init__({3: "Not Supported", 9: "Driver Not Loaded"}.get(value, f"error {value}"))


_counters = {}


def nvmlInit():
    calls.append("nvmlInit")
    if FAIL_INIT:
        raise NVMLError(9)


def nvmlShutdown():
    calls.append("nvmlShutdown")


def nvmlSystemGetDriverVersion():
    return b"550.54.15"


def nvmlSystemGetCudaDriverVersion():
    return 12040


def nvmlDeviceGetCount():
    return 2


def nvmlDeviceGetHandleByIndex(i):
    return SimpleNamespace(index=i)


def nvmlDeviceGetName(h):
    return b"Fake H100" if h.index == 0 else "Fake T4"


def nvmlDeviceGetFieldValues(h, fields):
    calls.append("nvmlDeviceGetFieldValues")
    out = []
    for field, scope in fields:
        if h.index != 0 or scope != 0xFFFFFFFF:
            out.append(SimpleNamespace(nvmlReturn=NVML_ERROR_NOT_SUPPORTED, value=SimpleNamespace(ullVal=0)))
            continue
        _counters[field] = _counters.get(field, 0) + NVLINK_KIB_PER_READ[field]
        out.append(SimpleNamespace(nvmlReturn=NVML_SUCCESS, value=SimpleNamespace(ullVal=_counters[field])))
    return out


def nvmlDeviceGetPcieThroughput(h, counter):
    calls.append("nvmlDeviceGetPcieThroughput")
    return PCIE_KBPS[counter]


def nvmlDeviceGetUtilizationRates(h):
    calls.append("nvmlDeviceGetUtilizationRates")
    if h.index == 1:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    return SimpleNamespace(gpu=87, memory=40)


def reset():
    _counters.clear()
    calls.clear()
