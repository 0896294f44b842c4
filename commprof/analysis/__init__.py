"""Analyses: pandas frames in, KPI frames and dataclasses out; no printing.

Six rooms, each a subpackage; a room imports only the rooms below it (tests/unit/test_layers.py,
docs/architecture.md "Inside analysis"):

* ``measures`` — the definitions every source is measured with (intervals, latency sketches,
  collective sizes and bandwidths, the step KPIs);
* ``gpu`` — the GPU timeline and every GPU timing source;
* ``cross`` — the ranks together: one time axis, collective instances matched, hangs;
* ``host`` — one process's capture: read into frames and reduced to its part of the report;
* ``scale`` — a run of many processes reduced wherever there are cores, node summaries, the fold;
* ``outcome`` — a run's or traces' whole analysis: the summary, verdict, what-if and advice.
"""
