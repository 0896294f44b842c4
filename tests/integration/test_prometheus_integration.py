"""A real 2-rank gloo job under ``--prometheus`` / ``--prometheus-textfile`` / ``--live`` (no
terminal): scraped while it runs, values grow, and the final counters are the report's."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import commprof.examples
from runner import free_port, report_json, torchrun

pytestmark = pytest.mark.slow
DEMO = Path(commprof.examples.__file__).parent / "demo_train.py"


def families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def total(fams: dict, name: str, **match) -> float:
    if name not in fams:  # before the first snapshot
        return 0.0
    return sum(s.value for s in fams[name].samples if s.name.endswith("_total")
               and all(s.labels.get(k) == v for k, v in match.items()))


def scrape(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return families(resp.read().decode())


def test_scraped_mid_run_and_equal_to_the_report_at_the_end(tmp_path):
    port, out, tdir = free_port(), tmp_path / "run", tmp_path / "textfile"
    tdir.mkdir()
    cmd = [sys.executable, "-m", "commprof", "run", "--out", str(out), "--live",
           "--live-interval", "1", "--prometheus", f"127.0.0.1:{port}", "--prometheus-textfile",
           str(tdir), "--prometheus-linger", "60", "--",
           *torchrun(DEMO, "--steps", "40")]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    lines: list[str] = []
    final = threading.Event()

    def read():
        for line in proc.stderr:
            lines.append(line)
            if "final values served" in line:
                final.set()
    threading.Thread(target=read, daemon=True).start()
    # The textfile is read as fast as possible all along: it must always parse whole.
    reads, torn, stop = [0], [], threading.Event()

    def watch_textfile():
        while not stop.is_set():
            for f in tdir.glob("*.prom"):
                try:
                    text = f.read_text()
                except FileNotFoundError:
                    continue
                reads[0] += 1
                try:
                    fams = families(text)
                    assert "commprof_running" in fams and text.endswith("\n")
                except Exception as exc:  # noqa: BLE001
                    torn.append(repr(exc))
            time.sleep(0.005)
    threading.Thread(target=watch_textfile, daemon=True).start()
    try:
        mid = []
        deadline = time.monotonic() + 150
        while len(mid) < 2 and time.monotonic() < deadline and not final.is_set():
            try:
                fams = scrape(port)
            except OSError:
                time.sleep(0.5)
                continue
            running = fams["commprof_running"].samples[0].value
            nbytes = total(fams, "commprof_collective_bytes")
            if running == 1 and nbytes > 0 and (not mid or nbytes > mid[-1][0]):
                mid.append((nbytes, total(fams, "commprof_comm_seconds", kind="in_flight"),
                            len(lines)))
            time.sleep(0.5)
        assert len(mid) == 2, "".join(lines)
        assert mid[1][0] > mid[0][0] and mid[1][1] >= mid[0][1] > 0  # values grow while it runs
        assert final.wait(150), "".join(lines)
        fams = scrape(port)
    finally:
        stop.set()
        proc.terminate()  # ends the linger
        rc = proc.wait(60)
    assert rc == 0, "".join(lines)
    assert fams["commprof_running"].samples[0].value == 0
    assert any("commprof: live: " in line for line in lines)  # the non-TTY lines
    rep = report_json(out)
    for r in rep["ranks"]:
        rank = str(r["rank"])
        assert total(fams, "commprof_collective_bytes", rank=rank) == r["bytes"]  # exactly
        assert total(fams, "commprof_collective_calls", rank=rank) == r["ops"]
        assert total(fams, "commprof_comm_seconds", rank=rank, kind="in_flight") == \
            pytest.approx(r["comm_s"], rel=0.01)
        assert total(fams, "commprof_comm_seconds", rank=rank, kind="exposed") == \
            pytest.approx(r["exposed_comm_s"], rel=0.01)
    for op in rep["ops"]:  # the op table's time_s is the mean over ranks
        got = total(fams, "commprof_collective_seconds", op=op["op"]) / op["ranks"]
        assert got == pytest.approx(op["time_s"], rel=0.01)
    steps = [s for s in fams["commprof_step_seconds"].samples if s.name.endswith("_count")]
    assert {s.value for s in steps} == {rep["steps"]["count"]}
    # the textfile: parsed by prometheus_client's own parser, never torn, final values equal
    assert reads[0] > 10 and not torn, torn[:3]
    (prom,) = tdir.glob("*.prom")
    tf = families(prom.read_text())
    assert total(tf, "commprof_collective_bytes") == sum(r["bytes"] for r in rep["ranks"])
    assert not list(tdir.glob(".*tmp"))
    json.dumps(rep)  # noqa: the report is what was compared
