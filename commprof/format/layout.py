"""Where everything lives in a run directory: the one module that spells its paths and file names.

::

    RUN/
      manifest.json                        the run manifest (written by the ``commprof run`` that
                                           created RUN)
      manifest.<host>.<pid>.json           one per joining ``commprof run --join`` process
      ranks/rank<R>.a<attempt>.p<pid>.cpf  one capture per captured process and torchrun attempt
      ranks/bootstrap-<pid>.err            a worker whose capture could not start, and why
      nodes/<host>.p<pid>.cps              one node sampler file per ``commprof run`` process
      summaries/<host>.p<pid>.cpsum        a node's captures reduced at job end (the report
                                           reads these instead of the captures they cover)
      summaries/summary.key                the run's secret key the summaries carry a MAC under
      kineto/rank<R>.a<attempt>.p<pid>.w<window>.pt.trace.json
                                           Kineto's own trace of one GPU window (``--gpu-trace``)
      hang.json                            the hang report (``--hang-timeout``)
      probe.json                           the fabric probe (``--probe``)
      bootstrap/sitecustomize.py           what every Python process of the job runs first, and
      bootstrap/commprof                   a link to the installed package it imports

Standard library only (capture code in the workers uses it too).  Paths are :class:`pathlib.Path`;
every function takes a run directory as ``str`` or path-like.
"""
from __future__ import annotations

import os
from pathlib import Path

from commprof.errors import RunDirError

DEFAULT_ROOT = "commprof-runs"  # where `commprof run` puts runs without --out; `commprof report` looks
MANIFEST = "manifest.json"
RANKS = "ranks"
NODES = "nodes"
KINETO = "kineto"  # GPU windows' Kineto traces (opt-in), one per window and process
KINETO_SUFFIX = ".pt.trace.json"  # the suffix TensorBoard's plugin and HTA look for
HANG = "hang.json"
PROBE = "probe.json"
BOOTSTRAP = "bootstrap"
BOOTSTRAP_MODULE = "sitecustomize.py"
BOOTSTRAP_PACKAGE_LINK = "commprof"
WRITE_TEST = ".write-test"  # created and removed once, to check that RUN is writable
CAPTURE_SUFFIX = ".cpf"  # one per captured process, under RUN/ranks/
SAMPLES_SUFFIX = ".cps"  # one per node sampler, under RUN/nodes/ (same framing, no rank)
SUMMARIES = "summaries"
SUMMARY_SUFFIX = ".cpsum"  # one per `commprof run` process, under RUN/summaries/
SUMMARY_KEY = "summary.key"  # the run's secret the summaries are authenticated with (0600)

PathLike = str | os.PathLike

# Who may read a run (docs/reliability.md, trust model): its owner only, unless ``commprof run
# --share-group`` made its directory group-readable; then every file in it is made readable by
# the group too.  Nothing in a run is ever group- or world-writable.
DIR_MODE = 0o700
FILE_MODE = 0o600
GROUP_DIR_MODE = 0o750
GROUP_FILE_MODE = 0o640


def file_mode(directory: PathLike) -> int:
    """The mode for a new file in ``directory`` of a run: :data:`GROUP_FILE_MODE` where the
    directory is group-readable (``--share-group``), else :data:`FILE_MODE` (the workers follow
    the run directory's choice, with no setting of their own)."""
    try:
        shared = os.stat(directory).st_mode & 0o050 == 0o050
    except OSError:  # not there yet: the creator says what it fails with
        shared = False
    return GROUP_FILE_MODE if shared else FILE_MODE


def dir_mode(directory: PathLike) -> int:
    """The mode for a new directory in ``directory`` of a run (see :func:`file_mode`)."""
    return GROUP_DIR_MODE if file_mode(directory) == GROUP_FILE_MODE else DIR_MODE


def ranks_dir(run_dir: PathLike) -> Path:
    return Path(run_dir) / RANKS


def nodes_dir(run_dir: PathLike) -> Path:
    return Path(run_dir) / NODES


def manifest_path(run_dir: PathLike) -> Path:
    return Path(run_dir) / MANIFEST


def joined_manifest_name(host: str, pid: int | str) -> str:
    """The manifest of a ``--join`` process that did not create the directory."""
    return f"manifest.{host}.{pid}.json"


