"""What ``commprof gate``, ``compare`` and ``try`` print from their inputs (paths, rule texts,
reasons a worker wrote) is shown, never sent as terminal escapes (issue 26 item 5)."""
from __future__ import annotations

from commprof.cli import try_, try_checks
from commprof.gate import output
from commprof.gate.rules import Result, Rule

EVIL = "x\x1b]8;;http://evil.example\x1b\\y\x1b[2J"


def test_gate_text_escapes_headers_rules_and_messages():
    rule = Rule(kind="max", metric="step_time", limit=1.0, mode="", text=f"step_time<=1 {EVIL}")
    r = Result(rule=rule, status="fail", measured=2.0, baseline=None, change=None, ci=None,
               message=f"too slow {EVIL}", detail=EVIL)
    text = output.gate_text([r], [f"run: {EVIL}"])
    assert "\x1b" not in text and "\\x1b]8;;http://evil.example" in text


def test_compare_text_escapes_the_sources():
    text = output.compare_text([], f"/runs/{EVIL}", "b", basis=EVIL)
    assert "\x1b" not in text and text.count("\\x1b[2J") == 2


def test_try_output_and_ruled_out_lines_escape_what_they_show(capsys):
    try_._out(f"apply {EVIL}\nnext line")
    try_checks.print_ruled([(f"bf16-compress{EVIL}", f"why {EVIL}")])
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\nnext line" in out and "\\x1b[2J" in out


def test_gate_reads_a_baseline_through_the_checked_reader(tmp_path):
    """A baseline nested 1,000 deep, or a FIFO, is one ReportFileError, never a RecursionError or
    a read that blocks (gate/measure.py reads through format/safe_io)."""
    import os

    import pytest

    from commprof.errors import ReportFileError
    from commprof.gate import measure
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 1000 + "]" * 1000)
    with pytest.raises(ReportFileError, match="deep"):
        measure.load(deep)
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    with pytest.raises(ReportFileError):
        measure.load(fifo)
