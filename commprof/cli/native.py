"""The capture path of ``commprof run --capture``, ``commprof build-native`` and ``commprof doctor``.

The native kernel is built in the launcher, before the job starts, by a subprocess
(``python -m commprof.capture.native``: the compiler's memory and any failure stay out of
``commprof run``, which never imports torch); a warm cache is found without it (a stamp keyed
by torch's version and location, :func:`commprof.capture.native.find_built`).  The workers get
the resolved path in the environment and only load the ``.so``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from commprof.capture import compat, native
from commprof.capture.config import (CAPTURE_PATHS, ENV_CAPTURE, ENV_CAPTURE_REQUESTED,
                                     ENV_NATIVE_SO, ENV_NATIVE_WHY, CaptureConfig)
from commprof.errors import CommprofError, UsageError

BUILD_TIMEOUT_S = 900  # a cold build takes 20-50 s on 2 cores; a hung compiler must not hang the job


def resolve(env: dict | None = None, timeout: float = BUILD_TIMEOUT_S, retry_failed: bool = True,
            on_build=None) -> dict:
    """Build or find the native kernel: {"ok": True, "so", "seconds", "built", ...} or
    {"ok": False, "why"}.  Never raises.

    ``retry_failed`` False: a build that failed before for this torch and source is not tried
    again (``--capture auto``).  ``on_build(cache_dir)`` is called before a build starts."""
    env = dict(os.environ if env is None else env)
    config = CaptureConfig.from_env(env)
    if config.native_disable:
        return {"ok": False, "why": f"disabled: {config.native_disable}"}
    t0 = time.perf_counter()
    found = native.find_built(config.native_cache)
    if found is not None:
        return {"ok": True, "so": str(found), "built": False, "size": found.stat().st_size,
                "seconds": round(time.perf_counter() - t0, 3), "dir": str(found.parent)}
    failed = None if retry_failed else native.find_failed(config.native_cache, env)
    if failed is not None:
        return {"ok": False, "why": f"{failed}; not tried again: `commprof build-native` retries"}
    try:
        native.precheck(env)  # no compiler, no ninja: said at once, without a subprocess importing torch
    except native.NativeUnavailable as exc:
        return {"ok": False, "why": str(exc)}
    root = native.cache_root(config.native_cache)
    if not _writable(root) and not any(root.glob(f"*/{native.MODULE}.so")):
        return {"ok": False, "why": f"cache directory not writable: {root}"}  # no build to find in it
    if on_build is not None:
        on_build(root)
    try:
        proc = subprocess.run([sys.executable, "-m", "commprof.capture.native"], env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"ok": False, "why": f"build did not finish in {timeout:g} s"}
    except OSError as exc:
        return {"ok": False, "why": f"cannot start the build: {exc.strerror or exc}"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                break
    tail = [line for line in (proc.stderr or proc.stdout).splitlines() if line.strip()]
    return {"ok": False, "why": f"build exited with {proc.returncode}: {tail[-1] if tail else 'no output'}"[:300]}


def capture_environment(capture: str, say) -> dict:
    """The workers' settings for ``--capture``; builds in the launcher for native/auto."""
    if capture not in CAPTURE_PATHS:
        raise UsageError(f"--capture {capture}: one of {', '.join(CAPTURE_PATHS)}")
    extra = {ENV_CAPTURE_REQUESTED: capture}
    if capture == "python":
        extra[ENV_CAPTURE] = "python"
        return extra
    result = resolve(retry_failed=capture == "native", on_build=lambda where: say(
        f"building the native capture kernel (once per torch install; 20-60 s; cache {where}) ..."))
    if result.get("ok"):
        extra.update({ENV_CAPTURE: "native", ENV_NATIVE_SO: result["so"]})
        if result.get("built"):
            say(f"native capture built in {result['seconds']:.1f} s ({result['so']})")
        return extra
    why = result.get("why", "unknown")
    say(f"native capture unavailable ({why}), using the Python path")
    extra.update({ENV_CAPTURE: "python", ENV_NATIVE_WHY: why})
    return extra


def build_native_command(verbose: bool = False) -> int:
    """``commprof build-native``: prebuild (e.g. on a shared file system before a large job)."""
    config = CaptureConfig.from_env()
    t0 = time.perf_counter()
    try:
        result = native.build(config.native_cache, config.native_disable, verbose=verbose)
    except native.NativeUnavailable as exc:
        raise CommprofError(f"native capture unavailable: {exc}") from exc
    how = "built" if result["built"] else "already built"
    print(f"{how}: {result['so']} ({result['size'] / 1e3:.0f} kB)")
    print(f"cache: {native.cache_root(config.native_cache)}")
    print(f"time: {time.perf_counter() - t0:.1f} s")
    return 0


def doctor_command() -> int:
    """``commprof doctor``: which capture path works here, and why."""
    config = CaptureConfig.from_env()
    root = native.cache_root(config.native_cache)
    version = compat.installed_torch()
    print(f"torch: {version or 'not installed'}")
    line = compat.support_line(version)
    print(f"torch support: {line or 'tested: ' + compat.TESTED[version.split('+', 1)[0]]}"
          if version else "torch support: no torch installed")
    print(f"native cache: {root} ({'writable' if _writable(root) else 'not writable'})")
    t0 = time.perf_counter()
    result = resolve(timeout=BUILD_TIMEOUT_S)
    if result.get("ok"):
        how = "built now" if result.get("built") else "found built"
        print(f"native capture: works ({how}: {result['so']}, {result.get('size', 0) / 1e3:.0f} kB, "
              f"{time.perf_counter() - t0:.1f} s)")
        print("capture path: native (the C++ kernel): `--capture auto`, the default, and "
              "`--capture native` use it; `--capture python` does not")
    else:
        print(f"native capture: unavailable ({result.get('why')})")
        print("capture path: python (the Python kernel on the c10d operators)")
    return 0


def _writable(path) -> bool:
    while not path.exists() and path.parent != path:
        path = path.parent
    return os.access(path, os.W_OK)
