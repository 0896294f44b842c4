"""The definitions every room measures with, whatever the source (host records, GPU timelines):
interval arithmetic on int64 ns arrays (``intervals``), mergeable latency sketches
(``latency``), nccl-tests' sizes and bus bandwidths of collectives and the op table
(``collectives``), and the step KPIs as pure, time-weighted functions of per-step frames
(``kpis``; docs/kpis.md).  Pure functions of frames: no files, no other room.
"""
