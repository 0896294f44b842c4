"""Run-directory creation and the run manifest (parent side; never imports torch)."""
from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import re
import secrets
import socket
import stat
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


def join_run_dir(out: str, share_group: bool = False) -> tuple[Path, bool]:
    """``--join``: use ``out`` whether or not another ``commprof run`` of the same job (another node,
    on a shared file system) created it; returns (path, True if this process created it).  A
    directory another user made, or one others may write in, is refused (:func:`open_run_dir`)."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"{path}: exists and is not a directory")
    check_parent(path)
    mode = layout.GROUP_DIR_MODE if share_group else layout.DIR_MODE
    try:
        _mkdirs(path.parent, mode=mode)  # missing parents are created, like `mkdir -p`
        try:
            os.mkdir(path, mode)
            os.chmod(path, mode)  # exactly, whatever the umask
        except FileExistsError:  # another node's `commprof run` made it: checked below
            pass
        fd = open_run_dir(path)
        try:
            _mkdir_at(fd, layout.RANKS)
            try:  # a placeholder: this process owns manifest.json
                os.close(os.open(layout.MANIFEST, _CREATE, _file_mode(fd), dir_fd=fd))
                return path.resolve(), True
            except FileExistsError:
                return path.resolve(), False
        finally:
            os.close(fd)
    except OSError as exc:
        raise RunDirError(f"{path}: cannot create a writable run directory: "
                          f"{exc.strerror or exc}") from exc


def manifest_name(owner: bool) -> str:
    """manifest.json for the process that created the directory; one file per joining process."""
    return layout.MANIFEST if owner else layout.joined_manifest_name(socket.gethostname(), os.getpid())


def new_run_dir(out: str | None, command: list[str], share_group: bool = False) -> Path:
    """Create the run directory, this user's alone: ``out`` (must be empty or absent) or a new
    timestamped one under :data:`layout.DEFAULT_ROOT`; made by ``mkdir`` (never an existing
    directory but an empty one of this user's), mode :data:`layout.DIR_MODE` (``share_group``:
    :data:`layout.GROUP_DIR_MODE`), below a parent :func:`check_parent` accepts."""
    mode = layout.GROUP_DIR_MODE if share_group else layout.DIR_MODE
    if out:
        path = Path(out)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise RunDirError(f"{path}: already exists and is not an empty directory; "
                              "choose another --out")
        check_parent(path)  # missing parents are created below, like `mkdir -p`
    else:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        root = Path(layout.DEFAULT_ROOT)
        path = root / f"{stamp}-{_slug(command)}"
        check_parent(path)
    created: list[Path] = []
    try:
        _mkdirs(path.parent, created, mode)
        path = _make_new(path, bool(out), mode, created)
        fd = open_run_dir(path)
        try:
            _mkdir_at(fd, layout.RANKS)
            os.close(os.open(layout.WRITE_TEST, _CREATE, 0o600, dir_fd=fd))
            os.unlink(layout.WRITE_TEST, dir_fd=fd)
        finally:
            os.close(fd)
    except OSError as exc:
        _remove_created(path, created)  # a refused --out leaves nothing behind
        raise RunDirError(f"{path}: cannot create a writable run directory: "
                          f"{exc.strerror or exc}") from exc
    return path.resolve()


_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW


def _make_new(path: Path, exact: bool, mode: int, created: list[Path]) -> Path:
    """``mkdir path`` (``exact``: an empty directory of this user's may already be there), else
    ``path-2``, ``path-3``, ...: a directory this call made (or emptied and owns)."""
    base, n = path, 1
    while True:
        try:
            os.mkdir(path, mode)
            created.append(path)
            break
        except FileExistsError:
            if exact:
                st = os.lstat(path)
                if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid():
                    break  # the empty --out checked above; open_run_dir checks it again
                raise RunDirError(f"{path}: already exists and is not a directory of yours; "
                                  "choose another --out") from None
            n += 1
            path = base.with_name(f"{base.name}-{n}")
    os.chmod(path, mode)  # exactly, whatever the umask
    return path


def _mkdirs(path: Path, created: list[Path] | None = None, mode: int = layout.DIR_MODE) -> None:
    """Create ``path`` and missing parents with ``mode`` (further limited by the umask); each
    directory this call made is appended to ``created``."""
    missing = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=mode)
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


def check_parent(path: Path) -> None:
    """Refuse a run directory ``path`` that another user could replace or fill: below something
    that is not a directory, below a directory every user may write in without the sticky bit
    (any ancestor: whoever can rename an ancestor can swap the run under it), or in a directory
    (its nearest existing ancestor, e.g. an existing ``./commprof-runs``) owned by another user
    than you or root.  Group-writable ancestors are trusted (the group is)."""
    p = path.parent
    while not p.exists():
        if p.is_symlink():
            raise RunDirError(f"{path}: {p} is a dangling symbolic link; choose another --out")
        if p == p.parent:
            return
        p = p.parent
    if not p.is_dir():
        raise RunDirError(f"{path}: {p} is not a directory; choose another --out")
    real = Path(os.path.realpath(p))
    try:
        _check_owner_and_ancestors(path, p, real)
    except OSError as exc:
        raise RunDirError(f"{path}: cannot check {exc.filename or p}: {exc.strerror or exc}") from exc


def _check_owner_and_ancestors(path: Path, p: Path, real: Path) -> None:
    st = os.stat(real)
    if st.st_uid not in (os.geteuid(), 0):
        raise RunDirError(f"{path}: {p} belongs to another user (uid {st.st_uid}), who could "
                          "replace the run directory; choose another --out")
    for d in (real, *real.parents):
        st = os.stat(d)
        if st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
            raise RunDirError(f"{path}: {d} is writable by every user and has no sticky bit "
                              f"(mode {stat.S_IMODE(st.st_mode):o}): another user could replace "
                              "the run directory; choose another --out")


def open_run_dir(path) -> int:
    """A descriptor of the run directory ``path`` (opened once, not through a symbolic link),
    after checking that it is this user's and nobody else may write in it: a directory another
    user put in its place raises PermissionError (an OSError)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        os.close(fd)
        raise PermissionError(errno.EPERM, f"not a private run directory of yours (owner uid "
                              f"{st.st_uid}, mode {stat.S_IMODE(st.st_mode):o}): was it replaced?",
                              str(path))
    return fd


def _file_mode(dir_fd: int) -> int:
    shared = os.fstat(dir_fd).st_mode & 0o050 == 0o050
    return layout.GROUP_FILE_MODE if shared else layout.FILE_MODE


def _mkdir_at(dir_fd: int, name: str, mode: int | None = None) -> None:
    """``mkdir name`` in ``dir_fd`` with exactly ``mode`` (default: the run directory's choice,
    see :func:`layout.dir_mode`); an existing one is left as it is."""
    if mode is None:
        mode = layout.GROUP_DIR_MODE if _file_mode(dir_fd) == layout.GROUP_FILE_MODE else layout.DIR_MODE
    try:
        os.mkdir(name, mode, dir_fd=dir_fd)
    except FileExistsError:
        return
    os.chmod(name, mode, dir_fd=dir_fd)  # whatever the umask; in a directory only we can write


def write_at(dir_fd: int, name: str, data: bytes, mode: int | None = None) -> None:
    """Write ``data`` as ``name`` in the directory ``dir_fd``: a new temporary file (``O_EXCL``,
    an unpredictable name, never through a link), then a rename; removed if the write fails."""
    tmp = f".{name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, _CREATE, _file_mode(dir_fd) if mode is None else mode, dir_fd=dir_fd)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:  # already gone
            pass
        raise


def prepare_bootstrap(run_dir: Path, module_source: Path, package: Path) -> Path:
    """``RUN/bootstrap/`` holding only ``sitecustomize.py`` (a copy of ``module_source``) and a link
    to ``package``: private (0700, even with ``--share-group``), made and written relative to the
    run directory's checked descriptor.  Several ``commprof run --join`` processes may prepare it
    at once: each file is put in place atomically (a private name, then a rename)."""
    fd = open_run_dir(run_dir)
    try:
        _mkdir_at(fd, layout.BOOTSTRAP, layout.DIR_MODE)
        boot = os.open(layout.BOOTSTRAP, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
    finally:
        os.close(fd)
    try:
        st = os.fstat(boot)
        if st.st_uid != os.geteuid() or st.st_mode & 0o077:
            raise PermissionError(errno.EPERM, "the bootstrap directory is not private "
                                  f"(owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o})",
                                  str(layout.bootstrap_dir(run_dir)))
        write_at(boot, layout.BOOTSTRAP_MODULE, module_source.read_bytes(), layout.FILE_MODE)
        link = layout.BOOTSTRAP_PACKAGE_LINK
        try:
            current = os.readlink(link, dir_fd=boot)
        except OSError:
            current = None
        if current is None or Path(current) != package:
            tmp = f".{link}.{secrets.token_hex(8)}"
            os.symlink(package, tmp, target_is_directory=True, dir_fd=boot)
            os.replace(tmp, link, src_dir_fd=boot, dst_dir_fd=boot)  # atomic: the last writer's
    finally:
        os.close(boot)
    return layout.bootstrap_dir(run_dir)


def _slug(command: list[str]) -> str:
    script = next((a for a in command if a.endswith(".py")), None)
    base = os.path.basename(script or (command[0] if command else "run"))
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", base.removesuffix(".py"))[:40] or "run"


def write_manifest(run_dir: Path, manifest: dict, name: str = layout.MANIFEST) -> None:
    """Atomically (re)write the manifest (``name``: see :func:`manifest_name`)."""
    write_json_atomic(Path(run_dir) / name, manifest)


def write_json_atomic(path: Path, obj: dict) -> None:
    """Write ``obj`` as JSON to ``path`` in a run directory via :func:`write_at` (readers never see
    half), into the directory :func:`open_run_dir` checked (a replaced one raises)."""
    fd = open_run_dir(Path(path).parent)
    try:
        write_at(fd, Path(path).name, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())
    finally:
        os.close(fd)


def start_manifest(command: list[str], env: dict) -> dict:
    from commprof._version import __version__
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
