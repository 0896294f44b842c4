"""Issue 25's acceptance of ``commprof try auto``, on the held-out classifier over a shaped link.

Runs, on two netlab "nodes" (tests/netlab/pair.py, as root) joined by a ``--rate`` Mbit/s link,
the job tests/jobs/heldout_train.py (a DDP classifier with a held-out ``val_acc``):

1. ``commprof try auto --budget B`` — the search; its wall time is the search's time;
2. the exhaustive try: every candidate ``try auto`` would consider (try_search.DDP_CANDIDATES),
   each on its own side, ``--repeat 2`` (two runs of every side, interleaved) — the reference.

From the exhaustive runs' judgements (``commprof.cli.try_verdict.choose``): **the best** — the
fix with the largest effective speed-up (time to the baseline's final loss) among those judged
``ok`` on the held-out metric — and each fix's harm (``worse`` beyond the noise band).  Prints
the fix auto chose, the best, the ratio of their times to target (chosen ÷ best) and of the
search times (auto ÷ exhaustive), and the issue's three criteria:

* the chosen fix's held-out metric is within the baseline's noise (the exhaustive judgement);
* its time to target is within 10 % of the best's (ratio ≤ 1.10);
* the search took at most a third of the exhaustive try's time;
* it never recommends a fix that hurts the held-out metric beyond the noise.

Long (the exhaustive try is 14 candidates × 2 runs + 2 baselines); not a unit test.

    sudo python3 benchmarks/try_auto_acceptance.py --budget 12m --rate 20 --steps 60 --width 256 \\
        --out /tmp/acceptance
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commprof(args: list[str], log: Path) -> float:
    """Runs ``python -m commprof ARGS`` (stdout and stderr to ``log``); its wall time."""
    t0 = time.monotonic()
    with open(log, "w") as fh:
        proc = subprocess.run([sys.executable, "-m", "commprof", *args], stdout=fh, stderr=subprocess.STDOUT,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)), check=False)
    if proc.returncode != 0:
        raise SystemExit(f"commprof {' '.join(args[:2])} failed (exit {proc.returncode}): see {log}")
    return time.monotonic() - t0


def _load() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "unknown"


def judge(auto: dict, everything: dict) -> dict:
    """The acceptance numbers from the two ``--json`` documents."""
    from commprof.cli.try_verdict import choose
    results = {r["fix"]: r for r in everything["results"]}
    best, _ = choose(everything["results"])
    chosen = auto.get("chosen")
    ref = results.get(chosen) if chosen else None

    def speedup(r):
        return (r or {}).get("judgement", {}).get("time_to_target", {}).get("speedup")
    harmful = sorted(f for f, r in results.items() if r["judgement"]["quality_verdict"] == "worse")
    ratio = (speedup(best) / speedup(ref)) if best and speedup(ref) and speedup(best) else None
    return {"chosen": chosen, "best": best["fix"] if best else None, "harmful": harmful,
            "chosen_verdict": ref["judgement"]["quality_verdict"] if ref else None,
            "chosen_metric": ref["judgement"]["metric"] if ref else None,
            "time_to_target_ratio": ratio, "speedups": {f: speedup(r) for f, r in results.items()}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", default="12m")
    ap.add_argument("--rate", default="20", help="the link's Mbit/s")
    ap.add_argument("--steps", default="60")
    ap.add_argument("--width", default="256")
    ap.add_argument("--fix-warmup", default="3")
    ap.add_argument("--out", default="/tmp/try_auto_acceptance")
    ap.add_argument("--reuse", action="store_true", help="judge the JSON documents of an earlier run of this script")
    args = ap.parse_args()
    from commprof.cli.try_search import DDP_CANDIDATES
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    job = ["--", sys.executable, str(ROOT / "tests" / "netlab" / "pair.py"), "--rate", args.rate, "--",
           str(ROOT / "tests" / "jobs" / "heldout_train.py"), "--steps", args.steps, "--width", args.width]
    common = ["--fix-warmup", args.fix_warmup, "--quiet"]
    times_path = out / "times.json"
    if not args.reuse:
        times = {"load_before": _load()}
        times["auto_s"] = _commprof(["try", "auto", "--budget", args.budget, "--out", str(out / "auto"),
                                     "--json", str(out / "auto.json"), *common, *job], out / "auto.log")
        times["load_between"] = _load()
        times["exhaustive_s"] = _commprof(["try", "/".join(DDP_CANDIDATES), "--repeat", "2", "--out",
                                           str(out / "all"), "--json", str(out / "all.json"), *common, *job],
                                          out / "all.log")
        times["load_after"] = _load()
        times_path.write_text(json.dumps(times, indent=1))
    times = json.loads(times_path.read_text())
    auto = json.loads((out / "auto.json").read_text())
    everything = json.loads((out / "all.json").read_text())
    j = judge(auto, everything)
    search_ratio = times["auto_s"] / times["exhaustive_s"]
    r = j["time_to_target_ratio"]
    print(f"load average (1 min): {times['load_before']} before, {times['load_between']} between, "
          f"{times['load_after']} after")
    print(f"try auto chose: {j['chosen']} (exhaustive judgement of it on {j['chosen_metric'] or 'the loss'}: "
          f"{j['chosen_verdict']})")
    print(f"best by trying every candidate twice: {j['best']}")
    print("effective speed-ups (exhaustive): " + ", ".join(
        f"{f} {'-' if s is None else f'{s:.2f}x'}" for f, s in j["speedups"].items()))
    print(f"harmful (worse than the noise on the held-out metric): {', '.join(j['harmful']) or 'none'}")
    print(f"time to target, chosen / best: {'unknown' if r is None else f'{r:.3f}'}")
    print(f"search time: auto {times['auto_s'] / 60:.1f} min / exhaustive {times['exhaustive_s'] / 60:.1f} min "
          f"= {search_ratio:.3f}")
    checks = {"chosen within noise": j["chosen_verdict"] == "ok",
              "time to target within 10 % of the best": r is not None and r <= 1.10,
              "at most a third of the exhaustive time": search_ratio <= 1 / 3,
              "no harmful fix chosen": j["chosen"] not in j["harmful"]}
    for what, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'} {what}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
