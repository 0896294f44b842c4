"""The native capture kernel's selection, build cache and fallback (``--capture``).

The capture itself is checked record for record against the Python path by
tests/integration/test_capture_coverage.py (every job runs under both paths).  Here: the settings, the build
key and cache, and that a native path that cannot be had never costs the job anything -- one
line on stderr, and the Python path captures everything.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from commprof.capture import native
from commprof.capture.config import CaptureConfig
from commprof.format.reader import capture_paths, read_capture
from runner import HERE, commprof, torchrun

JOB = HERE / "jobs" / "allreduce_loop.py"
FALLBACK = "commprof: native capture unavailable ({why}), using the Python path"


def test_capture_setting_is_read_and_checked():
    assert CaptureConfig.from_env({}).capture == "auto"  # the default: native where it builds
    cfg = CaptureConfig.from_env({"COMMPROF_CAPTURE": "Native", "COMMPROF_NATIVE_SO": "/x.so",
                                  "COMMPROF_NATIVE_CACHE": "/c", "COMMPROF_NATIVE_DISABLE": "why"})
    assert (cfg.capture, cfg.native_so, cfg.native_cache, cfg.native_disable) == ("native", "/x.so", "/c", "why")
    bad = CaptureConfig.from_env({"COMMPROF_CAPTURE": "fast"})
    assert bad.capture == "auto" and "COMMPROF_CAPTURE='fast'" in bad.problem


def test_build_key_names_what_the_binary_depends_on():
    import torch
    key = native.build_key(torch)
    assert key.startswith("torch" + torch.__version__.replace("+", "_"))
    assert "cxx11abi" in key and native.source_hash() in key
    assert native.quick_key() == native.quick_key()  # no torch import needed, stable


def test_cache_root_default_and_override(monkeypatch, tmp_path):
    assert native.cache_root(str(tmp_path)) == tmp_path
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert native.cache_root(None) == tmp_path / "xdg" / "commprof" / "native"


def test_unusable_cache_directory_is_a_reason(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(native.NativeUnavailable, match="cache directory not writable"):
        native.build(cache=str(blocker / "cache"))
    assert native.find_built(str(blocker / "cache")) is None


def test_disable_seam_and_missing_compiler(tmp_path, monkeypatch):
    with pytest.raises(native.NativeUnavailable, match="disabled: testing"):
        native.build(cache=str(tmp_path), disable="testing")
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    with pytest.raises(native.NativeUnavailable, match="no C\\+\\+ compiler"):
        native.build(cache=str(tmp_path / "empty"))


def _fake_compiler(path: Path, log: Path) -> Path:
    """A "c++" that names a version (cpp_extension asks) and fails every compile, logging each call."""
    path.write_text(f'#!/bin/sh\necho "$@" >> {log}\ncase "$1" in --version|-v|-dumpversion) '
                    'echo "g++ (GCC) 12.2.0";; *) echo "fake: cannot compile" >&2; exit 1;; esac\n')
    path.chmod(0o755)
    return path


@pytest.mark.slow
def test_a_failed_build_is_said_once_and_auto_does_not_compile_again(tmp_path, monkeypatch):
    from commprof.capture.config import ENV_CAPTURE
    from commprof.cli.native import capture_environment
    log = tmp_path / "compiler.log"
    monkeypatch.setenv("COMMPROF_NATIVE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CXX", str(_fake_compiler(tmp_path / "c++", log)))
    said: list[str] = []
    assert capture_environment("auto", said.append)[ENV_CAPTURE] == "python"
    assert said[0].startswith("building the native capture kernel (once per torch install")
    assert str(tmp_path / "cache") in said[0]
    assert said[1].startswith("native capture unavailable (build failed: ") and len(said) == 2
    calls = log.read_text()
    said.clear()
    assert capture_environment("auto", said.append)[ENV_CAPTURE] == "python"
    assert log.read_text() == calls  # the compiler was not run again
    assert len(said) == 1 and "not tried again: `commprof build-native` retries" in said[0]
    said.clear()
    capture_environment("native", said.append)  # asked for: tried again
    assert said[0].startswith("building") and len(log.read_text()) > len(calls)
    calls = log.read_text()
    monkeypatch.setenv("CXX", str(_fake_compiler(tmp_path / "g++", log)))  # another compiler
    said.clear()
    capture_environment("auto", said.append)
    assert said[0].startswith("building") and len(log.read_text()) > len(calls)


def test_a_build_for_another_torch_is_refused(tmp_path):
    so = tmp_path / "torch0.0-other" / f"{native.MODULE}.so"
    so.parent.mkdir()
    so.write_bytes(b"")
    with pytest.raises(native.NativeUnavailable, match="built for another torch"):
        native.load(so, key="torch9.9-mine")


def _events(run_dir: Path) -> list[list[dict]]:
    return [[e for e in read_capture(p).events if e.get("event") == "capture_path"]
            for p in capture_paths(run_dir)]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["disabled", "no_compiler"])
def test_fallback_says_so_once_and_python_captures_everything(tmp_path, how):
    env = {"COMMPROF_NATIVE_CACHE": str(tmp_path / "cache")}
    if how == "disabled":
        env["COMMPROF_NATIVE_DISABLE"] = "testing the fallback"
        why = "disabled: testing the fallback"
    else:
        env["CXX"] = "/nonexistent/c++"
        why = "no C++ compiler ('/nonexistent/c++' not found)"
    run = tmp_path / "run"
    proc = commprof("run", "--capture", "auto", "--out", str(run), "--", *torchrun(JOB, "25", "8"),
                    env=env)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if "native capture unavailable" in line]
    assert lines == [FALLBACK.format(why=why)], proc.stderr
    caps = [read_capture(p) for p in capture_paths(run)]
    assert sorted(c.rank for c in caps) == [0, 1]
    for c in caps:
        assert len(c.arrays["coll"]) == 25
        (event,) = [e for e in c.events if e.get("event") == "capture_path"]
        assert (event["path"], event["requested"], event["why"]) == ("python", "auto", why)
        assert not [e for e in c.events if e.get("type") == "degraded"]  # auto: expected, not a fault


@pytest.mark.slow
def test_native_asked_for_but_unavailable_is_degraded_not_fatal(tmp_path):
    run = tmp_path / "run"
    proc = commprof("run", "--capture", "native", "--out", str(run), "--", *torchrun(JOB, "10", "8"),
                    env={"COMMPROF_NATIVE_DISABLE": "no"})
    assert proc.returncode == 0, proc.stderr
    for c in (read_capture(p) for p in capture_paths(run)):
        assert len(c.arrays["coll"]) == 10
        degraded = {e["where"] for e in c.events if e.get("type") == "degraded"}
        assert degraded == {"capture.native"}


@pytest.mark.slow
def test_native_run_records_the_path_and_its_cost(tmp_path):
    from commprof.cli.native import resolve
    built = resolve()
    if not built.get("ok"):
        pytest.skip(f"native capture unavailable here: {built.get('why')}")
    run = tmp_path / "run"
    proc = commprof("run", "--capture", "auto", "--out", str(run), "--", *torchrun(JOB, "40", "8"))
    assert proc.returncode == 0, proc.stderr
    assert "native capture unavailable" not in proc.stderr
    for c in (read_capture(p) for p in capture_paths(run)):
        (event,) = [e for e in c.events if e.get("event") == "capture_path"]
        assert event["path"] == "native" and event["so"] == built["so"]
        cost = [e for e in c.events if e.get("type") == "self_cost"][-1]
        assert cost["calls"] == len(c.arrays["coll"]) == 40
        assert 0 < cost["record_ns"] / cost["calls"] < 1_000_000  # measured inside the kernel
        assert c.trailer["records"] == 40


@pytest.mark.slow
def test_build_native_and_doctor_commands():
    proc = commprof("build-native", timeout=900)
    if proc.returncode != 0:
        assert "native capture unavailable" in proc.stderr
        return
    assert "cache:" in proc.stdout and ".so" in proc.stdout and "time:" in proc.stdout
    doctor = commprof("doctor", timeout=900)
    assert doctor.returncode == 0
    assert "native capture: works" in doctor.stdout, doctor.stdout
    so = proc.stdout.splitlines()[0].split(": ", 1)[1].rsplit(" (", 1)[0]
    assert so.endswith(".so") and os.path.exists(so), proc.stdout


def test_the_overhead_section_names_the_kernel_and_charges_each_path_its_own_hop():
    import types
    import pandas as pd
    from commprof.analysis.outcome import summary
    from commprof.analysis.outcome.summary import self_overhead

    def part(path, blocking=0):
        return types.SimpleNamespace(process={"self_calls": 100, "self_record_ns": 200_000,
                                              "capture_path": path}, blocking_calls=blocking)

    wall = pd.DataFrame({"wall_s": [1.0, 1.0]})
    native = self_overhead([part("native"), part("native", blocking=40)], wall)
    assert native["capture_path"] == "native" and native["record_us_per_call"] == pytest.approx(2.0)
    # 160 async calls and 40 blocking ones, each at its constant, over the 200 calls
    expected = (160 * summary.DISPATCH_NS_NATIVE_ASYNC_CALL + 40 * summary.DISPATCH_NS_NATIVE_BLOCKING_CALL) / 200
    assert native["dispatch_us_per_call_estimate"] == pytest.approx(expected / 1e3)
    assert native["estimated_s_per_rank"] == pytest.approx((400_000 + 200 * expected) / 2 / 1e9)
    mixed = self_overhead([part("native"), part("python")], wall)
    assert mixed["capture_path"] == "native,python"
    assert mixed["dispatch_us_per_call_estimate"] == pytest.approx(
        (summary.DISPATCH_NS_ASYNC_CALL + summary.DISPATCH_NS_NATIVE_ASYNC_CALL) / 2 / 1e3)


def test_the_native_hop_constants_are_the_benchmark_figures_in_the_docs():
    """The native path's un-timed CPU per call is what benchmarks/run_cost.py measured, as
    docs/performance.md records it (so the two cannot drift apart)."""
    import re
    from commprof.analysis.outcome import summary
    text = (Path(__file__).resolve().parents[2] / "docs" / "performance.md").read_text()
    found = re.search(r"constants: \*\*([0-9.]+) µs\*\* per blocking call, \*\*([0-9.]+) µs\*\* per "
                      r"call without a wait", text)
    assert found, "docs/performance.md lost the native path's constants"
    assert summary.DISPATCH_NS_NATIVE_BLOCKING_CALL == round(float(found.group(1)) * 1000)
    assert summary.DISPATCH_NS_NATIVE_ASYNC_CALL == round(float(found.group(2)) * 1000)


def test_a_read_only_cache_without_a_build_is_said_without_starting_a_build(tmp_path, monkeypatch):
    import commprof.cli.native as cli_native
    started = []
    monkeypatch.setattr(cli_native, "_writable", lambda path: False)
    monkeypatch.setattr(cli_native.subprocess, "run", lambda *a, **k: started.append(a) or
                        (_ for _ in ()).throw(OSError("no build here")))
    cache = tmp_path / "cache"
    result = cli_native.resolve({**os.environ, "COMMPROF_NATIVE_CACHE": str(cache)})
    assert result == {"ok": False, "why": f"cache directory not writable: {cache}"} and not started
    (cache / "torch-some-key").mkdir(parents=True)  # a build in it (for this torch?): the build step decides
    (cache / "torch-some-key" / f"{native.MODULE}.so").write_bytes(b"")
    result = cli_native.resolve({**os.environ, "COMMPROF_NATIVE_CACHE": str(cache)})
    assert len(started) == 1 and result["why"].startswith("cannot start the build")
