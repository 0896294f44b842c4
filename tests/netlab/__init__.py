"""Network lab test harness: two-"node" jobs over a shaped (rate/delay) link.

See :mod:`netlab.lab` for what is created, measured accuracy and cleanup guarantees.
"""
from .lab import Lab, LabError, netlab_available, reap_stale, tbf_burst_bytes

__all__ = ["Lab", "LabError", "netlab_available", "reap_stale", "tbf_burst_bytes"]
