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
from commprof.format import layout

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
    _check_ancestors(path)
    try:
        _mkdirs(path.parent)  # missing parents are created, like `mkdir -p` (races are harmless)
        path.mkdir(mode=DIR_MODE, exist_ok=True)
        layout.ranks_dir(path).mkdir(mode=DIR_MODE, exist_ok=True)
        fd = os.open(layout.manifest_path(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        os.close(fd)  # a placeholder: this process owns manifest.json
        return path.resolve(), True
    except FileExistsError:
        return path.resolve(), False
    except OSError as exc:
        raise RunDirError(f"{path}: cannot create a writable run directory: "
                          f"{exc.strerror or exc}") from exc


def manifest_name(owner: bool) -> str:
    """manifest.json for the process that created the directory; one file per joining process."""
    return layout.MANIFEST if owner else layout.joined_manifest_name(socket.gethostname(), os.getpid())


def new_run_dir(out: str | None, command: list[str]) -> Path:
    """Create the run directory: ``out`` (must be empty or absent) or a new timestamped one."""
    if out:
        path = Path(out)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise RunDirError(f"{path}: already exists and is not an empty directory; "
                              "choose another --out")
        _check_ancestors(path)  # missing parents are created below, like `mkdir -p`
    else:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        name = _slug(command)
        root = Path(layout.DEFAULT_ROOT)
        path = root / f"{stamp}-{name}"
        n = 1
        while path.exists():
            n += 1
            path = root / f"{stamp}-{name}-{n}"
    created: list[Path] = []
    try:
        _mkdirs(path, created)
        layout.ranks_dir(path).mkdir(mode=DIR_MODE, exist_ok=True)
        probe = path / layout.WRITE_TEST
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        probe.unlink()
    except OSError as exc:
        _remove_created(path, created)  # a refused --out leaves nothing behind
        raise RunDirError(f"{path}: cannot create a writable run directory: "
                          f"{exc.strerror or exc}") from exc
    return path.resolve()


DIR_MODE = 0o755  # never group/world-writable, whatever the umask


def _mkdirs(path: Path, created: list[Path] | None = None) -> None:
    """Create ``path`` and missing parents with :data:`DIR_MODE` (further limited by the umask);
    each directory this call made is appended to ``created``."""
    missing = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=DIR_MODE)
        except FileExistsError:  # made meanwhile by another process (--join on many nodes)
            continue
        if created is not None:
            created.append(d)


def _remove_created(path: Path, created: list[Path]) -> None:
    """Undo a failed :func:`new_run_dir`: remove ``path/ranks`` where ``path`` is new, then the
    directories :func:`_mkdirs` made, deepest first (each only if empty)."""
    if path in created:
        try:
            layout.ranks_dir(path).rmdir()
        except OSError:  # never made, or not empty
            pass
    for d in reversed(created):
        try:
            d.rmdir()
        except OSError:
            return


def _check_ancestors(path: Path) -> None:
    """Refuse ``--out`` below something that is not a directory (a file, a dangling link)."""
    p = path.parent
    while not p.exists():
        if p.is_symlink():
            raise RunDirError(f"{path}: {p} is a dangling symbolic link; choose another --out")
        if p == p.parent:
            return
        p = p.parent
    if not p.is_dir():
        raise RunDirError(f"{path}: {p} is not a directory; choose another --out")


def _slug(command: list[str]) -> str:
    script = next((a for a in command if a.endswith(".py")), None)
    base = os.path.basename(script or (command[0] if command else "run"))
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", base.removesuffix(".py"))[:40] or "run"


def write_manifest(run_dir: Path, manifest: dict, name: str = layout.MANIFEST) -> None:
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
    return len(layout.capture_paths(run_dir))
