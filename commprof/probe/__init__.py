"""``commprof probe``: what the fabric can do, measured like nccl-tests with the job's backend.

:mod:`~commprof.probe.sizes` parses size sweeps; :mod:`~commprof.probe.sweep` is the worker that
torchrun starts on every rank (``python -m commprof.probe.sweep``); the CLI side lives in
:mod:`commprof.cli.probe`.  The result is a ``commprof.probe/1`` JSON document (docs/kpis.md).
"""
