"""The command line's error handling: one ``commprof: error:`` line, a non-zero status, no debris.

Every case runs ``python -m commprof`` in a subprocess, in an empty working directory (so a stray
``./commprof-runs`` would be noticed).  The cases are prepared and run together, a few at a time,
by the module fixture ``ran``; each test then checks one case's outcome.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from synthetic import capture_file, periodic_rank, write_run


def _env():
    env = dict(os.environ, NO_COLOR="1", COLUMNS="120")
    env.pop("COMMPROF_RUN_DIR", None)
    return env


@dataclass
class Case:
    """A command line run in ``cwd`` (an empty directory), and what the test needs to know."""

    args: list
    cwd: Path
    info: dict = field(default_factory=dict)
    proc: subprocess.CompletedProcess | None = None


CASES: dict = {}  # name -> setup(base directory) -> (args, info)


def case(fn):
    CASES[fn.__name__] = fn
    return fn


@pytest.fixture(scope="module")
def ran(tmp_path_factory) -> dict[str, Case]:
    """Every case's command, run a few at a time (each is a fresh interpreter importing pandas)."""
    cases = {}
    for name, setup in CASES.items():
        base = tmp_path_factory.mktemp(name)
        cwd = base / "cwd"
        cwd.mkdir()
        args, info = setup(base)
        cases[name] = Case([str(a) for a in args], cwd, info)

    def go(c: Case):
        c.proc = subprocess.run([sys.executable, "-m", "commprof", *c.args], cwd=c.cwd,
                                capture_output=True, text=True, timeout=120, env=_env())
    with ThreadPoolExecutor(max_workers=max(2, min(6, os.cpu_count() or 2))) as pool:
        list(pool.map(go, cases.values()))
    return cases


def assert_one_error_line(proc, *needles) -> str:
    assert proc.returncode != 0, proc
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("commprof: error:"), lines[0]
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines[0])
    assert proc.stdout == ""
    return lines[0]


def good_run(base: Path) -> Path:
    return write_run(base / "run", [periodic_rank(0), periodic_rank(1)])


# -- report -------------------------------------------------------------------------------------

@case
def report_missing_directory(base):
    missing = base / "does-not-exist"
    return ["report", missing], {"missing": missing}


def test_report_missing_directory(ran):
    c = ran["report_missing_directory"]
    assert_one_error_line(c.proc, c.info["missing"])


@case
def report_without_manifest(base):
    d = base / "not-a-run"
    (d / "ranks").mkdir(parents=True)
    return ["report", d], {"manifest": d / "manifest.json"}


def test_report_directory_without_manifest(ran):
    c = ran["report_without_manifest"]
    assert_one_error_line(c.proc, c.info["manifest"])


@case
def report_run_without_captures(base):
    run = write_run(base / "run", [])
    return ["report", run], {"ranks": run / "ranks"}


def test_report_run_without_captures(ran):
    """A run in which no process was captured is an error, not "no communication"."""
    c = ran["report_run_without_captures"]
    assert_one_error_line(c.proc, c.info["ranks"], "no process of the job was captured")


@case
def report_corrupt_manifest(base):
    run = good_run(base)
    manifest = run / "manifest.json"
    manifest.write_text(manifest.read_text()[:-10])
    return ["report", run], {"manifest": manifest}


def test_report_corrupt_manifest(ran):
    c = ran["report_corrupt_manifest"]
    assert_one_error_line(c.proc, c.info["manifest"], "JSON")


@case
def report_bad_magic(base):
    run = good_run(base)
    path = capture_file(run, 1)
    data = path.read_bytes()
    path.write_bytes(b"GARBAGE!" + data[8:])
    return ["report", run], {"path": path}


def test_report_capture_with_bad_magic(ran):
    c = ran["report_bad_magic"]
    assert_one_error_line(c.proc, c.info["path"], "magic")


@case
def report_torn_capture(base):
    run = good_run(base)
    path = capture_file(run, 1)
    data = path.read_bytes()
    path.write_bytes(data[:-7])  # the trailer is torn
    return ["report", run], {"path": path}


