"""Which processes of a job ``commprof run`` captures (commprof.capture.bootstrap)."""
from __future__ import annotations

import os

import pytest

from commprof.capture import bootstrap
from commprof.capture.bootstrap import is_launcher, should_capture
from commprof.capture.config import ENV_OWNER, CaptureConfig

TORCHRUN_ENV = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
WORKER_ENV = {**TORCHRUN_ENV, "RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4",
              "LOCAL_WORLD_SIZE": "2", "TORCHELASTIC_RESTART_COUNT": "0"}
RUN_PY = os.path.join("/usr", "lib", "python3.11", "site-packages", "torch", "distributed", "run.py")
LAUNCH_PY = os.path.join("/opt", "venv", "lib", "site-packages", "torch", "distributed", "launch.py")

LAUNCHER_ARGVS = [
    ["/usr/local/bin/torchrun", "--nproc-per-node=2", "train.py"],
    ["torchrun", "--standalone", "train.py"],
    [RUN_PY, "--nproc-per-node", "8", "train.py"],  # python -m torch.distributed.run, once running
    [LAUNCH_PY, "--use-env", "train.py"],  # the deprecated launcher
    ["-m", "torch.distributed.run", "train.py"],  # argv while the -m module is still being found
    ["-m", "torch.distributed.launch", "train.py"],
]
NOT_LAUNCHER_ARGVS = [
    ["train.py"], ["/home/me/train.py", "--epochs", "3"], ["-c"], ["-m", "my_pkg.train"],
    ["-m"], [""], [], ["/home/me/torchrun_notes.py"], ["-m", "torch.distributed.elastic.foo"],
]


@pytest.mark.parametrize("argv", LAUNCHER_ARGVS, ids=lambda a: " ".join(a)[:40])
def test_launcher_argvs(argv):
    assert is_launcher(argv)


@pytest.mark.parametrize("argv", NOT_LAUNCHER_ARGVS, ids=lambda a: " ".join(a)[:40] or "empty")
def test_not_launcher_argvs(argv):
    assert not is_launcher(argv)


@pytest.mark.parametrize("argv", LAUNCHER_ARGVS, ids=lambda a: " ".join(a)[:40])
def test_torchrun_agent_is_skipped(argv):
    assert should_capture(CaptureConfig.from_env(dict(TORCHRUN_ENV)), argv=argv, pid=100) is False
    assert should_capture(CaptureConfig.from_env({}), argv=argv, pid=100) is False


def test_worker_is_captured():
    assert should_capture(CaptureConfig.from_env(dict(WORKER_ENV)), argv=["train.py"], pid=200) is True


def test_worker_is_captured_whatever_its_argv():
    # LOCAL_RANK set: a worker even if its argv[0] looks like a launcher (nested torchrun).
    for argv in LAUNCHER_ARGVS:
        assert should_capture(CaptureConfig.from_env(dict(WORKER_ENV)), argv=argv, pid=200) is True


def test_worker_owning_its_rank_is_captured():
    env = {**WORKER_ENV, ENV_OWNER: "3:200"}
    assert should_capture(CaptureConfig.from_env(env), argv=["train.py"], pid=200) is True


def test_dataloader_child_of_a_captured_rank_is_skipped():
    env = {**WORKER_ENV, ENV_OWNER: "3:200"}  # inherited from the rank-3 worker, pid 200
    assert should_capture(CaptureConfig.from_env(env), argv=["-c"], pid=201) is False
    assert should_capture(CaptureConfig.from_env(env), argv=["train.py"], pid=9999) is False


def test_a_helper_a_captured_rank_started_is_skipped_whatever_its_rank():
    # issue 26 item 7: a worker runs `python -c "...init_process_group(rank=0, world_size=1)..."`
    # with its own RANK, or with the launcher's variables scrubbed: a helper, not a rank.
    for env in ({**WORKER_ENV, "RANK": "0", "WORLD_SIZE": "1", ENV_OWNER: "3:200"},
                {ENV_OWNER: "3:200"}, {"PATH": "/usr/bin", ENV_OWNER: "3:200"}):
        assert should_capture(CaptureConfig.from_env(env), argv=["-c"], pid=201) is False
    assert should_capture(CaptureConfig.from_env({**WORKER_ENV, ENV_OWNER: "3:200"}),
                          argv=["train.py"], pid=200) is True  # the owner itself


def test_empty_owner_does_not_skip():
    env = {**WORKER_ENV, ENV_OWNER: ""}
    assert should_capture(CaptureConfig.from_env(env), argv=["train.py"], pid=201) is True


@pytest.mark.parametrize("argv", [["train.py"], ["-c"], ["-m", "pkg"], []])
def test_plain_python_is_captured(argv):
    assert should_capture(CaptureConfig.from_env({}), argv=argv, pid=300) is True
    assert should_capture(CaptureConfig.from_env({"PATH": "/usr/bin"}), argv=argv, pid=300) is True


def test_defaults_read_this_process(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv(ENV_OWNER, f"5:{os.getpid()}")
    monkeypatch.setattr(bootstrap.sys, "argv", ["train.py"])
    assert should_capture() is True  # this very process owns rank 5
    monkeypatch.setenv(ENV_OWNER, f"5:{os.getpid() + 1}")
    assert should_capture() is False  # someone else owns rank 5
    monkeypatch.setattr(bootstrap.sys, "argv", ["/usr/bin/torchrun", "x.py"])
    monkeypatch.delenv(ENV_OWNER)
    assert should_capture() is False  # the agent
