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
DIVERGED = 0.5
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
    # a loss that rose above the baseline's start (try_verdict.diverged): a harm of DIVERGED or more
    lost = f"diverged: harm {harm}" if harm >= DIVERGED else None
    judgement = {"verdict": verdict, "quality_verdict": verdict, "worse_by": harm, "band": BAND, "diverged": lost,
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
    # the bisection in local SGD's family: K = 8 worse at full length, so 16 and 32 are not run
    assert fates["local-sgd:8"].fate == "fell at full" and fates["local-sgd:8"].why.startswith("worse")
    assert fates["local-sgd:32"].full is None and "local-sgd:8, milder, was already worse" in fates["local-sgd:32"].why
    # and in PowerSGD's: R = 4 not worse, so the milder R = 8 is not run
    assert fates["powersgd:8"].full is None and "powersgd:4" in fates["powersgd:8"].why
    # the short rung (start-up is a sixth of a full run here) prunes on speed per step
    assert fates["bucket-cap:5"].fate == "fell at short" and "not faster" in fates["bucket-cap:5"].why
    assert "Pareto table" in "\n".join(ts.pareto_lines(table))


def test_when_start_up_dominates_the_search_bisects_at_full_length_within_a_third(monkeypatch):
    """A start-up of 15 s against 6 s of steps: a short run saves little, so no short rung; the
    full runs are the first repeats, and the cap holds the search to a third of the exhaustive."""
    monkeypatch.setattr(__import__(__name__), "STARTUP_S", 15.0)
    DONE.clear()
    exhaustive_s = sum(measure(f, FULL, 2)["wall_s"] for f in WORLD)
    DONE.clear()
    steps = []

    def counted(fix, n, repeat):
        steps.append(n)
        return measure(fix, n, repeat)

    search = ts.Search(list(WORLD), counted, FULL, ts.Costs(15.0, STEP_S * 0.6), 3600.0, lambda m: None)
    assert search.short_steps(5) == FULL  # 15 + 25·0.06 > half of 15 + 100·0.06
    table = search.run(warmup=5)
    assert steps and set(steps) == {FULL}  # no run shorter than full
    best, _ = choose([c.full for c in table if c.full is not None])
    assert best is not None and best["fix"] == "powersgd:4"
    assert search.spent_s <= exhaustive_s / 3, (search.spent_s, exhaustive_s)


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


def test_the_kept_candidates_not_confirmed_are_judged_on_one_run_and_say_so():
    DONE.clear()
    lines = []
    free = ts.Search(list(WORLD), measure, FULL, ts.Costs(STARTUP_S, STEP_S), 3600.0, lines.append)
    table = free.run(warmup=5)
    shorts = sum(c.short["wall_s"] for c in table if c.short)
    finals = [c for c in table if c.full is not None]
    order = [line.split("] ")[1].split(" (")[0] for line in lines if "run 1 of 2" in line]
    firsts = [_run_s(f, FULL) for f in order]  # the bisection's probes, one run each, in order
    estimate = ts.Costs(STARTUP_S, STEP_S).run(FULL)  # what the search expects a full run to take
    # every probe fits with a full run's estimate in reserve (the last probe: 2 estimates); the
    # reserve is the leader's second run; the others are judged on their one run
    budget = shorts + sum(firsts) - firsts[-1] + 2 * estimate + 1e-6
    DONE.clear()
    search = ts.Search(list(WORLD), measure, FULL, ts.Costs(STARTUP_S, STEP_S), budget, lambda m: None)
    table = search.run(warmup=5)
    assert search.spent_s <= budget
    judged = [c for c in table if c.full is not None]
    assert {c.fix for c in judged} == {c.fix for c in finals}
    ok = [c for c in judged if c.full["judgement"]["quality_verdict"] != "worse"]
    seconds = [c for c in ok if (c.fix, FULL, 1) in DONE]  # those that ran twice
    assert [c.fix for c in seconds] == ["powersgd:4"]  # the leader, fastest to the target
    assert len(ok) > 1 and all(c.note.startswith("one full run") for c in ok if c not in seconds)


def test_a_budget_without_auto_is_one_line_and_exit_2():
    from runner import commprof
    proc = commprof("try", "bf16-compress", "--budget", "10m", "--", "python3", "-c", "pass")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "commprof: error: --budget 10m: only `commprof try auto` searches under a budget"]
