"""``commprof run --live / --prometheus*`` flags, the textfile's atomic rename, the Grafana
dashboard, and instrumentation failures that must not reach the job (no torchrun: fast)."""
from __future__ import annotations

import json
import os
import stat
import socket
import threading
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from commprof.launch.session import combine_ticks
from commprof.errors import UsageError
from commprof.live import exporter
from commprof.live.exporter import Metrics, parse_listen, textfile_path, write_atomic
from runner import commprof

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("flags, words", [
    (["--prometheus", "notaport"], "--prometheus notaport: PORT must be a number"),
    (["--prometheus", "127.0.0.1:70000"], "PORT must be a number from 1 to 65535"),
    (["--prometheus-textfile", "/nonexistent/dir"], "--prometheus-textfile /nonexistent/dir: no such directory"),
    (["--live-interval", "0", "--live"], "--live-interval 0: must be > 0"),
    (["--prometheus-linger", "5"], "--prometheus-linger needs --prometheus"),
])
def test_bad_values_stop_before_the_job_starts(tmp_path, flags, words):
    out = tmp_path / "run"
    proc = commprof("run", "--out", str(out), *flags, "--", "python3", "-c", "print('ran')")
    assert proc.returncode != 0
    assert words in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert "ran" not in proc.stdout and not out.exists()


def test_a_port_in_use_is_refused_before_the_job_starts(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        out = tmp_path / "run"
        proc = commprof("run", "--out", str(out), "--prometheus", f"127.0.0.1:{port}", "--",
                        "python3", "-c", "print('ran')")
    assert proc.returncode != 0 and f"cannot listen on 127.0.0.1:{port}" in proc.stderr, proc.stderr
    assert "ran" not in proc.stdout and not out.exists()


def test_listen_addresses():
    assert parse_listen("9400") == ("127.0.0.1", 9400)  # just a port: this host only
    assert parse_listen("0.0.0.0:9400") == ("0.0.0.0", 9400)
    assert parse_listen("[::1]:9400") == ("::1", 9400)
    with pytest.raises(UsageError):
        parse_listen("host:")


def test_a_file_where_the_textfile_directory_should_be(tmp_path):
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(UsageError, match="no such directory"):
        textfile_path(str(f), "job")


def test_the_textfile_is_never_seen_half_written(tmp_path):
    """A reader hammering the file while it is rewritten 300 times sees whole files only; a write
    that fails half-way leaves the previous file as it was."""
    path = tmp_path / "commprof.prom"
    bodies = [(f"# TYPE commprof_x gauge\ncommprof_x {i}\n" + "commprof_pad 1\n" * (i % 50)).encode()
              for i in range(300)]
    write_atomic(path, bodies[0])
    seen, stop = [], threading.Event()

    def read():
        while not stop.is_set():
            seen.append(path.read_bytes())
    t = threading.Thread(target=read)
    t.start()
    for body in bodies[1:]:
        write_atomic(path, body)
    stop.set()
    t.join()
    assert len(seen) > 10 and all(s in bodies for s in seen)
    real_replace = os.replace

    def crash(src, dst):
        raise OSError(28, "No space left on device")
    os.replace = crash
    try:
        with pytest.raises(OSError):
            write_atomic(path, b"half")
    finally:
        os.replace = real_replace
    assert path.read_bytes() == bodies[-1]
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # the failed write's tmp is removed


def test_planted_links_at_the_old_predictable_names_are_never_followed(tmp_path):
    """Another user's symbolic links at the names the textfile writer used to use (pid-derived)
    in a shared DIR: the file they point at is untouched, by the check and by every write."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    shared = tmp_path / "textfile"
    shared.mkdir()
    pid = os.getpid()
    (shared / f".commprof-write-test.{pid}").symlink_to(victim)
    path = textfile_path(str(shared), "job")
    (shared / f".{path.name}.{pid}.tmp").symlink_to(victim)
    for body in (b"# one\n", b"# two\n"):
        write_atomic(path, body)
    assert victim.read_bytes() == b"precious"
    assert path.read_bytes() == b"# two\n" and not path.is_symlink()
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # node_exporter may be another user
    path.unlink()
    path.symlink_to(victim)  # a link at the final name is replaced, not written through
    write_atomic(path, b"# three\n")
    assert victim.read_bytes() == b"precious" and path.read_bytes() == b"# three\n"


def test_the_exposition_parses_and_counters_never_go_down():
    m = Metrics("job1", host="h")
    from commprof.live.rankstate import Totals
    t = Totals(bytes={("all_reduce", "default_pg"): 100}, calls={("all_reduce", "default_pg"): 1},
               seconds={"all_reduce": 0.5}, comm_ns=2e9, exposed_ns=1e9)
    snap = {"ranks": [{"rank": 0, "host": "h", "attempt": 0, "local": True, "totals": t,
                       "overhead_s": 0.1, "step_durations": [(0, 0.2), (1, 0.3)], "complete": False}],
            "window": {"steps": 0}, "busbw": {"ops": [], "efficiency": []}, "straggler": None,
            "links": [{"link": "nic:lo", "direction": "tx", "bytes": 10.0, "rate_Bps": 1.0}],
            "launcher_cpu_s": 0.5}
    m.update(snap)
    m.update(snap)  # the same steps again: observed once
    m.text()
    t.comm_ns = 1e9  # a union that shrank (another training thread chosen): not exported
    fams = {f.name: f for f in text_string_to_metric_families(m.text().decode())}
    comm = {s.labels["kind"]: s.value for s in fams["commprof_comm_seconds"].samples}
    assert comm["in_flight"] == 2.0
    count = [s.value for s in fams["commprof_step_seconds"].samples if s.name.endswith("_count")]
    assert count == [2.0]
    labels = fams["commprof_collective_bytes"].samples[0].labels
    assert labels == {"rank": "0", "host": "h", "job": "job1", "attempt": "0", "op": "all_reduce",
                      "group": "default_pg"}


def test_a_failing_tick_is_reported_once_and_the_others_go_on():
    said, calls = [], []

    def bad(pgid):
        raise RuntimeError("boom")
    tick = combine_ticks([("live view / metrics", bad), ("hang watch", lambda p: calls.append(p))],
                         said.append)
    for _ in range(3):
        tick(7)
    assert said == ["warning: live view / metrics stopped: RuntimeError: boom"]
    assert calls == [7, 7, 7]


def test_the_grafana_dashboard_parses_and_uses_exported_metrics():
    doc = json.loads((ROOT / "docs" / "grafana" / "commprof.json").read_text())
    exprs = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    assert len(doc["panels"]) >= 3 and exprs
    text = (ROOT / "docs" / "monitoring.md").read_text()
    for name in ("commprof_comm_fraction", "commprof_collective_bytes_total",
                 "commprof_busbw_bytes_per_second"):
        assert any(name in e for e in exprs) and name in text
    for e in exprs:
        for word in e.replace("(", " ").replace(")", " ").replace("{", " ").split():
            if word.startswith("commprof_"):
                base = word.removesuffix("_total").removesuffix("_bucket").removesuffix("_sum") \
                    .removesuffix("_count")
                assert base in exporter.__loader__.get_source(exporter.__name__), word
