"""The op table's latency quantiles come from mergeable DDSketches (commprof/analysis/measures/latency.py):
within the stated relative error α of exact numpy quantiles, on synthetic durations and on a real
run, and the merge of per-rank sketches is the sketch of all values."""
from __future__ import annotations

import numpy as np
import pytest

import commprof
from commprof.analysis.measures import latency
from commprof.analysis.measures.latency import RELATIVE_ACCURACY as ALPHA

BOUND = ALPHA * (1 + 1e-9)  # α, plus float rounding at a bin's edge (where the error is α exactly)
QS = [0.0, 0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 1.0]


def _within(got: float, exact: float) -> bool:
    return abs(got - exact) <= BOUND * abs(exact)


def _durations(n: int, seed: int = 0) -> np.ndarray:
    """Log-uniform durations, 1 µs .. 10 s in ns, some repeated (integers, as recorded)."""
    rng = np.random.default_rng(seed)
    return np.round(10 ** rng.uniform(3, 10, n))


def test_quantiles_are_within_the_stated_relative_error_from_1us_to_10s():
    d = _durations(200_000)
    lat = latency.latency_of(d)
    assert lat.count == len(d) and lat.max == d.max() and lat.min == d.min()
    for q in QS:
        exact = float(np.quantile(d, q))
        got = latency.quantile(lat, q)
        assert _within(got, exact), (q, got, exact)
    assert latency.quantile(lat, 1.0) == d.max()  # max is exact


@pytest.mark.parametrize("values", [[7.0], [10e6, 20e6], [10e6, 20e6, 30e6, 40e6], [0.0, 0.0, 5e3],
                                    [3e3] * 5 + [9e9]])
def test_small_and_degenerate_sets_interpolate_like_numpy(values):
    lat = latency.latency_of(np.array(values))
    for q in QS:
        exact = float(np.quantile(values, q))
        assert _within(latency.quantile(lat, q), exact), (q, exact)


def test_empty_set_has_no_quantile():
    assert np.isnan(latency.quantile(latency.latency_of(np.array([])), 0.5))
    assert latency.merge([]).count == 0


def test_vectorised_insertion_puts_each_value_in_the_bin_ddsketch_would():
    from ddsketch import DDSketch
    d = _durations(20_000, seed=1)
    ref = DDSketch(ALPHA)
    for x in d:
        ref.add(float(x))
    ours = latency.latency_of(d).sketch
    assert ours.count == ref.count
    for q in QS:
        assert ours.get_quantile_value(q) == pytest.approx(ref.get_quantile_value(q), rel=1e-12)


def test_merge_of_per_rank_sketches_is_the_sketch_of_all_values():
    d = _durations(100_000, seed=2)
    ranks = np.array_split(d, 16)
    parts = [latency.latency_of(r) for r in ranks]
    before = [p.sketch.count for p in parts]
    merged = latency.merge(parts)
    whole = latency.latency_of(d)
    assert [p.sketch.count for p in parts] == before  # the inputs are unchanged
    assert merged.count == whole.count and merged.max == whole.max and merged.min == whole.min
    for q in QS:
        m, w = latency.quantile(merged, q), latency.quantile(whole, q)
        assert m == pytest.approx(w, rel=1e-12), q  # the same bins: the same answer
        assert _within(m, float(np.quantile(d, q))), q


def test_sketch_state_does_not_grow_with_the_number_of_calls():
    import pickle
    small = len(pickle.dumps(latency.latency_of(_durations(1_000, seed=3))))
    big = len(pickle.dumps(latency.latency_of(_durations(1_000_000, seed=3))))
    assert big < 2 * small + 2048 and big < 1_000_000 * 8 / 100


# -- on a real run -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from demo_run import demo_run
    return demo_run(tmp_path_factory)


@pytest.mark.slow
def test_report_latency_quantiles_are_within_the_bound_of_exact_ones_on_a_real_run(demo):
    from demo_run import shared_report
    doc = shared_report(demo)
    calls = commprof.load_run(demo).calls  # the op table covers every call of every rank
    checked = 0
    for row in doc["ops"]:
        d = calls.loc[(calls["op"].astype(str) == row["op"])
                      & (calls["group_size"] == row["group_size"]), "duration_ns"].to_numpy("float64")
        assert len(d), row["op"]
        assert row["max_s"] == pytest.approx(d.max() / 1e9, rel=1e-12)  # exact
        for key, q in (("p50_s", 0.5), ("p99_s", 0.99)):
            exact = float(np.quantile(d, q)) / 1e9
            assert _within(row[key], exact), (row["op"], key, row[key], exact)
        checked += len(d) > 2
    assert checked
