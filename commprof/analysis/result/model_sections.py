"""The report document's sections that need more than one rank's records, or more than the
records: ``links`` (node samplers, a probe), the cross-rank analysis (``stragglers``,
``clock_alignment``, ``cross_rank``), the what-if projections (``whatif``,
``recommendations``) and the host-side KPIs kept beside GPU ones (``kpis.host``).  Typed like the rest of the document: see :mod:`commprof.analysis.result.model`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from commprof.format.typed import Model, key, optional


@dataclass(kw_only=True)
class SourceStatus(Model):
    """A node sampler source's availability (more keys per source, e.g. ``interfaces``)."""

    OPEN: ClassVar[bool] = True

    available: bool = key()
    why: str | None = key()


@dataclass(kw_only=True)
class SamplerDegraded(Model):
    """A sampler source that failed (counted, then dropped after three failures in a row)."""

    type: str = key('"degraded"')
    where: str = key()
    count: int = key()
    error: str = key()


@dataclass(kw_only=True)
class SamplerRow(Model):
    """One node sampler file: its own cost and sources."""

    host: str = key()
    hz: float | None = key()
    ticks: int | None = key()
    cpu_fraction_of_core: float | None = key()
    sources: dict[str, SourceStatus] = key('"nic", "infiniband", "nvml", "tcp"')
    degraded: list[SamplerDegraded] = key()


@dataclass(kw_only=True)
class InterfaceRow(Model):
    """One (source, device) byte-counter pair: throughput and wire / logical bytes."""

    host: str = key()
    source: str = key('"nic", "infiniband", "nvlink"')
    device: str = key()
    loopback: bool = key()
    tx_bytes: float = optional("absent without a tx counter")
    tx_mean_Bps: float | None = optional()
    tx_peak_Bps: float | None = optional()
    tx_comm_Bps: float | None = optional()
    rx_bytes: float = optional("absent without an rx counter")
    rx_mean_Bps: float | None = optional()
    rx_peak_Bps: float | None = optional()
    rx_comm_Bps: float | None = optional()
    logical_bus_bytes: float | None = key()
    wire_to_logical: float | None = key()


@dataclass(kw_only=True)
class GaugeRow(Model):
    """A gauge (PCIe rate, GPU utilisation): mean and peak."""

    host: str = key()
    source: str = key('"pcie", "gpu"')
    device: str = key()
    metric: str = key()
    unit: str = key()
    mean: float = key()
    peak: float = key()


@dataclass(kw_only=True)
class TcpRow(Model):
    """RTT of the job's TCP connections to one peer."""

    host: str = key()
    peer: str = key()
    samples: int = key()
    srtt_ms_median: float = key()
    srtt_ms_p90: float = key()
    srtt_ms_max: float = key()
    rttvar_ms_median: float | None = key()
    minrtt_ms: float | None = key()
    retrans: float | None = key()
    connections_max: int | None = key()


@dataclass(kw_only=True)
class EfficiencyRow(Model):
    """The job's busbw against the probe's at the same op and message size."""

    op: str = key()
    group_size: int = key()
    size_bytes: float = key()
    count: int = key()
    job_busbw_gbps: float = key()
    probe_busbw_gbps: float = key()
    efficiency: float | None = key()
    same_group_size: bool = key()


@dataclass(kw_only=True)
class ProbeLatency(Model):
    """The probe's small-message latencies (µs)."""

    all_reduce: float | None = key()
    sendrecv: float | None = key("one way")


@dataclass(kw_only=True)
class ProbeSummary(Model):
    """The probe result the run was compared with (``commprof.probe/1``, in part)."""

    backend: str | None = key()
    world_size: int | None = key()
    nodes: int | None = key()
    latency_us: ProbeLatency | None = key()
    started_wall_ns: int | None = key()
    source: str | None = key()


