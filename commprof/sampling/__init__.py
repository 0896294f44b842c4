"""Per-node sampling of link counters while the job runs (KPI 1, "what the fabric did").

``commprof run`` starts one :class:`~commprof.sampling.sampler.NodeSampler` per node (a thread in
the ``commprof run`` process, not in the workers).  Each source reads one kind of counter:

* :mod:`~commprof.sampling.nic` — every network interface (psutil), loopback flagged;
* :mod:`~commprof.sampling.infiniband` — InfiniBand/RoCE port counters from sysfs;
* :mod:`~commprof.sampling.nvml` — per GPU NVLink and PCIe throughput, GPU utilisation (NVML);
* :mod:`~commprof.sampling.tcp` — smoothed RTT, RTT variance and retransmits of the job's own
  TCP connections (``ss -tie``).

Values are written raw (cumulative counters stay cumulative) to ``RUN/nodes/<host>.p<pid>.cps``;
rates and windows are the analysis' business (:mod:`commprof.analysis.host.links`).  Standard library
plus psutil; nothing here imports pandas or torch.
"""
