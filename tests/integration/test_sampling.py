"""The node sampler and its sources, driven by a fake clock; links analysis on known counters."""
from __future__ import annotations

import os
import socket
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from commprof.analysis.host import links
from commprof.sampling import nvml as nvml_mod
from commprof.sampling.infiniband import InfinibandSource
from commprof.sampling.nic import NicSource
from commprof.sampling.sampler import MAX_FAILURES, NodeSampler
from commprof.sampling.series import GAUGE, Series
from commprof.sampling.tcp import TcpSource, parse_ss, peer_host, socket_inodes
from fakes import fake_pynvml

S = 1_000_000_000


class FakeClock:
    def __init__(self, step_ns=100_000_000):
        self.t, self.step = 0, step_ns

    def __call__(self):
        return self.t

    def advance(self):
        self.t += self.step


class Ramp:
    """A counter growing by ``per_tick`` bytes per tick, and a gauge."""

    name = "ramp"
    period_s = 0.0

    def __init__(self, per_tick=1000):
        self.value, self.per_tick = 0, per_tick

    def status(self):
        return {"available": True, "why": None}

    def read(self, emit):
        self.value += self.per_tick
        emit(Series("nic", "eth9", "tx_bytes", "B"), float(self.value))
        emit(Series("nic", "eth9", "rx_bytes", "B"), float(2 * self.value))
        emit(Series("gpu", "gpu0", "utilization", "%", GAUGE), 50.0)


class Broken:
    name = "broken"
    period_s = 0.0

    def status(self):
        raise RuntimeError("no status either")

    def read(self, emit):
        raise OSError("device vanished")


def run_sampler(tmp_path, sources, ticks=11, clock=None):
    clock = clock or FakeClock()
    cpu = iter(range(0, 10**12, 10_000)).__next__  # every reading 10 µs later
    s = NodeSampler(tmp_path, sources, hz=10, clock=clock, cpu_clock=cpu)
    for _ in range(ticks):
        s.tick()
        clock.advance()
    s.flush()
    s.stop()  # one more tick, flush, trailer
    return s, links.read_node_samples(s.path)


def test_sampler_writes_series_samples_and_its_cost(tmp_path):
    s, node = run_sampler(tmp_path, [Ramp()])
    assert node.damage is None and node.header["hz"] == 10
    assert node.header["sources"] == {"ramp": {"available": True, "why": None}}
    assert set(node.series["metric"]) == {"tx_bytes", "rx_bytes", "utilization"}
    tx_id = int(node.series.loc[node.series["metric"] == "tx_bytes", "id"].iloc[0])
    tx = node.samples[node.samples["series"] == tx_id]
    assert len(tx) == 12  # 11 ticks + the last one at stop
    assert tx["value"].tolist() == [1000.0 * (i + 1) for i in range(12)]
    assert node.cost["ticks"] == 12
    assert node.cost["cpu_ns"] == (12 + 2) * 10_000  # 12 ticks + 2 flushes, as measured
    tp = links.throughput(tx["t"].to_numpy(), tx["value"].to_numpy(), None)
    assert tp["mean_Bps"] == pytest.approx(1000 / 0.1) and tp["peak_Bps"] == pytest.approx(1e4)
    assert tp["bytes"] == pytest.approx(11_000)


def test_a_failing_source_is_dropped_and_recorded_never_raised(tmp_path):
    s, node = run_sampler(tmp_path, [Broken(), Ramp()], ticks=5)
    assert node.header["sources"]["broken"] == {"available": False,
                                                "why": "RuntimeError: no status either"}
    (deg,) = node.degraded
    assert deg["where"] == "sampler.broken" and deg["count"] == MAX_FAILURES
    assert "device vanished" in deg["error"]
    assert [src.name for src in s.sources] == ["ramp"]  # the other source kept going
    assert len(node.samples) == 6 * 3


def test_sources_with_a_period_are_read_less_often(tmp_path):
    src = Ramp()
    src.period_s = 0.5
    _, node = run_sampler(tmp_path, [src], ticks=11)
    tx_id = int(node.series.loc[node.series["metric"] == "tx_bytes", "id"].iloc[0])
    t = node.samples.loc[node.samples["series"] == tx_id, "t"].to_numpy()
    assert np.all(np.diff(t) >= 0.5 * S)


def test_sampler_thread_runs_at_its_rate_and_stops(tmp_path):
    s = NodeSampler(tmp_path, [Ramp()], hz=50)
    s.start()
    threading.Event().wait(0.5)
    s.stop()
    node = links.read_node_samples(s.path)
    assert node.cost is not None and 15 <= node.cost["ticks"] <= 30
    assert node.cost["cpu_ns"] < node.cost["wall_ns"]


