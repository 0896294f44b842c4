"""A run of many processes: each capture reduced on its own wherever there is a core (``reduce``:
this process, a local pool or Dask), a node's reductions written at job end and read back
without pickle (``node_summary``, ``summary_file``, ``summary_codec``), and the results folded
into bounded state as they arrive (``fold``).  It imports ``host``, ``cross`` and ``measures``.
"""
