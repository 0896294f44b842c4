"""The run directory is the user's alone (issue 26 item 2): made by mkdir below a parent no other
user can rename things in, written through its checked descriptor, directories 0700 and files
0600 (``--share-group``: 0750 / 0640), the bootstrap private.  Another user is played with
``setpriv`` (uid/gid 65534) where this test runs as root with setpriv installed."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from commprof.format import layout
from commprof.launch import rundir, supervisor
from runner import commprof, free_port

NOBODY = 65534


def _can_play_another_user() -> str | None:
    if shutil.which("setpriv") is None:
        return "setpriv is not installed"
    if os.geteuid() != 0:
        return "playing another user needs root (setpriv --reuid)"
    return None


needs_other_user = pytest.mark.skipif(_can_play_another_user() is not None,
                                      reason=str(_can_play_another_user()))


def _as_nobody(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                           sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


@pytest.fixture
def shared_dir():
    """A directory like /tmp: every user may create entries (1777), reachable by every user."""
    base = Path(tempfile.mkdtemp(prefix="commprof-shared-", dir="/tmp"))
    os.chmod(base, 0o755)
    shared = base / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    yield shared
    shutil.rmtree(base, ignore_errors=True)


def _one_error_line(proc, needle: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("commprof: error: ") and needle in lines[0], lines


def test_a_parent_every_user_may_write_in_without_the_sticky_bit_is_refused(tmp_path):
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    os.chmod(open_dir, 0o777)
    ran = tmp_path / "ran"
    job = ["--", sys.executable, "-c", f"open({str(ran)!r}, 'w')"]
    _one_error_line(commprof("run", "--out", str(open_dir / "run"), *job), "no sticky bit")
    _one_error_line(commprof("run", *job, cwd=open_dir), "no sticky bit")  # the default root too
    assert not ran.exists() and list(open_dir.iterdir()) == []


@needs_other_user
def test_a_commprof_runs_another_user_made_first_is_refused(shared_dir):
    planted = shared_dir / layout.DEFAULT_ROOT
    made = _as_nobody(f"import os; os.mkdir({str(planted)!r}); os.chmod({str(planted)!r}, 0o777)")
    assert made.returncode == 0, made.stderr
    proc = commprof("run", "--", sys.executable, "-c", "pass", cwd=shared_dir)
    _one_error_line(proc, f"belongs to another user (uid {NOBODY})")
    assert list(planted.iterdir()) == []  # nothing of the victim's went into it


@needs_other_user
def test_another_user_can_neither_swap_nor_read_the_run(shared_dir):
    run = rundir.new_run_dir(str(shared_dir / "run"), ["python", "train.py"])
    supervisor.prepare_bootstrap(run)
    rundir.write_manifest(run, {"schema": rundir.MANIFEST_SCHEMA, "command": ["secret"]})
    attempts = f"""
import os
run = {str(run)!r}
for what, act in [("rename", lambda: os.rename(run, run + ".stolen")),
                  ("list", lambda: os.listdir(run)),
                  ("read", lambda: open(os.path.join(run, "manifest.json")).read()),
                  ("plant", lambda: os.mkdir(os.path.join(run, "bootstrap2")))]:
    try:
        act()
        print("DID", what)
    except OSError as exc:
        print("refused", what, exc.errno)
"""
    out = _as_nobody(attempts)
    assert out.returncode == 0, out.stderr
    assert "DID" not in out.stdout and out.stdout.count("refused") == 4, out.stdout
    assert (run / "manifest.json").is_file() and Path(run).exists()


def test_a_replaced_run_directory_is_never_written(tmp_path):
    """Whoever replaced RUN by name (the hijack of issue 26): the manifest and the bootstrap are
    written only into a directory of this user's that nobody else may write in."""
    run = rundir.new_run_dir(str(tmp_path / "run"), ["python", "train.py"])
    run.rename(tmp_path / "moved")
    run.mkdir()
    os.chmod(run, 0o777)  # the replacement (another user's would also have another owner)
    with pytest.raises(PermissionError, match="was it replaced"):
        rundir.write_manifest(run, {"schema": rundir.MANIFEST_SCHEMA})
    with pytest.raises(PermissionError):
        supervisor.prepare_bootstrap(run)
    assert list(run.iterdir()) == []


JOB = """
import torch, torch.distributed as dist
dist.init_process_group("gloo", init_method="tcp://127.0.0.1:%d", rank=0, world_size=1)
dist.all_reduce(torch.ones(4))
dist.destroy_process_group()
"""


@pytest.mark.parametrize("share", [False, True], ids=["private", "share-group"])
def test_every_file_of_a_run_is_private(tmp_path, share):
    run = tmp_path / "run"
    proc = commprof("run", "--out", str(run), *(["--share-group"] if share else []), "--",
                    sys.executable, "-c", JOB % free_port())
    assert proc.returncode == 0, proc.stderr
    files, dirs = {}, {run: stat.S_IMODE(run.stat().st_mode)}
    for p in run.rglob("*"):
        st = p.lstat()
        if stat.S_ISDIR(st.st_mode):
            dirs[p] = stat.S_IMODE(st.st_mode)
        elif stat.S_ISREG(st.st_mode):
            files[p] = stat.S_IMODE(st.st_mode)
    assert layout.capture_paths(run) and layout.manifest_path(run) in files
    assert layout.summary_paths(run) and layout.sample_paths(run)
    boot = layout.bootstrap_dir(run)
    for d, mode in dirs.items():
        want = 0o700 if not share or d == boot else 0o750
        assert mode == want, (d, oct(mode))
    for f, mode in files.items():
        want = 0o600 if not share or f.parent == boot else 0o640
        assert mode == want, (f, oct(mode))
