"""The typed result: the report document ``commprof.report/1`` as classes (``model``: the document;
``model_sections``: links, cross-rank, what-if, training; ``model_kpis``: the headline KPIs, derived
from the KPI registry; ``model_comm``: the communication-kernel rule of traces).

``analysis.outcome.assemble`` builds one :class:`~commprof.analysis.result.model.Report` from a run's or
traces' summary; every renderer, ``gate`` and ``try`` read that object, and a saved report is parsed
back into the same class.  It imports only ``measures`` (the KPI registry) and the typed-JSON machinery
of ``commprof.format.typed``.
"""
