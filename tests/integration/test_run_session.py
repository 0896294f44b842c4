"""launch/session.py's closing of a run, on a copy of the committed demo capture (no job runs):
the node summary, a --fix run's loss in the manifest, and the closing lines in their order; each
capture is read once (the loss comes from the node summary's reductions)."""
import json
import shutil
from pathlib import Path

import psutil

from commprof.analysis.host import load
from commprof.analysis.scale import reduce
from commprof.analysis.host.training import loss_curve
from commprof.launch.session import RunHooks, RunOptions, RunSession

DEMO = Path(__file__).resolve().parents[1] / "golden" / "demo_run"


def _session(tmp_path, monkeypatch, **options):
    run = tmp_path / "run"
    shutil.copytree(DEMO, run)
    shutil.rmtree(run / "summaries", ignore_errors=True)  # (the golden capture has none)
    monkeypatch.setattr(psutil, "pid_exists", lambda pid: False)  # the demo's workers have ended
    lines = []
    s = RunSession(RunOptions(["job"], **options), RunHooks(lines.append, summary_line=lambda d: "VERDICT"))
    s.run_dir, s.manifest_file = run, "manifest.json"
    s.manifest = json.loads((run / "manifest.json").read_text())
    return s, run, lines


def _count_reads(monkeypatch) -> list:
    reads = []
    real = load.read_rank

    def counted(path):
        reads.append(Path(path).name)
        return real(path)
    monkeypatch.setattr(load, "read_rank", counted)
    monkeypatch.setattr(reduce, "read_rank", counted)
    return reads


def test_a_fix_run_reads_each_capture_once_and_gets_its_loss(tmp_path, monkeypatch):
    s, run, lines = _session(tmp_path, monkeypatch, fixes=["bf16-compress"])
    expected = loss_curve([(rd.rank, rd.losses) for rd in load.open_run(run).iter_ranks()])
    reads = _count_reads(monkeypatch)
    s._close()
    captures = sorted(p.name for p in (run / "ranks").glob("*.cpf"))
    assert sorted(reads) == captures  # once each: the node summary's reduction
    loss = json.loads((run / "manifest.json").read_text())["loss"]
    assert loss["steps"] == expected["steps"] and loss["ranks"] == expected["ranks"]
    assert loss["values"] == [round(v, 7) for v in expected["values"]]
    assert lines[0] == f"{len(captures)} process capture(s) written to {run}"
    assert lines[1].startswith(f"node summary: {len(captures)} capture(s) reduced in ")
    assert lines[2:4] == ["VERDICT", f"next: commprof report {run}"]


def test_without_a_node_summary_the_loss_reads_the_captures(tmp_path, monkeypatch):
    s, run, lines = _session(tmp_path, monkeypatch, fixes=["bf16-compress"], node_summary=False)
    reads = _count_reads(monkeypatch)
    s._close()
    assert sorted(reads) == sorted(p.name for p in (run / "ranks").glob("*.cpf"))
    assert "loss" in json.loads((run / "manifest.json").read_text())
    assert not (run / "summaries").exists() and not any(x.startswith("node summary") for x in lines)


def test_a_run_without_fix_leaves_the_loss_out_and_quiet_leaves_the_verdict_out(tmp_path, monkeypatch):
    s, run, lines = _session(tmp_path, monkeypatch, quiet=True)
    s._close()
    assert "loss" not in json.loads((run / "manifest.json").read_text())
    assert "VERDICT" not in lines and lines[-1] == f"next: commprof report {run}"