@dataclass(kw_only=True)
class TimelineRow(Model):
    """Throughput over time of a busy link, and its host's communication windows."""

    host: str = key()
    source: str = key()
    device: str = key()
    t_s: list[float] = optional("<= 600 points, s since the sampler's first sample")
    tx_Bps: list[float] = optional()
    rx_Bps: list[float] = optional()
    comm_windows_s: list[list[float]] = optional("[start, end] pairs on the same axis, <= 300")


@dataclass(kw_only=True)
class ProbeCurvePoint(Model):
    """One point of the probe's sweep."""

    op: str = key()
    size_bytes: int = key()
    busbw_gbps: float | None = key()


@dataclass(kw_only=True)
class Links(Model):
    """Node samplers and/or a probe (docs/kpis.md, "Links")."""

    sampler: list[SamplerRow] = key()
    interfaces: list[InterfaceRow] = key()
    gauges: list[GaugeRow] = key()
    tcp: list[TcpRow] = key()
    efficiency: list[EfficiencyRow] = key()
    probe: ProbeSummary | None = key()
    timeline: list[TimelineRow] = key("busy links only")
    notes: list[str] = key()
    probe_curve: list[ProbeCurvePoint] = key()


@dataclass(kw_only=True)
class Straggler(Model):
    """A rank that arrived last in some measured steps (docs/kpis.md)."""

    rank: int = key()
    steps_last: int = key()
    steps: int = key()
    share_of_steps: float = key()
    wait_cost_per_step_s: float = key()
    median_margin_s: float = key()
    p_value: float = key()
    significant: bool = key()


@dataclass(kw_only=True)
class ClockRank(Model):
    """How one rank's clock was aligned to the reference rank's."""

    rank: int = key()
    method: str = key('"reference", "barrier", "same-host", "wall-anchor", "none"; profiler traces: '
                      '"instance-ends" (from the collectives\' common ends) or "same-clock" (an offset '
                      'within noise, not applied)')
    offset_ms: float = key()
    uncertainty_ms: float | None = key()
    drift_ppm: float | None = key()


@dataclass(kw_only=True)
class ClockAlignment(Model):
    """Clock alignment of the ranks (two or more ranks)."""

    reference_rank: int = key()
    max_uncertainty_ms: float | None = key()
    ranks: list[ClockRank] = key()


@dataclass(kw_only=True)
class CrossRankStep(Model):
    """One measured step: each rank's wait for late ranks."""

    step: int = key()
    ranks: list[int] = key()
    wait_s: list[float] = key("per rank, in the order of ranks")
    straggler: int | None = key()


@dataclass(kw_only=True)
class CrossRank(Model):
    """Matched collectives across ranks (two or more ranks)."""

    instances: int = key()
    unmatched_records: int = key()
    per_step: list[CrossRankStep] = key()


@dataclass(kw_only=True)
class WhatIfInputs(Model):
    """What a projection starts from: means over the measured rank-steps (docs/whatif.md)."""

    steps: int = key()
    step_s: float = key()
    comm_s_per_step: float = key()
    exposed_s_per_step: float = key()
    straggler_wait_s_per_step: float = key("waiting for late ranks per step (the model's W; "
                                           "first named for stragglers, now every measured wait)")
    latency_floor_s_per_step: float = key()
    wait_s_per_step: float | None = optional("W, exposed first: min(measured wait, exposed)")
    transfer_s_per_step: float | None = optional("C − W: what bandwidth and bytes shorten")
    link_share: float | None = optional("ε: the link's share of in-flight time from a probe; null without")
    kept_share: float | None = optional("κ: share of transfer a step without gradient sync keeps")
    exposed_only: bool | None = optional("GPU timeline: removing communication removes its exposed part")
    single_node: bool | None = optional("every rank on one host: no network to buy")
    wait_measured: bool | None = optional("W is the cross-rank analysis' measured wait")


