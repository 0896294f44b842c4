"""The package's layers point down only (docs/architecture.md, "Layers"), and so do the rooms inside
``analysis/``; no import circle anywhere; modules stay small, the run directory's names are spelled
in one module and the capture's environment is read in one.

Every import is read with ``ast`` — at module level and inside functions alike — so a lazy import
is held to the same table as any other.
"""
from __future__ import annotations

import ast
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "commprof"

# unit -> the units it may import (besides itself and the shared leaves: commprof.errors,
# commprof._version and the root package).  A unit is a subpackage of commprof or
# one of its top-level modules.  Keep in step with docs/architecture.md.
ALL = {"cli", "launch", "probe", "gate", "report", "analysis", "capture", "sampling", "format",
       "fixes", "live"}
MAY_IMPORT = {
    "cli": ALL,
    "launch": {"analysis", "format"},
    "live": {"analysis", "format"},  # commprof run --live / --prometheus (cli wires it in)
    "probe": {"analysis", "format"},
    "gate": {"report", "analysis", "format"},  # gate reads report documents; report never imports gate
    "report": {"analysis", "format"},
    "analysis": {"format"},
    "capture": {"format", "fixes"},  # the agent applies commprof try's fixes (commprof/fixes)
    "fixes": set(),
    "sampling": {"format"},
    "format": set(),
    "_bootstrap": {"capture"},
    "examples": set(),
    "__main__": {"cli"},
    "errors": set(),
    "_version": set(),
}
LEAVES = {"errors", "_version", ""}  # "" is the root package
# The root package's public API (commprof.step, load_run) calls into these, from inside functions
# only: importing commprof must stay free.
ROOT_LAZY = {"capture", "analysis"}

# The rooms of commprof/analysis/ (docs/architecture.md, "Inside analysis"): room -> the rooms it
# may import besides itself.  Every module of analysis/ lives in a room; other units may import any
# room (the table above holds ``analysis`` as a whole).
ROOMS = {
    "measures": set(),                                     # definitions: intervals, latency, S/busbw, step KPIs
    "result": {"measures"},                                # the typed report (its KPIs from the registry)
    "cross": {"measures"},                                 # the ranks together: clocks, matching, hangs
    "gpu": {"measures"},                                   # the GPU timeline and its timing sources
    "host": {"gpu", "measures"},                           # one process's capture: frames and its reduction
    "scale": {"host", "gpu", "cross", "measures"},         # many processes: pools, node summaries, fold
    "outcome": {"result", "scale", "host", "gpu", "cross", "measures"},  # summary, verdict, what-if, advice
}
# Import circles not ended yet (module sets); each must still be a circle (the test says when not).
KNOWN_CYCLES: list[set[str]] = [
]

MAX_LINES = 400
# Files over MAX_LINES that are being split right now (commprof/analysis/outcome/summary.py was, until it
# was split); nothing else may grow past the limit.
OVER_LIMIT: set[str] = set()

# Run-directory names: only commprof/format/layout.py spells them.
LAYOUT = "commprof/format/layout.py"
RUN_DIR_NAMES = {"manifest.json", "hang.json", "probe.json", ".cpf", ".cps", "*.cpf", "*.cps", ".cpsum", "*.cpsum",
                 ".write-test", "commprof-runs", "sitecustomize.py"}
RUN_DIR_FOLDERS = {"ranks", "nodes", "bootstrap", "summaries"}  # as a path component: RUN / "ranks"
RUN_DIR_FRAGMENTS = ("bootstrap-", "manifest.", "*.cpf", "*.cps")
# COMMPROF_* settings of the workers: only commprof/capture/config.py spells them.
CAPTURE_CONFIG = "commprof/capture/config.py"
# Every Python process of the job runs sitecustomize.py: it tests this one variable before it
# imports anything, so that a process commprof does not capture pays nothing.
STARTUP_GUARD = ("commprof/_bootstrap/sitecustomize.py", "COMMPROF_RUN_DIR")
# Files others are editing now; the replacements that put them under the two rules above are
# listed for them.  Remove an entry as soon as its file passes (the test says when).


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)


