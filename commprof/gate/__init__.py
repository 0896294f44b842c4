"""CI gates and run comparison (``commprof gate``, ``commprof compare``, baselines).

* :mod:`~commprof.gate.measure` — what a run measured, from a run directory, a saved report or a
  baseline file, as per-step series plus whole-run values; baselines (``commprof.baseline/1``);
* :mod:`~commprof.gate.stats` — medians, spreads and bootstrap confidence intervals;
* :mod:`~commprof.gate.rules` — rule syntax (flags and ``[tool.commprof.gate]``), evaluation;
* :mod:`~commprof.gate.compare` — KPI-by-KPI comparison of two runs;
* :mod:`~commprof.gate.output` — their presentation: rich table, JUnit XML, Markdown, JSON.
"""
