"""Run directories: never group/world-writable, no write through a planted symlink."""
from __future__ import annotations

import json
import os
import stat

import pytest

from commprof.format import layout
from commprof.launch import rundir


@pytest.fixture
def open_umask():
    old = os.umask(0)
    yield
    os.umask(old)


def test_run_dirs_are_not_world_writable_even_with_umask_0(tmp_path, open_umask, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = rundir.new_run_dir(None, ["python", "train.py"])
    for d in (tmp_path / layout.DEFAULT_ROOT, run, run / "ranks"):
        mode = stat.S_IMODE(d.stat().st_mode)
        assert not mode & (stat.S_IWGRP | stat.S_IWOTH), (d, oct(mode))


def test_manifest_write_does_not_follow_a_planted_symlink(tmp_path):
    run = rundir.new_run_dir(str(tmp_path / "run"), ["python", "train.py"])
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched")
    (run / "manifest.json.tmp").symlink_to(victim)  # the temporary name it used to use
    rundir.write_manifest(run, {"schema": rundir.MANIFEST_SCHEMA})
    assert victim.read_text() == "untouched"
    assert json.loads((run / "manifest.json").read_text()) == {"schema": rundir.MANIFEST_SCHEMA}
    assert stat.S_IMODE((run / "manifest.json").stat().st_mode) == 0o600