def test_report_torn_capture_still_reports_with_a_note(ran):
    c = ran["report_torn_capture"]
    assert c.proc.returncode == 0, c.proc.stderr
    assert "Traceback" not in c.proc.stderr
    flat = " ".join(c.proc.stdout.split())
    assert f"note: {c.info['path'].name}: torn frame" in flat
    assert "communication" in flat


@case
def report_json_to_file(base):
    return ["report", good_run(base), "-o", "r.json"], {}


def test_report_json_to_file(ran):
    c = ran["report_json_to_file"]
    assert c.proc.returncode == 0, c.proc.stderr
    assert "wrote r.json" in c.proc.stderr
    doc = json.loads((c.cwd / "r.json").read_text())
    assert doc["schema"] == "commprof.report/1"
    assert doc["run"]["world_size"] == 2


@case
def report_weird_suffix(base):
    return ["report", good_run(base), "-o", "x.weird"], {}


def test_report_unknown_output_suffix(ran):
    c = ran["report_weird_suffix"]
    line = assert_one_error_line(c.proc, "x.weird")
    assert "suffix" in line
    assert not (c.cwd / "x.weird").exists()


@case
def report_unknown_format(base):
    return ["report", good_run(base), "--format", "nope"], {}


def test_report_unknown_format(ran):
    line = assert_one_error_line(ran["report_unknown_format"].proc, "nope")
    assert "terminal" in line and "json" in line  # the choices


@case
def report_negative_warmup(base):
    return ["report", good_run(base), "--warmup", "-1"], {}


def test_report_negative_warmup(ran):
    assert_one_error_line(ran["report_negative_warmup"].proc, "--warmup")


# -- run ----------------------------------------------------------------------------------------

@case
def run_no_command(base):
    return ["run"], {}


@case
def run_dashdash_no_command(base):
    return ["run", "--"], {}


@pytest.mark.parametrize("name", ["run_no_command", "run_dashdash_no_command"])
def test_run_without_command(ran, name):
    c = ran[name]
    assert c.proc.returncode != 0
    assert "command" in c.proc.stderr.lower()
    assert list(c.cwd.iterdir()) == []  # no ./commprof-runs


@case
def run_unknown_command(base):
    return ["run", "--", "no-such-command-commprof-xyz", "--flag"], {}


def test_run_unknown_command_creates_nothing(ran):
    c = ran["run_unknown_command"]
    assert_one_error_line(c.proc, "no-such-command-commprof-xyz", "not found")
    assert list(c.cwd.iterdir()) == []


@case
def run_unknown_option(base):
    marker = base / "job-ran"
    return (["run", "--bogus", "--", sys.executable, "-c", f"open({str(marker)!r}, 'w').close()"],
            {"marker": marker})


@case
def run_unknown_short_option_without_dashdash(base):
    marker = base / "job-ran"
    return (["run", "-Z", sys.executable, "-c", f"open({str(marker)!r}, 'w').close()"],
            {"marker": marker})


@pytest.mark.parametrize("name, option", [("run_unknown_option", "--bogus"),
                                          ("run_unknown_short_option_without_dashdash", "-Z")])
def test_run_unknown_option_is_a_usage_error(ran, name, option):
    """An option of `commprof run` that does not exist is named; it is not taken for the job."""
    c = ran[name]
    assert c.proc.returncode == 2
    line = assert_one_error_line(c.proc, f"error: {option}: no such option", "commprof run")
    assert "not found" not in line
    assert not c.info["marker"].exists() and list(c.cwd.iterdir()) == []


@case
def run_job_options_pass_through(base):
    argv = base / "argv.json"
    code = f"import json, sys; json.dump(sys.argv[1:], open({str(argv)!r}, 'w'))"
    return (["run", "--quiet", "--out", base / "run", sys.executable, "-c", code, "--bogus", "-Z"],
            {"argv": argv})