def test_nic_source_flags_loopback():
    fake = SimpleNamespace(net_io_counters=lambda pernic: {
        "lo": SimpleNamespace(bytes_sent=5, bytes_recv=5, packets_sent=1, packets_recv=1),
        "eth0": SimpleNamespace(bytes_sent=7, bytes_recv=9, packets_sent=2, packets_recv=3)})
    got = []
    NicSource(fake).read(lambda s, v: got.append((s.device, s.metric, s.note, v)))
    assert ("lo", "tx_bytes", "loopback", 5.0) in got and ("eth0", "rx_bytes", "", 9.0) in got
    assert len(got) == 8


def test_infiniband_counters_are_in_units_of_four_bytes(tmp_path):
    counters = tmp_path / "mlx5_0" / "ports" / "1" / "counters"
    counters.mkdir(parents=True)
    for name, value in (("port_xmit_data", 1000), ("port_rcv_data", 250), ("port_xmit_packets", 7),
                        ("port_rcv_packets", 3)):
        (counters / name).write_text(f"{value}\n")
    src = InfinibandSource(str(tmp_path))
    assert src.status()["ports"] == ["mlx5_0/1"]
    got = {}
    src.read(lambda s, v: got.__setitem__(s.metric, v))
    assert got == {"tx_bytes": 4000.0, "rx_bytes": 1000.0, "tx_packets": 7.0, "rx_packets": 3.0}
    assert InfinibandSource(str(tmp_path / "none")).status()["available"] is False


@pytest.fixture()
def fake_nvml():
    fake_pynvml.reset()
    fake_pynvml.FAIL_INIT = False
    yield fake_pynvml
    fake_pynvml.FAIL_INIT = False


def test_nvml_reads_nvlink_pcie_and_utilisation_and_explains_gaps(fake_nvml):
    src = nvml_mod.NvmlSource(fake_nvml)
    st = src.status()
    gpu0, gpu1 = st["gpus"]
    assert gpu0["nvlink"] and gpu0["pcie"] and gpu0["utilization"] and gpu0["name"] == "Fake H100"
    assert not gpu1["nvlink"] and "no NVLink on this GPU" in gpu1["why"]["nvlink"]
    assert "Not Supported" in gpu1["why"]["utilization"]
    got = {}
    for _ in range(2):
        src.read(lambda s, v: got.__setitem__((s.source, s.device, s.metric), v))
    # cumulative KiB -> bytes; the fake advances by 1000/2000 KiB per read (2 reads + 1 probe)
    assert got[("nvlink", "gpu0", "tx_bytes")] == 3 * 1000 * 1024
    assert got[("nvlink", "gpu0", "rx_bytes")] == 2 * 2000 * 1024
    assert got[("pcie", "gpu1", "rx_rate")] == 700 * 1024
    assert got[("gpu", "gpu0", "utilization")] == 87.0
    assert ("gpu", "gpu1", "utilization") not in got
    src.close()
    allowed = {"nvmlInit", "nvmlShutdown", "nvmlDeviceGetFieldValues", "nvmlDeviceGetPcieThroughput",
               "nvmlDeviceGetUtilizationRates"}
    assert set(fake_nvml.calls) <= allowed  # getters only: no device setting is touched


def test_nvml_without_a_driver_says_why(fake_nvml):
    fake_nvml.FAIL_INIT = True
    st = nvml_mod.NvmlSource(fake_nvml).status()
    assert st["available"] is False and "Driver Not Loaded" in st["why"]


def test_nvml_seam_is_an_environment_variable(monkeypatch, fake_nvml):
    monkeypatch.setenv("COMMPROF_NVML_MODULE", "fakes.fake_pynvml")
    assert nvml_mod.load_nvml() is fake_nvml
    monkeypatch.setenv("COMMPROF_NVML_MODULE", "no_such_nvml_module")
    st = nvml_mod.NvmlSource().status()
    assert st["available"] is False and "nvidia-ml-py" in st["why"]


SS_TEXT = """0      0      10.233.1.1:41234  10.233.1.2:29500 ino:4242 sk:1 cgroup:/ <->
\t ts sack cubic wscale:7,7 rto:210 rtt:10.25/0.5 ato:40 mss:1448 retrans:0/3 bytes_sent:100
0      0      [::ffff:10.233.1.1]:41236 [::ffff:10.233.1.2]:29500 ino:4243 sk:2 <->
\t ts sack cubic rtt:9.75/1.5 retrans:1/2 bytes_sent:100
0      0      127.0.0.1:5000 127.0.0.1:5001 ino:99 sk:3 <->
\t ts sack cubic rtt:0.05/0.01
"""