@dataclass(kw_only=True)
class WhatIf(Model):
    """A projected scenario (docs/whatif.md)."""

    name: str = key()
    model: str = key()
    inputs: WhatIfInputs = key()
    changes: dict[str, Any] = key("the scenario's parameters, e.g. {\"bandwidth\": 2}")
    step_time_s: float = key()
    speedup: float | None = key()
    saving: float | None = key()
    comm_fraction: float | None = key()
    exposed_comm_fraction: float | None = key()


@dataclass(kw_only=True)
class Recommendation(Model):
    """A software or infrastructure option, ranked by projected saving."""

    scenario: str = key()
    kind: str = key('"software" or "infrastructure"')
    action: str = key()
    evidence: str = key()
    projected_saving: float = key()
    projected_step_time_s: float = key()


@dataclass(kw_only=True)
class LossCurve(Model):
    """Each step's loss (the tensor passed to backward; docs/try.md, "Loss")."""

    steps: list[int] = key()
    values: list[float] = key("per step: mean over ranks of each rank's mean over its backward calls")
    ranks: int = key("ranks that recorded a loss")
    final: float = key("the last step's value")
    lost: int = key("GPU loss copies dropped before they were read")
    source: str = key('"backward"')
    convention: str = optional('gradient accumulation: "single" (one backward per step), "scaled-sum" '
                               '(N micro-batch losses each divided by N: their sum), "mean" (N unscaled '
                               'losses: their mean)')


@dataclass(kw_only=True)
class FixRow(Model):
    """A fix ``commprof try`` asked for, and what became of it on which ranks."""

    fix: str = key('e.g. "bf16-compress", "local-sgd:4"')
    status: str | None = key('"applied", "skipped" or "withdrawn"')
    why: str | None = key("why it was skipped or withdrawn")
    changes: str | None = key("what it changes numerically")
    ranks: list[int] = key()


@dataclass(kw_only=True)
class LossSeries(Model):
    """Another run's loss curve shown beside this one (``commprof try``: the baseline's)."""

    label: str = key()
    steps: list[int] = key()
    values: list[float] = key()


@dataclass(kw_only=True)
class MetricSeries(Model):
    """A metric the job reported with ``commprof.metric`` (e.g. held-out accuracy; docs/try.md)."""

    name: str = key()
    steps: list[int] = key("the steps ended when it was reported")
    values: list[float] = key("per step: mean over the ranks that reported it")
    ranks: list[int] = key("ranks that reported it")
    higher_is_better: bool = key("the job's word")
    final: float = key("the last value")


@dataclass(kw_only=True)
class Training(Model):
    """Training signals: the loss curve, the job's metrics and the fixes applied."""

    loss: LossCurve | None = key()
    fixes: list[FixRow] = key()
    metrics: list[MetricSeries] = optional("what the job reported with commprof.metric")
    compare: list[LossSeries] = optional("other runs' curves (commprof try writes the baseline's)")


@dataclass(kw_only=True)
class LastCollective(Model):
    """The last collective an incomplete rank issued (a rank that died: where it was)."""

    op: str = key()
    group: str = key("the group's description (default_pg, ...) or id")
    seq: int = key("sequence number in its group")
    bytes: int = key("S")
    t_s: float = key("s from the capture start")
    completed: bool = key("its completion was recorded")


@dataclass(kw_only=True)
class OpGroupRow(Model):
    """The op table per process group (docs/report-schema.md): means over the ranks that issued
    the op in the group."""

    group: str = key("the group's name (torch: \"0\" the default group, then \"1\", ...)")
    group_desc: str | None = key("its description (group_desc), null when torch gave none")
    op: str = key()
    group_size: int = key()
    ranks: int = key("ranks that issued the op in this group")
    count: float = key("calls per rank, whole run")
    bytes: float = key("S per rank, whole run")
    calls_per_step: float | None = key("per measured step (start-up and warm-up apart)")
    bytes_per_step: float | None = key("per measured step (start-up and warm-up apart)")