def test_unknown_options_after_the_command_are_the_jobs(ran):
    c = ran["run_job_options_pass_through"]
    assert c.proc.returncode == 0, c.proc.stderr
    assert json.loads(c.info["argv"].read_text()) == ["--bogus", "-Z"]


@case
def run_out_not_empty(base):
    out = base / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    marker = base / "job-ran"
    return (["run", "--out", out, "--", sys.executable, "-c", f"open({str(marker)!r}, 'w').close()"],
            {"out": out, "marker": marker})


def test_run_out_on_non_empty_directory(ran):
    c = ran["run_out_not_empty"]
    assert_one_error_line(c.proc, c.info["out"])
    assert sorted(p.name for p in c.info["out"].iterdir()) == ["keep.txt"]
    assert not c.info["marker"].exists()  # the job never started
    assert list(c.cwd.iterdir()) == []


@case
def usage_missing(base):
    return ["run"], {}


@case
def usage_option(base):
    return ["report", "--bogus-option"], {}


@case
def usage_int(base):
    return ["report", "--warmup", "abc"], {}


@pytest.mark.parametrize("name", ["usage_missing", "usage_option", "usage_int"])
def test_usage_errors_are_short_and_exit_2(ran, name):
    proc = ran[name].proc
    assert proc.returncode == 2, proc.returncode
    assert "Traceback" not in proc.stderr and "╭" not in proc.stderr, proc.stderr
    assert len(proc.stderr.splitlines()) <= 4, proc.stderr
    assert "error" in proc.stderr.lower()


@case
def run_out_parent_missing(base):
    out = base / "no-such-parent" / "deeper" / "run"
    return ["run", "--out", out, "--", sys.executable, "-c", "pass"], {"out": out}


def test_run_creates_missing_parents_of_out(ran):
    """`--out runs/exp1` works without a `runs/` (docs/guide.md), like `mkdir -p`."""
    c = ran["run_out_parent_missing"]
    assert c.proc.returncode == 0, c.proc.stderr
    assert (c.info["out"] / "manifest.json").is_file() and (c.info["out"] / "ranks").is_dir()
    assert list(c.cwd.iterdir()) == []


@case
def run_out_under_a_file(base):
    (base / "afile").write_text("x")
    out = base / "afile" / "sub" / "run"
    return (["run", "--out", out, "--", sys.executable, "-c", "pass"],
            {"out": out, "file": base / "afile"})


def test_run_refuses_an_output_directory_below_a_file(ran):
    c = ran["run_out_under_a_file"]
    assert_one_error_line(c.proc, c.info["out"], f"{c.info['file']} is not a directory")
    assert c.info["file"].read_text() == "x" and list(c.cwd.iterdir()) == []


@case
def run_out_cannot_create(base):
    out = base / "new-parent" / ("x" * 300)  # a name longer than any file system allows
    return (["run", "--out", out, "--", sys.executable, "-c", "pass"],
            {"out": out, "parent": base / "new-parent"})


def test_run_refuses_an_output_directory_it_cannot_create(ran):
    c = ran["run_out_cannot_create"]
    assert_one_error_line(c.proc, c.info["out"], "cannot create")
    assert not c.info["parent"].exists()  # the parents it made for it are gone again
    assert list(c.cwd.iterdir()) == []


@case
def run_kill_on_hang_alone(base):
    return ["run", "--kill-on-hang", "--", sys.executable, "-c", "pass"], {}


@case
def run_hang_timeout_too_short(base):
    return ["run", "--hang-timeout", "0.5", "--", sys.executable, "-c", "pass"], {}


def test_run_hang_options_are_checked_before_launch(ran):
    assert_one_error_line(ran["run_kill_on_hang_alone"].proc, "--kill-on-hang", "--hang-timeout")
    assert_one_error_line(ran["run_hang_timeout_too_short"].proc, "--hang-timeout 0.5",
                          "--flush-interval")
    for name in ("run_kill_on_hang_alone", "run_hang_timeout_too_short"):
        assert list(ran[name].cwd.iterdir()) == []