def joined_manifests(run_dir: PathLike) -> list[Path]:
    return sorted(Path(run_dir).glob(joined_manifest_name("*", "*")))


def hang_path(run_dir: PathLike) -> Path:
    return Path(run_dir) / HANG


def probe_path(run_dir: PathLike) -> Path:
    return Path(run_dir) / PROBE


def bootstrap_dir(run_dir: PathLike) -> Path:
    return Path(run_dir) / BOOTSTRAP


def capture_name(rank: int, attempt: int, pid: int) -> str:
    """``rank00003.a0.p4242.cpf``: rank, torchrun restart count (attempt) and process id."""
    return f"rank{rank:05d}.a{attempt}.p{pid}{CAPTURE_SUFFIX}"


def capture_paths(run_dir: PathLike) -> list[Path]:
    """All capture files of a run, in name order."""
    return sorted(ranks_dir(run_dir).glob("*" + CAPTURE_SUFFIX))


def samples_name(host: str, pid: int) -> str:
    return f"{host}.p{pid}{SAMPLES_SUFFIX}"


def sample_paths(run_dir: PathLike) -> list[Path]:
    """All node sampler files of a run, in name order."""
    return sorted(nodes_dir(run_dir).glob("*" + SAMPLES_SUFFIX))


def summaries_dir(run_dir: PathLike) -> Path:
    return Path(run_dir) / SUMMARIES


def summary_name(host: str, pid: int) -> str:
    return f"{host}.p{pid}{SUMMARY_SUFFIX}"


def summary_key_path(run_dir: PathLike) -> Path:
    return summaries_dir(run_dir) / SUMMARY_KEY


def summary_paths(run_dir: PathLike) -> list[Path]:
    """All node summaries of a run, in name order."""
    return sorted(summaries_dir(run_dir).glob("*" + SUMMARY_SUFFIX))


def kineto_dir(run_dir: PathLike) -> Path:
    return Path(run_dir) / KINETO


def kineto_trace_name(rank: int, attempt: int, pid: int, window: int) -> str:
    """``rank00003.a0.p4242.w2.pt.trace.json``: one GPU window's Kineto trace."""
    return f"rank{rank:05d}.a{attempt}.p{pid}.w{window}{KINETO_SUFFIX}"


def kineto_traces(run_dir: PathLike) -> list[Path]:
    """The Kineto traces a run kept (``commprof run --gpu-trace``), in name order."""
    return sorted(kineto_dir(run_dir).glob("*" + KINETO_SUFFIX))


def bootstrap_error_name(pid: int | str) -> str:
    return f"bootstrap-{pid}.err"


def bootstrap_errors(run_dir: PathLike) -> list[Path]:
    """The ``bootstrap-<pid>.err`` files of workers whose capture could not start."""
    return sorted(ranks_dir(run_dir).glob(bootstrap_error_name("*")))


def latest_run(root: PathLike = DEFAULT_ROOT) -> Path:
    """The most recently started run under ``root`` (the newest manifest)."""
    root = Path(root)
    runs = [p for p in root.glob("*") if manifest_path(p).is_file()] if root.is_dir() else []
    if not runs:
        raise RunDirError(f"{root}: no commprof runs here; run `commprof run -- COMMAND` first, "
                          "or name a run directory")
    return max(runs, key=lambda p: manifest_path(p).stat().st_mtime_ns)


STOPPED_INFIX = ".stopped-"  # a capture's empty marker: why it stopped (``<capture>.stopped-ENOSPC``)


def stopped_marker(capture: PathLike, reason: str) -> Path:
    """The empty file that says a capture stopped for ``reason`` (an errno name, e.g. ENOSPC):
    on a full disk a name can still be created where no byte can be written."""
    return Path(f"{capture}{STOPPED_INFIX}{reason}")


def stopped_reason(capture: PathLike) -> str | None:
    """The errno name of a capture's :func:`stopped_marker`, or None when it has none."""
    capture = Path(capture)
    found = sorted(capture.parent.glob(capture.name + STOPPED_INFIX + "*"))
    return found[0].name[len(capture.name) + len(STOPPED_INFIX):][:32] if found else None
