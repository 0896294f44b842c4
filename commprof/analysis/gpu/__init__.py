"""The GPU timeline: which kernels are communication (``comm_kernels``), the GPU timing sources
as frames (``gpu_activity``: ``commprof run``'s GPU windows; ``gpu_times``: Flight Recorder
durations; ``gpu_collectives``: profiler traces' communication kernels, sized), the GPU
timeline's KPIs (``gpu_timeline``) and which clock the headline KPIs stand on (``gpu_basis``).
It imports ``measures`` only; the host and trace paths call into it.
"""
