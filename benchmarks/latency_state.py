"""State kept for the op table's latency quantiles of one (op, group size) on one rank: the exact
durations (8 bytes per call, before 2026-12) vs the DDSketch that replaced them
(commprof/analysis/measures/latency.py).  Numbers in docs/scaling.md ("Bounded latency state").

    python benchmarks/latency_state.py
"""
from __future__ import annotations

import pickle
import sys

import numpy as np

from commprof.analysis.measures import latency

CASES = [(2000 * 80, 4, 7, "160,000 calls (2,000 steps x 80), 10 us..10 ms"),
         (200 * 40, 3, 10, "8,000 calls (200 steps x 40), 1 us..10 s"),
         (1_000_000, 3, 10, "1,000,000 calls, 1 us..10 s")]


def in_memory(lat: latency.Latency) -> int:
    """Bytes of the sketch's bins (the list and its non-zero floats), plus the fixed objects."""
    bins = lat.sketch._store.bins
    return sys.getsizeof(bins) + sum(sys.getsizeof(b) for b in bins if b) + 400


def main() -> None:
    rng = np.random.default_rng(0)
    for calls, lo, hi, label in CASES:
        d = np.round(10 ** rng.uniform(lo, hi, calls))  # log-uniform durations, ns
        lat = latency.latency_of(d)
        print(f"{label}: durations {d.nbytes / 1e3:.0f} kB; sketch {len(lat.sketch._store.bins)} "
              f"bins, pickled {len(pickle.dumps(lat)) / 1e3:.1f} kB, "
              f"in memory ~{in_memory(lat) / 1e3:.1f} kB")


if __name__ == "__main__":
    main()
