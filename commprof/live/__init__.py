"""Watching a running job: ``commprof run --live`` and the Prometheus exporter.

Everything runs in the ``commprof run`` process, from the files the workers and the node sampler
already write (nothing is added inside the workers):

* :mod:`commprof.live.rankstate` — one capture followed live: a bounded buffer plus sealed totals;
* :mod:`commprof.live.aggregator` — every capture and the sampler tailed; snapshots of the KPIs,
  computed with the report's functions (docs/kpis.md);
* :mod:`commprof.live.panel` — the rich panel, and the one-line form without a terminal;
* :mod:`commprof.live.exporter` — Prometheus metrics over HTTP and as a node_exporter textfile;
* :mod:`commprof.live.monitor` — the tick that ties them together.

Layers: ``live`` imports ``analysis`` and ``format``; ``cli`` wires it into ``commprof run``.
"""
