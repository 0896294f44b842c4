"""The native capture kernel (the C++ files beside this one): built once per torch install, then
only loaded.

The C++ sources (every ``*.cpp`` here; ``capture.h`` says which file holds what) are compiled
with ``torch.utils.cpp_extension`` (JIT, ninja) into one module, in a build directory keyed by
everything the binary depends on -- torch version, C++ ABI, Python ABI tag, machine and the hash
of every source and header -- under the cache directory (``COMMPROF_NATIVE_CACHE``, else
``$XDG_CACHE_HOME/commprof/native``, else ``~/.cache/commprof/native``).  ``commprof run`` builds
it in the launcher before the job starts (``python -m commprof.capture.native``, a subprocess:
the compiler's memory and failures stay out of the launcher) and hands the ``.so`` path to the
workers, which only load it (:func:`load`); concurrent builds serialise on cpp_extension's lock
file in the build directory.  Anything that goes wrong raises :class:`NativeUnavailable` with
a one-line reason: the caller then uses the Python kernel.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCES = sorted(HERE.glob("*.cpp"))  # compiled into one module
HEADERS = sorted(HERE.glob("*.h"))
MODULE = "commprof_native"
INDEX = "index"  # quick-key stamps: the launcher finds a built .so without importing torch
CFLAGS = ["-O2", "-fvisibility=hidden"]


class NativeUnavailable(RuntimeError):
    """The native kernel cannot be used here; ``str(exc)`` says why, in one line."""


def source_hash() -> str:
    """Hash of every C++ file (its name and content) and the flags: a change to any rebuilds."""
    digest = hashlib.sha256(" ".join(CFLAGS).encode())
    for path in sorted(SOURCES + HEADERS):
        digest.update(f"\0{path.name}\0{path.stat().st_size}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def cache_root(cache: str | None = None) -> Path:
    """Where builds go (``cache``: ``CaptureConfig.native_cache``)."""
    if cache:
        return Path(cache).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "commprof" / "native"


def build_key(torch) -> str:
    """Name of the build directory for this torch (imported) and this source."""
    abi = int(bool(getattr(torch._C, "_GLIBCXX_USE_CXX11_ABI", 0)))
    version = torch.__version__.replace("+", "_")
    return (f"torch{version}-cxx11abi{abi}-{sys.implementation.cache_tag}-{platform.machine()}-"
            f"{source_hash()}")


def quick_key() -> str:
    """Key of this torch install found without importing torch (its version and location)."""
    from importlib import metadata
    try:
        dist = metadata.distribution("torch")
        where = str(dist.locate_file(""))
        version = dist.version
    except metadata.PackageNotFoundError as exc:
        raise NativeUnavailable("torch is not installed") from exc
    raw = f"{version}|{where}|{sys.implementation.cache_tag}|{platform.machine()}|{source_hash()}"
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def so_path(build_dir: Path) -> Path:
    return build_dir / f"{MODULE}.so"


def find_built(cache: str | None = None) -> Path | None:
    """The built ``.so`` for this torch install, if a build left a stamp (no torch import)."""
    try:
        stamp = cache_root(cache) / INDEX / f"{quick_key()}.json"
        path = Path(json.loads(stamp.read_text())["so"])
    except (OSError, ValueError, KeyError, NativeUnavailable):
        return None
    return path if path.is_file() else None


def find_failed(cache: str | None = None, env: dict | None = None) -> str | None:
    """Why an earlier build for this torch install and source failed, if one did (no torch import).

    ``--capture auto`` then uses the Python path at once instead of compiling again on every run;
    ``commprof build-native`` and ``--capture native`` try again, and so does a change of torch,
    commprof or ``$CXX``."""
    try:
        stamp = json.loads((cache_root(cache) / INDEX / f"{quick_key()}.failed.json").read_text())
    except (OSError, ValueError, NativeUnavailable):
        return None
    if not isinstance(stamp, dict) or stamp.get("cxx") != _cxx(env):
        return None
    return str(stamp.get("why") or "an earlier build failed")


def _cxx(env: dict | None) -> str:
    return (os.environ if env is None else env).get("CXX") or "c++"


def precheck(env: dict | None = None) -> None:
    """What a build needs that can be checked without importing torch: a C++ compiler and ninja
    (``env``: the build's environment, default this process's).

    Raises :class:`NativeUnavailable` with the reason."""
    cxx, path = _cxx(env), (os.environ if env is None else env).get("PATH")
    if shutil.which(cxx, path=path) is None:
        raise NativeUnavailable(f"no C++ compiler ({cxx!r} not found)")
    if shutil.which("ninja", path=path) is None and not _ninja_module():
        raise NativeUnavailable("ninja is not installed (pip install ninja)")


def build(cache: str | None = None, disable: str | None = None, verbose: bool = False) -> dict:
    """Build (or find built) the kernel; returns {"so", "seconds", "built", "dir"}.

    Raises :class:`NativeUnavailable` (with the reason) when it cannot be built here.
    """
    if disable:
        raise NativeUnavailable(f"disabled: {disable}")
    t0 = time.perf_counter()
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError as exc:
        raise NativeUnavailable(f"cannot import torch.utils.cpp_extension: {exc}") from exc
    if not hasattr(torch._C, "_distributed_c10d"):
        raise NativeUnavailable("this torch has no torch.distributed")
    build_dir = cache_root(cache) / build_key(torch)
    so = so_path(build_dir)
    built = not so.is_file()
    if built:
        precheck()
        try:
            build_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise NativeUnavailable(f"cache directory not writable: {build_dir.parent}: "
                                    f"{exc.strerror or exc}") from exc
        if not os.access(build_dir, os.W_OK):
            raise NativeUnavailable(f"cache directory not writable: {build_dir}")
        if not SOURCES:
            raise NativeUnavailable(f"no C++ sources in {HERE} (an incomplete install)")
        try:
            cpp_extension.load(name=MODULE, sources=[str(p) for p in SOURCES],
                               build_directory=str(build_dir), extra_cflags=CFLAGS, verbose=verbose,
                               is_python_module=True)
        except (RuntimeError, OSError, ImportError, SystemExit, subprocess.SubprocessError) as exc:
            why = f"build failed: {_last_line(exc)}"
            _write_index(cache, f"{quick_key()}.failed.json", {"why": why, "cxx": _cxx(None)})
            raise NativeUnavailable(why) from exc
    else:
        load(so, key=build_key(torch))  # a cached build must still load here
    _write_index(cache, f"{quick_key()}.json", {"so": str(so)})
    _forget_failure(cache)
    return {"so": str(so), "seconds": round(time.perf_counter() - t0, 3), "built": built,
            "dir": str(build_dir), "size": so.stat().st_size}


def load(so: str | os.PathLike, key: str | None = None):
    """Import the built module at ``so`` (torch must be imported).  ``key``: the build key it
    must have been built for (its directory's name), checked against this process's torch."""
    import importlib.util
    so = Path(so)
    if key is not None and so.parent.name != key:
        raise NativeUnavailable(f"{so} was built for another torch/ABI/source ({so.parent.name}; "
                                f"this process needs {key})")
    if not so.is_file():
        raise NativeUnavailable(f"{so}: not built")
    existing = sys.modules.get(MODULE)
    if existing is not None and getattr(existing, "__file__", None) == str(so):
        return existing
    try:
        spec = importlib.util.spec_from_file_location(MODULE, so)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except (ImportError, OSError) as exc:
        raise NativeUnavailable(f"cannot load {so}: {_last_line(exc)}") from exc
    sys.modules[MODULE] = module
    return module


def load_for(torch, so: str | None, cache: str | None = None):
    """In a worker: the module the launcher built (``so``), else a cached build; never builds."""
    key = build_key(torch)
    return load(so if so else so_path(cache_root(cache) / key), key=key)


def _write_index(cache: str | None, name: str, content: dict) -> None:
    """One stamp of the index, written atomically (build: its .so; a failed build: why)."""
    try:
        index = cache_root(cache) / INDEX
        index.mkdir(parents=True, exist_ok=True)
        tmp = index / f".{name}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(content))
        os.replace(tmp, index / name)
    except OSError:
        return  # a read-only cache: the launcher then asks a subprocess each time (slower, same result)


def _forget_failure(cache: str | None) -> None:
    try:
        (cache_root(cache) / INDEX / f"{quick_key()}.failed.json").unlink(missing_ok=True)
    except OSError:
        return  # a read-only index: the build's own stamp could not be written either


def _ninja_module() -> bool:
    try:
        import ninja  # noqa: F401
    except ImportError:
        return False
    return True


def _last_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:300]


def main(argv: list[str] | None = None) -> int:
    """``python -m commprof.capture.native [--verbose]``: build; print one JSON line."""
    argv = sys.argv[1:] if argv is None else argv
    from commprof.capture.config import CaptureConfig
    config = CaptureConfig.from_env()
    try:
        out = dict(build(config.native_cache, config.native_disable, verbose="--verbose" in argv), ok=True)
    except NativeUnavailable as exc:
        out = {"ok": False, "why": str(exc)}
    print(json.dumps(out), flush=True)
    return 0 if out["ok"] else 3
