"""The unit/integration split stays honest: a module under tests/unit/ starts no process.

tests/unit/ holds in-process logic on synthetic data or real trace files; whatever starts a
process (the ``commprof`` CLI as a subprocess, torchrun jobs, the netlab, chromium, fork) lives in
tests/integration/ (marked ``integration`` by tests/conftest.py).  Read from each unit module's
source with ``ast``: no import of a process-starting module, no process-starting name from
tests/runner.py, no helper that runs a job (demo_run), no import of an integration test module
(its helpers start jobs), no ``os.fork``/``os.system``/``os.exec*``/``os.spawn*``/``os.popen``,
no ``sys.executable`` (a Python child) and no ``torchrun``."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
UNIT = sorted((TESTS / "unit").glob("*.py"))
INTEGRATION_MODULES = {p.stem for p in (TESTS / "integration").glob("*.py")}
PROCESS_MODULES = {"subprocess", "multiprocessing", "concurrent.futures.process", "pty", "demo_run",
                   "netlab", "playwright", "pexpect"}
# tests/runner.py: these start ``python -m commprof`` or a torchrun job, or time such runs
RUNNER_PROCESS_NAMES = {"commprof", "torchrun", "report_json", "on_a_quiet_machine", "ForeignLoad"}
OS_PROCESS_CALLS = ("fork", "forkpty", "system", "popen", "posix_spawn", "posix_spawnp")
OS_PROCESS_PREFIXES = ("exec", "spawn")


def _violations(source: str) -> list[str]:
    """What in ``source`` starts (or imports something that starts) a process."""
    out = []
    for node in ast.walk(ast.parse(source)):
        line = getattr(node, "lineno", "?")
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in PROCESS_MODULES or alias.name.split(".")[0] in PROCESS_MODULES:
                    out.append(f"line {line}: import {alias.name}")
                elif alias.name in INTEGRATION_MODULES:
                    out.append(f"line {line}: import {alias.name} (an integration module)")
        elif isinstance(node, ast.ImportFrom) and node.module:
            root = node.module.split(".")[0]
            names = {a.name for a in node.names}
            if node.module in PROCESS_MODULES or root in PROCESS_MODULES:
                out.append(f"line {line}: from {node.module} import ...")
            elif node.module in INTEGRATION_MODULES:
                out.append(f"line {line}: from {node.module} import ... (an integration module)")
            elif node.module == "runner" and names & RUNNER_PROCESS_NAMES:
                out.append(f"line {line}: from runner import {', '.join(sorted(names & RUNNER_PROCESS_NAMES))}")
            elif node.module == "os" and any(n in OS_PROCESS_CALLS or n.startswith(OS_PROCESS_PREFIXES)
                                             for n in names):
                out.append(f"line {line}: from os import {', '.join(sorted(names))}")
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            owner, attr = node.value.id, node.attr
            if owner == "os" and (attr in OS_PROCESS_CALLS or attr.startswith(OS_PROCESS_PREFIXES)):
                out.append(f"line {line}: os.{attr}")
            elif owner == "sys" and attr == "executable":
                out.append(f"line {line}: sys.executable (a Python child process)")
            elif owner == "runner" and attr in RUNNER_PROCESS_NAMES:
                out.append(f"line {line}: runner.{attr}")
        elif isinstance(node, ast.Name) and node.id == "torchrun":
            out.append(f"line {line}: torchrun")
    return out


@pytest.mark.parametrize("path", UNIT, ids=lambda p: p.name)
def test_unit_modules_start_no_process(path):
    found = _violations(path.read_text())
    assert not found, (f"{path.relative_to(TESTS)} starts processes; move it (or those tests) to "
                       f"tests/integration/:\n" + "\n".join(found))


@pytest.mark.parametrize("source", [
    "import subprocess\n",
    "from multiprocessing import get_context\n",
    "from runner import HERE, commprof\n",
    "import runner\nrunner.torchrun('x')\n",
    "import os\nos.fork()\n",
    "from os import execv\n",
    "import sys\nargs = [sys.executable, '-m', 'commprof']\n",
    "from demo_run import demo_run\n",
    "from test_capture_coverage import run_job\n",  # an integration module: its helpers run jobs
])
def test_the_rule_sees_each_way_of_starting_a_process(source):
    assert _violations(source)


def test_the_rule_lets_in_process_code_through():
    assert not _violations("import os\nfrom runner import HERE, free_port\nfrom synthetic import write_run\n"
                           "os.environ.get('X')\nos.path.join('a', 'b')\n")


def test_both_folders_hold_tests_and_no_test_is_left_at_the_top():
    assert UNIT and INTEGRATION_MODULES
    assert not sorted(p.name for p in TESTS.glob("test_*.py")), "put new test files in unit/ or integration/"
