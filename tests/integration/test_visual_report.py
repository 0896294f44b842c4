"""The HTML report in a real browser, the Perfetto/Chrome trace, and escaping of captured strings.

The browser is Debian's `chromium` (installed by .ci/run), run headless; a page error or any
console.error lands in the page's #js-errors element, which the test reads back from the DOM.
"""
from __future__ import annotations

import html as html_mod
import json
import shutil
import subprocess
from collections import defaultdict

import pytest

from runner import commprof, torchrun
from synthetic import periodic_rank, write_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
EVIL = "<script>alert(1)</script>"


def chromium(*args, timeout=90) -> subprocess.CompletedProcess:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return subprocess.run([CHROMIUM, *FLAGS, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    """A real 2-rank gloo DDP run of the demo with the node sampler on."""
    from runner import HERE
    run = tmp_path_factory.mktemp("visual") / "run"
    demo = HERE.parent / "commprof" / "examples" / "demo_train.py"
    proc = commprof("run", "--out", str(run), "--sample-hz", "20", "--", *torchrun(demo, "--steps", "20"))
    assert proc.returncode == 0, proc.stderr
    return run


@pytest.mark.slow
def test_html_report_of_a_real_run_renders_in_chromium(real_run, tmp_path):
    out = tmp_path / "report.html"
    proc = commprof("report", str(real_run), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert "http://" not in text.split("<script>", 1)[0] and 'src="http' not in text  # offline
    dom = chromium("--virtual-time-budget=10000", "--dump-dom", out.as_uri()).stdout
    assert 'data-rendered="yes"' in dom, dom[-2000:]
    errors = dom.split('id="js-errors"', 1)[1].split("</div>", 1)[0]
    assert errors.strip(" >hidden=\"") == "", f"JS errors: {errors}"
    assert "Communication is" in dom and "of step time" in dom  # the verdict
    for chart in ("step-timeline", "op-bandwidth", "rank-view", "link-timeline"):
        section = dom.split(f'id="{chart}"', 1)[1][:20000]
        assert 'class="main-svg"' in section, f"{chart} was not drawn"
    shot = tmp_path / "report.png"
    chromium("--window-size=1400,2400", f"--screenshot={shot}", out.as_uri())
    assert shot.stat().st_size > 10_000


@pytest.mark.slow
def test_trace_is_valid_trace_event_json_with_one_process_per_rank(real_run, tmp_path):
    out = tmp_path / "run.trace.json"
    proc = commprof("report", str(real_run), "-o", str(out))  # the suffix selects the format
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    events = doc["traceEvents"]
    assert events
    last = defaultdict(lambda: float("-inf"))
    opened = {}
    for e in events:
        assert {"ph", "name", "pid", "tid", "ts"} <= set(e), e
        assert e["ph"] in {"M", "X", "b", "e", "C"}
        if e["ph"] == "X":
            assert e["dur"] >= 0
        if e["ph"] in ("X", "C"):
            key = (e["pid"], e["tid"], e["ph"] == "C" and e["name"])
            assert e["ts"] >= last[key], f"ts goes back on track {key}"
            last[key] = e["ts"]
        if e["ph"] == "b":
            opened[e["id"]] = e["ts"]
        if e["ph"] == "e":
            assert e["ts"] >= opened.pop(e["id"])
    assert not opened
    names = [e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "process_name"]
    assert sorted(n.split(" (")[0] for n in names if n.startswith("rank ")) == ["rank 0", "rank 1"]
    colls = [e for e in events if e.get("cat") == "collective"]
    assert colls and all(e["args"]["bytes"] >= 0 for e in colls)
    assert any(e["name"].startswith("step ") for e in events if e["ph"] == "X")
    assert any(e["ph"] == "C" for e in events)  # link throughput counters
    # the two ranks' first all_reduce of the first step lines up within 50 ms
    firsts = {}
    for e in colls:
        if e["name"] == "all_reduce" and e["pid"] not in firsts:
            firsts[e["pid"]] = e["ts"]
    assert abs(firsts[0] - firsts[1]) < 50_000


def test_captured_strings_are_escaped_in_html(tmp_path):
    run = write_run(tmp_path / "run", [periodic_rank(0, host="<img src=x onerror=alert(2)>"),
                                       periodic_rank(1)],
                    command=["torchrun", EVIL, "--tag", "\"quoted\" & <b>bold</b>"])
    out = tmp_path / "evil.html"
    proc = commprof("report", str(run), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert EVIL not in text and "<img src=x" not in text and "<b>bold</b>" not in text
    assert html_mod.escape(EVIL) in text
    if CHROMIUM is not None:
        dom = chromium("--virtual-time-budget=5000", "--dump-dom", out.as_uri()).stdout
        assert html_mod.escape(EVIL) in dom  # shown as text, never run
        errors = dom.split('id="js-errors"', 1)[1].split("</div>", 1)[0]
        assert "alert" not in errors and errors.strip(" >hidden=\"") == ""
