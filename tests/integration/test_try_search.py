"""``commprof try auto``'s search (commprof/cli/try_search.py) on a simulated job: each candidate
has a true speed-up per step and a true harm to the metric that may show only in full-length
runs (aggressive compression, long local-SGD periods).  The search must pick the fix that an
exhaustive trial of every candidate at full length (two runs each) picks — the fastest one within
the noise — never a harmful one, and spend at most a third of the exhaustive trial's time."""
from __future__ import annotations

import pytest

from commprof.cli import try_search as ts
from commprof.cli.try_verdict import choose

BAND = 0.02
STARTUP_S, STEP_S, FULL = 2.0, 0.1, 100
# fix: (speed-up per step, harm in short runs, harm at full length) — harm as a fraction worse
WORLD = {
    "bf16-compress": (1.5, 0.0, 0.0), "fp16-compress": (1.55, 0.0, 0.0),
    "powersgd:1": (5.0, 0.01, 0.20), "powersgd:2": (4.0, 0.005, 0.08), "powersgd:4": (3.0, 0.0, 0.01),
    "powersgd:8": (2.0, 0.0, 0.0), "local-sgd:2": (1.8, 0.0, 0.0), "local-sgd:4": (2.5, 0.01, 0.05),
    "local-sgd:8": (3.5, 0.08, 0.15), "local-sgd:16": (5.0, 0.2, 0.3), "local-sgd:32": (8.0, 0.5, 0.6),
    "bucket-cap:1": (0.98, 0.0, 0.0), "bucket-cap:5": (1.0, 0.0, 0.0), "bucket-cap:100": (1.01, 0.0, 0.0),
}


def _run_s(fix: str, steps: int) -> float:
    return STARTUP_S + steps * STEP_S / WORLD[fix][0]


DONE: set = set()


def measure(fix: str, steps: int, repeat: int) -> dict:
    """The fix's runs 1..repeat at ``steps``; a run made before is reused (no time spent)."""
    speed, harm_short, harm_full = WORLD[fix]
    new = [i for i in range(repeat) if (fix, steps, i) not in DONE]
    DONE.update((fix, steps, i) for i in new)
    harm = harm_full if steps >= FULL else harm_short
    verdict = "ok" if harm <= BAND else "worse"
    judgement = {"verdict": verdict, "quality_verdict": verdict, "worse_by": harm, "band": BAND,
                 "metric": "val_acc", "spread_base": 0.03, "machine_load": None, "short": {},
                 "time_to_target": {"target": 1.0, "reached": verdict == "ok",
                                    "speedup": speed if verdict == "ok" else None}}
    return {"fix": fix, "applied": True, "why": "", "status": ["applied"], "bytes_ok": True,
            "speedup": speed, "judgement": judgement, "wall_s": len(new) * _run_s(fix, steps)}


def test_successive_halving_finds_the_exhaustive_choice_in_a_third_of_its_time():
    DONE.clear()
    exhaustive = [measure(f, FULL, 2) for f in WORLD]
    DONE.clear()
    truth, _ = choose(exhaustive)
    assert truth["fix"] == "powersgd:4"  # the world above: the fastest fix within the noise
    exhaustive_s = sum(r["wall_s"] for r in exhaustive)
    lines, calls = [], []

    def counted(*args):
        calls.append(args)
        return measure(*args)

    search = ts.Search(list(WORLD), counted, FULL, ts.Costs(STARTUP_S, STEP_S), 3600.0, lines.append)
    table = search.run(warmup=5)
    best, verdicts = choose([c.full for c in table if c.full is not None])
    assert best is not None and best["fix"] == truth["fix"]
    assert search.spent_s <= exhaustive_s / 3, (search.spent_s, exhaustive_s)
    assert len(lines) == len(calls)  # a progress line per run
    fates = {c.fix: c for c in table}
    assert fates["local-sgd:8"].fate == "fell at short" and fates["local-sgd:8"].why.startswith("worse")
    assert fates["local-sgd:32"].fate == "fell at short" and "milder local-sgd:8" in fates["local-sgd:32"].why
    assert fates["bucket-cap:5"].fate == "fell at short" and "not faster" in fates["bucket-cap:5"].why
    assert "Pareto table" in "\n".join(ts.pareto_lines(table))


def test_a_budget_too_small_runs_what_fits_and_says_what_it_did_not():
    DONE.clear()
    budget = 8 * _run_s("bf16-compress", 25)  # a few short runs, no full ones
    search = ts.Search(list(WORLD), measure, FULL, ts.Costs(STARTUP_S, STEP_S), budget, lambda m: None)
    table = search.run(warmup=5)
    assert search.spent_s <= budget
    assert any(c.fate == "not run: budget" for c in table)
    assert all(c.full is None for c in table)


@pytest.mark.parametrize("text,seconds", [("30m", 1800), ("1h", 3600), ("90s", 90), ("120", 120)])
def test_budget_parses(text, seconds):
    assert ts.parse_budget(text) == seconds


def test_a_second_full_run_that_does_not_fit_leaves_the_first_one_judged():
    DONE.clear()
    free = ts.Search(list(WORLD), measure, FULL, ts.Costs(STARTUP_S, STEP_S), 3600.0, lambda m: None)
    table = free.run(warmup=5)
    shorts = sum(c.short["wall_s"] for c in table if c.short)
    finals = [c for c in table if c.full is not None]
    firsts = [_run_s(c.fix, FULL) for c in finals]
    estimate = ts.Costs(STARTUP_S, STEP_S).run(FULL)  # what the search expects a full run to take
    # every first full run fits whatever the order; a second one (expected: `estimate`) does not
    budget = shorts + sum(firsts) - min(firsts) + estimate
    DONE.clear()
    search = ts.Search(list(WORLD), measure, FULL, ts.Costs(STARTUP_S, STEP_S), budget, lambda m: None)
    table = search.run(warmup=5)
    assert search.spent_s <= budget
    judged = [c for c in table if c.full is not None]
    assert {c.fix for c in judged} == {c.fix for c in finals}
    ok = [c for c in judged if c.full["judgement"]["quality_verdict"] != "worse"]
    assert ok and all(c.note.startswith("one full run") for c in ok)


def test_a_budget_without_auto_is_one_line_and_exit_2():
    from runner import commprof
    proc = commprof("try", "bf16-compress", "--budget", "10m", "--", "python3", "-c", "pass")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "commprof: error: --budget 10m: only `commprof try auto` searches under a budget"]
