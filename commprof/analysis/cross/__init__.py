"""The ranks together: every rank on one time axis (``clocks``), each collective instance matched
across its ranks into waiting vs transfer and stragglers (``crossrank``), and what a hang is
stuck on (``hang``, with its printed lines in ``hang_text``, which the supervisor prints while the
job runs).  It imports no other room.
"""
