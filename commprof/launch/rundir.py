"""Run-directory creation and the run manifest (parent side; never imports torch)."""
from __future__ import annotations

import datetime as _dt
import json
import os
import re
import socket
import time
from pathlib import Path

from commprof.errors import RunDirError
from commprof.format.reader import MANIFEST

DEFAULT_ROOT = "commprof-runs"
MANIFEST_SCHEMA = "commprof.run/1"
# Environment variables worth keeping with a run (values of anything else are never recorded).
ENV_KEEP = re.compile(r"^(WORLD_SIZE|RANK|LOCAL_RANK|LOCAL_WORLD_SIZE|MASTER_ADDR|MASTER_PORT|"
                      r"OMP_NUM_THREADS|CUDA_VISIBLE_DEVICES|NCCL_.*|GLOO_.*|TORCH_.*|"
                      r"SLURM_JOB_ID|SLURM_NNODES|SLURM_NTASKS|COMMPROF_.*)$")


def expand_out(out: str) -> str:
    """``{VAR}`` in ``--out`` from the environment: ``runs/{SLURM_JOB_ID}/{SLURM_PROCID}``."""
    def sub(m):
        value = os.environ.get(m.group(1))
        if value is None:
            raise RunDirError(f"--out {out}: {{{m.group(1)}}} is not set in the environment")
        return value
    return re.sub(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", sub, out)


def join_run_dir(out: str) -> tuple[Path, bool]:
    """``--join``: use ``out`` whether or not another ``commprof run`` of the same job (another node,
    on a shared file system) created it; returns (path, True if this process created it)."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"{path}: exists and is not a directory")
    if not path.parent.is_dir():
        raise RunDirError(f"{path}: parent directory {path.parent} does not exist")
    try:
        path.mkdir(mode=DIR_MODE, exist_ok=True)
        (path / "ranks").mkdir(mode=DIR_MODE, exist_ok=True)
        fd = os.open(path / MANIFEST, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        os.close(fd)  # a placeholder: this process owns manifest.json
        return path.resolve(), True
    except FileExistsError:
        return path.resolve(), False
    except OSError as exc:
        raise RunDirError(f"{path}: cannot create a writable run directory: "
                          f"{exc.strerror or exc}") from exc


def manifest_name(owner: bool) -> str:
    """manifest.json for the process that created the directory; one file per joining process."""
    return MANIFEST if owner else f"manifest.{socket.gethostname()}.{os.getpid()}.json"


def new_run_dir(out: str | None, command: list[str]) -> Path:
    """Create the run directory: ``out`` (must be empty or absent) or a new timestamped one."""
    if out:
        path = Path(out)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise RunDirError(f"{path}: already exists and is not an empty directory; "
                              "choose another --out")
        if not path.parent.is_dir():  # like mkdir without -p: a typo must not grow a new tree
            what = "is not a directory" if path.parent.exists() else "does not exist"
            raise RunDirError(f"{path}: parent directory {path.parent} {what}; create it first "
                              "or choose another --out")
    else:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        name = _slug(command)
        root = Path(DEFAULT_ROOT)
        path = root / f"{stamp}-{name}"
        n = 1
        while path.exists():
            n += 1
            path = root / f"{stamp}-{name}-{n}"
    try:
        _mkdirs(path)
        (path / "ranks").mkdir(mode=DIR_MODE, exist_ok=True)
        probe = path / ".write-test"
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        probe.unlink()
    except OSError as exc:
        raise RunDirError(f"{path}: cannot create a writable run directory: "
                          f"{exc.strerror or exc}") from exc
    return path.resolve()


DIR_MODE = 0o755  # never group/world-writable, whatever the umask


def _mkdirs(path: Path) -> None:
    """Create ``path`` and missing parents with :data:`DIR_MODE` (further limited by the umask)."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        d.mkdir(mode=DIR_MODE, exist_ok=True)


def _slug(command: list[str]) -> str:
    script = next((a for a in command if a.endswith(".py")), None)
    base = os.path.basename(script or (command[0] if command else "run"))
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", base.removesuffix(".py"))[:40] or "run"


def latest_run(root: str | os.PathLike = DEFAULT_ROOT) -> Path:
    """The most recently started run under ``root``."""
    root = Path(root)
    runs = [p for p in root.glob("*") if (p / MANIFEST).is_file()] if root.is_dir() else []
    if not runs:
        raise RunDirError(f"{root}: no commprof runs here; run `commprof run -- COMMAND` first, "
                          "or name a run directory")
    return max(runs, key=lambda p: (p / MANIFEST).stat().st_mtime_ns)


def write_manifest(run_dir: Path, manifest: dict, name: str = MANIFEST) -> None:
    """Atomically (re)write the manifest (``name``: see :func:`manifest_name`)."""
    write_json_atomic(Path(run_dir) / name, manifest)


def write_json_atomic(path: Path, obj: dict) -> None:
    """Write ``obj`` as JSON to ``path`` via a temporary file and a rename (readers never see half)."""
    tmp = path.with_name(path.name + ".tmp")
    # O_NOFOLLOW: a symlink planted at the temporary name must not redirect the write.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def start_manifest(command: list[str], env: dict) -> dict:
    from commprof import __version__
    return {
        "schema": MANIFEST_SCHEMA,
        "status": "running",
        "command": list(command),
        "cwd": os.getcwd(),
        "host": socket.gethostname(),
        "start_wall_ns": time.time_ns(),
        "env": {k: v for k, v in sorted(env.items()) if ENV_KEEP.match(k)},
        "commprof_version": __version__,
        "torch_version": _torch_version(),
    }


def _torch_version() -> str | None:
    from importlib import metadata
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None


def count_captures(run_dir: Path) -> int:
    """Number of capture files in a run directory."""
    from commprof.format.schema import FILE_SUFFIX
    return sum(1 for _ in (Path(run_dir) / "ranks").glob("*" + FILE_SUFFIX))
