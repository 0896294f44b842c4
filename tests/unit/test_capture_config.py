"""CaptureConfig: every COMMPROF_* setting of a worker, read once from the environment."""
from __future__ import annotations

import time

from commprof.capture.config import ENV_OWNER, CaptureConfig, claim_rank


def test_defaults_outside_commprof_run():
    c = CaptureConfig.from_env({})
    assert c.run_dir is None and c.flush_interval_s == 1.0 and c.owner is None
    assert c.faults == frozenset() and not c.fr_drain_forced and c.fr_drain_interval_s is None
    assert not c.flight_recorder and c.clock_skew_ns == 0 and c.problem is None
    assert c.clock is time.perf_counter_ns  # the production clock itself, nothing wrapped


def test_every_variable_is_read():
    c = CaptureConfig.from_env({
        "COMMPROF_RUN_DIR": "/runs/a", "COMMPROF_FLUSH_INTERVAL": "0.25", "COMMPROF_OWNER": "3:200",
        "RANK": "3", "LOCAL_RANK": "1", "TORCH_FR_BUFFER_SIZE": "2000", "COMMPROF_FR_DRAIN": "1",
        "COMMPROF_FR_DRAIN_INTERVAL": "5", "COMMPROF_FAULT": "collective, writer,",
        "COMMPROF_GPU_WINDOWS": "2/50@10", "COMMPROF_GPU_TRACE": "1", "COMMPROF_GPU_ACTIVITY": "cpu",
    })
    assert (c.run_dir, c.flush_interval_s, c.owner, c.rank, c.local_rank) == ("/runs/a", 0.25, "3:200", "3", "1")
    assert c.flight_recorder and c.fr_drain_forced and c.fr_drain_interval_s == 5.0
    assert c.faults == {"collective", "writer"} and c.problem is None
    assert (c.gpu_windows, c.gpu_trace, c.gpu_activity) == ((2, 50, 10), True, "cpu")


def test_the_flight_recorder_is_off_for_zero_or_empty_buffers():
    for value in ("0", ""):
        assert not CaptureConfig.from_env({"TORCH_FR_BUFFER_SIZE": value}).flight_recorder


def test_a_setting_that_does_not_parse_is_a_problem_not_an_exception():
    c = CaptureConfig.from_env({"COMMPROF_RUN_DIR": "/r", "COMMPROF_FLUSH_INTERVAL": "fast",
                                "COMMPROF_FR_DRAIN_INTERVAL": "often"})
    assert c.flush_interval_s == 1.0 and c.fr_drain_interval_s is None
    assert "COMMPROF_FLUSH_INTERVAL='fast'" in c.problem and "COMMPROF_FR_DRAIN_INTERVAL" in c.problem


def test_the_clock_skew_applies_to_the_named_rank_only():
    skewed = CaptureConfig.from_env({"COMMPROF_CLOCK_SKEW": "1:5000000000", "RANK": "1"})
    other = CaptureConfig.from_env({"COMMPROF_CLOCK_SKEW": "1:5000000000", "RANK": "0"})
    no_rank = CaptureConfig.from_env({"COMMPROF_CLOCK_SKEW": "1:5000000000"})
    assert skewed.clock_skew_ns == 5_000_000_000
    assert other.clock_skew_ns == 0 and other.clock is time.perf_counter_ns
    assert no_rank.clock_skew_ns == 0
    before = time.perf_counter_ns()
    t = skewed.clock()
    assert 5_000_000_000 <= t - before < 6_000_000_000  # reads 5 s ahead of the real clock


def test_a_malformed_skew_skews_nothing():
    for spec in ("1:lots", "1", ":", "x:5"):
        assert CaptureConfig.from_env({"COMMPROF_CLOCK_SKEW": spec, "RANK": "1"}).clock_skew_ns == 0


def test_the_config_is_frozen_and_reads_a_snapshot():
    env = {"COMMPROF_RUN_DIR": "/r"}
    c = CaptureConfig.from_env(env)
    env["COMMPROF_RUN_DIR"] = "/elsewhere"
    assert c.run_dir == "/r"
    try:
        c.run_dir = "/x"  # type: ignore[misc]
    except AttributeError:
        pass
    else:
        raise AssertionError("CaptureConfig must be frozen")


def test_claim_rank_is_what_the_owner_check_reads():
    env: dict[str, str] = {}
    claim_rank("3", 200, env)
    assert env == {ENV_OWNER: "3:200"} and CaptureConfig.from_env(env).owner == "3:200"
