"""Everything commprof prints is sanitized and every suggested command is shell-quoted (issue 26
item 5): a job argument or a process-group description holding an OSC 8 hyperlink or a
screen-clear escape is shown escaped, never sent to the terminal."""
from __future__ import annotations

import shlex
import sys

from commprof.format.text import printable, printable_data, shell_command
from runner import commprof, free_port

LINK = "\x1b]8;;http://evil\x1b\\"
CLEAR = "\x1b[2J"


def _no_control(text: str) -> bool:
    return not any(ord(ch) < 0x20 and ch not in "\n" or 0x7f <= ord(ch) < 0xa0 for ch in text)


def test_control_and_escape_characters_are_made_visible():
    # oracle: each control character becomes its Python escape, everything else stays
    assert printable(LINK + "x" + CLEAR) == "\\x1b]8;;http://evil\\x1b\\x" + "\\x1b[2J"
    assert printable("a\rb\nc\td\x7f\x9b") == "a\\rb\\nc\\td\\x7f\\x9b"
    assert printable("rtl\u202eevil\u2028") == "rtl\\u202eevil\\u2028"
    assert printable("héllo 日本 ok") == "héllo 日本 ok"
    assert printable("two\nlines", keep_newlines=True) == "two\nlines"
    assert printable_data({"k\x1b": [CLEAR, ("\r", 1)], "n": 2.5}) == {"k\\x1b": ["\\x1b[2J", ("\\r", 1)], "n": 2.5}


def test_suggested_commands_are_shell_quoted():
    words = ["commprof", "report", "runs/my run $(touch pwned);x"]
    assert shlex.split(shell_command(words)) == words
    assert _no_control(shell_command(["commprof", "report", "a" + CLEAR]))


JOB = """
import sys, torch, torch.distributed as dist
dist.init_process_group("gloo", init_method="tcp://127.0.0.1:%d", rank=0, world_size=1)
group = dist.new_group([0], group_desc=sys.argv[1] + sys.argv[2])
for _ in range(3):
    dist.all_reduce(torch.ones(4), group=group)
dist.destroy_process_group()
"""


def test_escapes_in_a_job_argument_and_a_group_description_reach_no_terminal(tmp_path):
    run = tmp_path / "my run $(id)"
    (tmp_path / "job.py").write_text(JOB % free_port())
    proc = commprof("run", "--out", str(run), "--", sys.executable, "job.py", LINK, CLEAR, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert _no_control(proc.stderr) and _no_control(proc.stdout), proc.stderr
    nxt = [ln for ln in proc.stderr.splitlines() if ln.startswith("commprof: next: ")]
    assert len(nxt) == 1 and shlex.split(nxt[0].removeprefix("commprof: next: ")) == [
        "commprof", "report", run.name], nxt  # pasted into a shell: exactly this run, nothing run
    rep = commprof("report", str(run), "--width", "300", cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr
    assert _no_control(rep.stdout) and _no_control(rep.stderr)
    assert "\\x1b]8;;http://evil\\x1b\\" in rep.stdout and "\\x1b[2J" in rep.stdout  # shown, escaped


def test_a_group_description_in_the_hang_text_is_shown_escaped():
    from commprof.analysis.cross.hang_text import hang_lines
    op = {"op": "all_reduce", "seq": 3, "group": "0", "group_desc": LINK + CLEAR, "bytes": 8}
    lines = hang_lines({"oldest_pending_s": 6.0, "timeout_s": 5,
                        "blocked": [{"op": op, "waiting_ranks": [0], "never_arrived": [1]}],
                        "ranks": [{"rank": 0, "pending": [op], "last_completed": op}]})
    assert all(_no_control(line) for line in lines)
    assert any("\\x1b[2J" in line for line in lines)


def test_a_saved_probe_result_is_printed_sanitized():
    """A probe document read from a file (another machine's) prints its strings escaped."""
    from commprof.report.probe_text import render_probe
    doc = {"backend": "gloo" + CLEAR, "world_size": 2, "nodes": 1,
           "latency_us": {"all_reduce": 30.0, "sendrecv": 12.0},
           "results": [{"op": "all_reduce" + LINK, "size_bytes": 1024, "iters": 10,
                        "time_median_s": 1e-4, "time_p99_s": 2e-4, "algbw_gbps": 0.01,
                        "busbw_gbps": 0.01}],
           "errors": [{"op": "all_to_all", "error": "refused\r" + CLEAR}]}
    text = render_probe(doc, width=200)
    assert _no_control(text), repr(text)
    assert "gloo\\x1b[2J" in text and "refused\\r" in text
