"""The typed model of the report's ``kpis`` section, derived from the KPI registry
(:mod:`commprof.analysis.measures.kpi_registry`): one field per :class:`~commprof.analysis.measures.kpi_registry.Kpi`,
with its JSON type and schema description, so a KPI declared there is in the model and in
``docs/report-schema.json`` without a line here.

Field order is the published schema's: the keys every ``commprof.report/1`` document has
(``Kpi.required``) first, then those added later, each in registry order; ``HostKpis`` holds the
host-side ones (``Kpi.host_side``) in registry order, optional unless in :data:`HOST_KPIS_FIRST`.
"""
from __future__ import annotations

import dataclasses

from commprof.analysis.measures import kpi_registry as registry
from commprof.format.typed import Model, key, optional

__all__ = ["Kpis", "HostKpis"]


# The keys of kpis.host as first published: every document with kpis.host has them; host-side
# KPIs declared since are optional there (the contract only adds keys).
HOST_KPIS_FIRST = ("step_time_s", "comm_fraction", "exposed_comm_fraction", "comm_fraction_max_rank",
                   "exposed_comm_fraction_max_rank", "comm_fraction_step_median",
                   "exposed_comm_fraction_step_median", "comm_fraction_step_p90",
                   "exposed_comm_fraction_step_p90", "comm_s_per_step", "exposed_comm_s_per_step",
                   "hidden_comm_s_per_step", "compute_s_per_step", "comm_fraction_wall",
                   "exposed_comm_fraction_wall", "algbw_gbps", "busbw_gbps")


def _json_type(k: registry.Kpi) -> type:
    base = str if k.unit == "label" else float
    return base | None if k.nullable else base


def _model(name: str, doc: str, fields: list[tuple]) -> type:
    cls = dataclasses.make_dataclass(name, fields, bases=(Model,), kw_only=True,
                                     namespace={"__doc__": doc, "__module__": __name__})
    cls.__qualname__ = name
    return cls


HostKpis = _model(
    "HostKpis",
    "The host clocks' figures of a run whose headline stands on the GPU timeline, or of an NCCL\n"
    "run without one (``kpis.time_basis`` not ``host``): the same KPIs, host-side.",
    [(k.name, _json_type(k), (key if k.name in HOST_KPIS_FIRST else optional)(k.host_doc))
     for k in registry.host_side()])

Kpis = _model(
    "Kpis", "The three KPIs and their whole-run variants (docs/kpis.md).",
    [(k.name, _json_type(k), key(k.schema_doc)) for k in registry.KPIS if k.required]
    + [(k.name, _json_type(k), optional(k.schema_doc)) for k in registry.KPIS if not k.required]
    + [("host", HostKpis | None, optional("the host-side figures when time_basis is not host"))])