def _saved_report(base: Path, edit) -> Path:
    """A real JSON report of a synthetic run, then edited by hand (``edit(text) -> text``)."""
    run = good_run(base)
    out = base / "saved.json"
    proc = subprocess.run([sys.executable, "-m", "commprof", "report", str(run), "-o", str(out)],
                          capture_output=True, text=True, timeout=120, env=_env())
    assert proc.returncode == 0, proc.stderr
    out.write_text(edit(out.read_text()))
    return out


@case
def report_saved_json_rerendered(base):
    return ["report", _saved_report(base, lambda t: t)], {}


def test_a_saved_json_report_renders_again(ran):
    c = ran["report_saved_json_rerendered"]
    assert c.proc.returncode == 0, c.proc.stderr
    assert "bytes synchronized" in c.proc.stdout


@case
def report_json_edited_type(base):
    def edit(text):
        doc = json.loads(text)
        doc["kpis"]["exposed_comm_fraction"] = "12%"
        return json.dumps(doc)
    return ["report", _saved_report(base, edit)], {}


@case
def report_json_edited_truncated(base):
    return ["report", _saved_report(base, lambda t: t[: len(t) // 2])], {}


@case
def report_json_edited_schema(base):
    return ["report", _saved_report(base, lambda t: t.replace("commprof.report/1", "commprof.report/9"))], {}


@case
def report_json_edited_row(base):
    def edit(text):
        doc = json.loads(text)
        del doc["ops"][0]["count"]
        return json.dumps(doc)
    return ["report", _saved_report(base, edit)], {}


@case
def report_json_not_a_report(base):
    path = base / "other.json"
    path.write_text('{"hello": "world"}')
    return ["report", path], {}


@pytest.mark.parametrize("name, needles", [
    ("report_json_edited_type", ["saved.json", "kpis.exposed_comm_fraction", "number or null", "12%"]),
    ("report_json_edited_truncated", ["saved.json", "invalid JSON at line"]),
    ("report_json_edited_schema", ["saved.json", "commprof.report/9"]),
    ("report_json_edited_row", ["saved.json", "ops[0].count: missing"]),
    ("report_json_not_a_report", ["other.json", "not a commprof report"]),
])
def test_hand_edited_json_report(ran, name, needles):
    assert_one_error_line(ran[name].proc, *needles)


@case
def report_corrupt_hang(base):
    run = good_run(base)
    (run / "hang.json").write_text('{"schema": "commprof.hang/1", "blocked": ')
    return ["report", run], {"hang": run / "hang.json"}


def test_report_corrupt_hang_file(ran):
    c = ran["report_corrupt_hang"]
    assert_one_error_line(c.proc, c.info["hang"], "invalid JSON")


# -- help ---------------------------------------------------------------------------------------

def test_top_level_help_gives_each_command_a_complete_sentence():
    """`commprof --help` lists each command with one whole sentence (click cuts a docstring at its
    first ". " — "Run COMMAND (e.g." — or mid-phrase with "...")."""
    from commprof.cli.app import app
    import typer.main
    names = list(typer.main.get_command(app).commands)
    proc = subprocess.run([sys.executable, "-m", "commprof", "--help"], capture_output=True,
                          text=True, timeout=60, env=dict(_env(), COLUMNS="200"))
    assert proc.returncode == 0, proc.stderr
    section = proc.stdout.split("Commands:", 1)[1].strip().splitlines()
    assert len(section) == len(names), proc.stdout  # one line each: nothing wrapped
    listed = {}
    for line in section:
        name, _, text = line.strip().partition(" ")
        listed[name] = text.strip()
    assert sorted(listed) == sorted(names)
    for name, text in listed.items():
        assert text[:1].isupper() and text.endswith(".") and not text.endswith(".."), (name, text)
        assert "…" not in text and "e.g." not in text.split()[-1], (name, text)
        assert text.count("(") == text.count(")") and text.count("`") % 2 == 0, (name, text)