def test_ss_parsing_and_per_peer_aggregation():
    conns = parse_ss(SS_TEXT)
    assert [(c["inode"], c["srtt_ms"], c["retrans"]) for c in conns] == \
        [(4242, 10.25, 3), (4243, 9.75, 2), (99, 0.05, 0)]
    assert peer_host("[::ffff:10.233.1.2]:29500") == "10.233.1.2"
    src = TcpSource(lambda: [1], ss=lambda: (SS_TEXT, 1234))
    import commprof.sampling.tcp as tcp_mod
    orig = tcp_mod.socket_inodes
    tcp_mod.socket_inodes = lambda pids: {4242, 4243}  # the job holds these two
    try:
        got = {}
        src.read(lambda s, v: got.__setitem__((s.device, s.metric), v))
    finally:
        tcp_mod.socket_inodes = orig
    assert got == {("10.233.1.2", "srtt_ms"): 10.0, ("10.233.1.2", "rttvar_ms"): 1.0,
                   ("10.233.1.2", "retrans"): 5.0, ("10.233.1.2", "connections"): 2.0}
    assert src.child_cpu_ns == 1234


def test_tcp_source_finds_this_process_connections_with_real_ss():
    if TcpSource(lambda: []).status()["available"] is False:
        pytest.skip("no `ss` here")
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    peer, _ = server.accept()
    try:
        client.sendall(b"x" * 1000)
        peer.recv(1000)
        inodes = socket_inodes([os.getpid()])
        assert os.fstat(client.fileno()).st_ino in inodes
        got = {}
        src = TcpSource(lambda: [os.getpid()])
        src.read(lambda s, v: got.__setitem__((s.device, s.metric), v))
        assert got[("127.0.0.1", "connections")] == 2.0  # both ends are this process's
        assert got[("127.0.0.1", "srtt_ms")] > 0 and src.child_cpu_ns > 0
    finally:
        for s in (client, peer, server):
            s.close()


def test_throughput_during_communication_windows():
    # 10 intervals of 1 s: 100 B/s for the first five, 300 B/s after.
    t = np.arange(11) * S
    v = np.concatenate([[0], np.cumsum([100] * 5 + [300] * 5)]).astype(float)
    windows = (np.array([4.5 * S]), np.array([6.5 * S]))  # half of [4,5), all of [5,6), half of [6,7)
    tp = links.throughput(t, v, windows)
    assert tp["bytes"] == 2000 and tp["mean_Bps"] == pytest.approx(200)
    assert tp["peak_Bps"] == pytest.approx(300)
    assert tp["comm_Bps"] == pytest.approx((0.5 * 100 + 1 * 300 + 0.5 * 300) / 2)


def test_counter_reset_is_dropped_not_negative():
    a, b, rate = links.counter_rates(np.array([0, S, 2 * S, 3 * S]), np.array([0, 100, 5, 105.0]))
    assert rate.tolist() == [100.0, 100.0]


def test_probe_interpolation_and_efficiency():
    probe = {"world_size": 2, "results": [
        {"op": "all_reduce", "size_bytes": 1 << 20, "busbw_gbps": 1.0},
        {"op": "all_reduce", "size_bytes": 1 << 22, "busbw_gbps": 4.0}]}
    assert links.probe_busbw(probe, "all_reduce", 1 << 21) == pytest.approx(2.0)  # log-log
    assert links.probe_busbw(probe, "all_reduce", 1 << 23) is None  # outside the sweep
    assert links.probe_busbw(probe, "broadcast", 1 << 21) is None
    import pandas as pd
    buckets = pd.DataFrame({"op": ["all_reduce"], "group_size": [2], "bucket": [21], "count": [4],
                            "bytes": [4 * float(1 << 21)], "bus_bytes": [4 * float(1 << 21)],
                            "time_ns": [4 * float(1 << 21) / 1.0]})  # 1 B/ns = 1 GB/s
    (row,) = links.efficiency_rows(buckets, probe)
    assert row["job_busbw_gbps"] == pytest.approx(1.0) and row["efficiency"] == pytest.approx(0.5)


@pytest.mark.parametrize("damage, words", [(lambda b: b"GARBAGE!", "bad magic"),
                                           (lambda b: b[:-7], "samples before it were kept")])
def test_a_damaged_sampler_file_is_a_note_not_an_error(tmp_path, damage, words):
    from synthetic import periodic_rank, write_run
    from runner import commprof
    run = write_run(tmp_path / "run", [periodic_rank(0), periodic_rank(1)])
    s, _ = run_sampler(run, [Ramp()], ticks=5)
    path = s.path if isinstance(s.path, str) else str(s.path)
    with open(path, "rb") as fh:
        data = fh.read()
    with open(path, "wb") as fh:
        fh.write(damage(data))
    proc = commprof("report", str(run), "--width", "200")
    assert proc.returncode == 0, proc.stderr
    assert words in proc.stdout