def _imports(module: str, path: Path) -> list[tuple[str, int, bool]]:
    """(imported commprof module, line, inside a function) for every import in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []

    def visit(node, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - child.level + 1]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                for a in child.names:  # ``from commprof import analysis`` imports commprof.analysis
                    sub = f"{target}.{a.name}"
                    found.append((sub if sub in MODULES else target, child.lineno, in_function))
            visit(child, inner)

    visit(tree, False)
    return [(m, line, f) for m, line, f in found if m == "commprof" or m.startswith("commprof.")]


def test_every_import_points_down_the_layers():
    bad = []
    for module, path in MODULES.items():
        unit = _unit(module)
        allowed = MAY_IMPORT.get(unit)
        for target, line, in_function in _imports(module, path):
            tunit = _unit(target)
            if tunit == unit or tunit in LEAVES:
                continue
            if unit == "":
                ok = tunit in ROOT_LAZY and in_function
            else:
                assert allowed is not None, f"{module}: unit {unit!r} is not in MAY_IMPORT"
                ok = tunit in allowed
            if not ok and f"{module} -> {target} ({_rel(path)}:{line})" not in bad:
                bad.append(f"{module} -> {target} ({_rel(path)}:{line})")
    assert not bad, "imports against the layers (docs/architecture.md, Layers):\n" + "\n".join(bad)


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 3 and parts[1] == "analysis" else None


def test_every_analysis_module_lives_in_a_room():
    flat = [m for m in MODULES if m.startswith("commprof.analysis.") and _room(m) is None
            and m.rpartition(".")[2] not in ROOMS]
    assert not flat, f"put these in a room of analysis/ (ROOMS; docs/architecture.md): {flat}"
    assert {m.split(".")[2] for m in MODULES if m.startswith("commprof.analysis.")} == set(ROOMS)


def test_rooms_of_analysis_import_only_the_rooms_below():
    bad = []
    for module, path in MODULES.items():
        room = _room(module)
        if room is None:
            continue
        for target, line, _ in _imports(module, path):
            troom = _room(target) if _unit(target) == "analysis" else room
            if troom not in (room, None) and troom not in ROOMS[room]:
                bad.append(f"{module} -> {target} ({_rel(path)}:{line})")
    assert not bad, "imports against the rooms of analysis/ (docs/architecture.md):\n" + "\n".join(bad)


def _import_graph() -> dict[str, dict[str, str]]:
    """module -> {imported commprof module: where}, every import (lazy ones too)."""
    graph = {}
    for module, path in MODULES.items():
        edges = graph.setdefault(module, {})
        for target, line, _ in _imports(module, path):
            while target not in MODULES and "." in target:
                target = target.rpartition(".")[0]
            if target != module and target in MODULES:
                edges.setdefault(target, f"{_rel(path)}:{line}")
    return graph


def _cycles(graph: dict[str, dict[str, str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = set()
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    comp.add(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    out.append(comp)
    return out


def test_no_import_circle():
    """No module reaches itself through imports, lazy ones included: a circle hidden by an import
    inside a function is still a circle."""
    graph = _import_graph()
    cycles = _cycles(graph)
    new = [c for c in cycles if c not in KNOWN_CYCLES]
    lines = [" | ".join(f"{a} -> {b} ({graph[a][b]})" for a in sorted(c) for b in sorted(graph[a]) if b in c)
             for c in new]
    assert not new, "import circles (move what both sides need to the lower one):\n" + "\n".join(lines)
    gone = [c for c in KNOWN_CYCLES if c not in cycles]
    assert not gone, f"no longer a circle: remove from KNOWN_CYCLES: {gone}"


def test_every_unit_is_in_the_table():
    assert {_unit(m) for m in MODULES} - {""} <= set(MAY_IMPORT)


def test_modules_stay_under_the_line_limit():
    sizes = {_rel(p): len(p.read_text().splitlines()) for p in MODULES.values()}
    over = sorted(f"{name}: {n} lines" for name, n in sizes.items()
                  if n > MAX_LINES and name not in OVER_LIMIT)
    assert not over, f"modules over {MAX_LINES} lines (split them):\n" + "\n".join(over)
    done = sorted(name for name in OVER_LIMIT if sizes.get(name, 0) <= MAX_LINES)
    assert not done, f"no longer over {MAX_LINES} lines: remove from OVER_LIMIT: {done}"


def _strings(tree: ast.AST):
    """(text, line, is a path component) of every string constant that is not a docstring."""
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and n.body and isinstance(n.body[0], ast.Expr)
                  and isinstance(n.body[0].value, ast.Constant)}
    components = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div):
            components |= {id(n.left), id(n.right)}
        elif isinstance(n, ast.Call) and getattr(n.func, "attr", None) == "join":
            components |= {id(a) for a in n.args}
    for n in ast.walk(tree):
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings:
            yield n.value, n.lineno, id(n) in components


def _spelled_run_dir_names(path: Path) -> list[str]:
    out = []
    for text, line, component in _strings(ast.parse(path.read_text())):
        if (text in RUN_DIR_NAMES or (component and text in RUN_DIR_FOLDERS)
                or text.startswith(RUN_DIR_FRAGMENTS)):
            out.append(f"{_rel(path)}:{line}: {text!r}")
    return out


def test_only_the_layout_module_spells_run_directory_names():
    bad = [f for path in MODULES.values() if _rel(path) != LAYOUT
           for f in _spelled_run_dir_names(path)]
    assert not bad, "use commprof.format.layout instead of spelling:\n" + "\n".join(bad)


def test_only_the_capture_config_reads_commprof_variables():
    bad = []
    for path in sorted([*(PACKAGE / "capture").rglob("*.py"), *(PACKAGE / "_bootstrap").rglob("*.py")]):
        name = _rel(path)
        if name != CAPTURE_CONFIG:
            bad += [f"{name}:{line}: {text!r}" for text, line, _ in _strings(ast.parse(path.read_text()))
                    if text.startswith("COMMPROF_") and (name, text) != STARTUP_GUARD]
    assert not bad, "take the setting from CaptureConfig (commprof/capture/config.py):\n" + "\n".join(bad)


def test_the_checks_see_what_they_should(tmp_path):
    """The readers above on a known module: lazy and relative imports, names in paths."""
    path = tmp_path / "mod.py"
    path.write_text('"""hang.json in a docstring is fine."""\n'
                    "from . import rules\n"
                    "def f(run):\n"
                    "    from commprof.cli.report import build_document\n"
                    "    return run / 'ranks', {'ranks': 1}, 'hang.json'\n")
    found = _imports("commprof.gate.mod", path)
    assert ("commprof.gate.rules", 2, False) in found
    assert ("commprof.cli.report", 4, True) in found
    names = sorted(s.split(": ", 1)[1] for s in _spelled_run_dir_names(path))
    assert names == ["'hang.json'", "'ranks'"]


def test_the_circle_finder_finds_circles():
    graph = {"a": {"b": ""}, "b": {"c": ""}, "c": {"a": ""}, "d": {"a": ""}, "e": {}}
    assert _cycles(graph) == [{"a", "b", "c"}]
    assert _cycles({"a": {"b": ""}, "b": {}}) == []
