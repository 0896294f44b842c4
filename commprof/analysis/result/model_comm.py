"""The report document's ``gpu_comm`` section: which GPU kernels were counted as communication,
and by which rule (commprof/analysis/gpu/comm_kernels.py).  Typed like the rest of the document: see
:mod:`commprof.analysis.result.model`."""
from __future__ import annotations

from dataclasses import dataclass

from commprof.format.typed import Model, key


@dataclass(kw_only=True)
class CommRuleRow(Model):
    """How many GPU kernels one rule counted as communication (docs/kpis.md, "GPU timeline")."""

    rule: str = key('"launched_by_comm_op", "collective_args" or "kernel_name"')
    kernels: int = key("all ranks")
    time_s: float = key("their summed durations, all ranks")


@dataclass(kw_only=True)
class CommKernelRow(Model):
    """One kernel name counted as communication, by one rule."""

    name: str = key("the kernel's name as the trace writes it")
    rule: str = key()
    via: str | None = key("the launching CPU range, the collective's name or the name family")
    op: str = key('the op it ran ("unknown" where neither the range nor the name says)')
    kernels: int = key("all ranks")
    time_s: float = key("summed durations, all ranks")
    ranks: int = key()


@dataclass(kw_only=True)
class GpuComm(Model):
    """Which kernels of the GPU timeline were counted as communication, and by which rule."""

    rules: list[CommRuleRow] = key()
    kernels: list[CommKernelRow] = key()
