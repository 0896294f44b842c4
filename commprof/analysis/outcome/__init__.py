"""What the report says: a run's whole analysis (``summary``) and the traces' (``trace_summary``,
``trace_crossrank``), the verdict and its notes (``verdict``), the savings model (``whatif``),
recommendations (``advice``, ``parallelism``), ``commprof try``'s judgement (``convergence``), the
one entry from a path (``sources``) and the public ``commprof.load_run`` frames (``frames``).
The top room: it may import every other room, and none imports it.
"""
