"""One process of a ``commprof run``: its capture read into frames (``load``, the only reader,
with ``load_facts`` and the node samplers' files in ``load_nodes``), its steps, exposure, CPU
oversubscription, training signals (loss, fixes, metrics) and links, and its reduction to the
small per-rank part a report needs (``rank``: ``RankPart``).  It imports ``measures`` and ``gpu``
(a capture carries GPU windows and Flight Recorder durations).
"""
