"""Statistics on known inputs: percentiles of count vectors, descriptives, bootstrap ratio of
medians with its p-value, and the significance rule with its noise band."""

from __future__ import annotations

import statistics

import numpy as np
import pytest

from labctl.analysis.stats import (
    SecondHistograms,
    describe,
    interval,
    percentile_of_counts,
    ratio_of_medians,
    resample_weights,
    significance,
)

QS = [0, 0.1, 1, 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.99, 100]


def rng(seed: int = 1) -> np.random.Generator:
    return np.random.default_rng(seed)


# --- percentile_of_counts ------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(8))
def test_percentile_of_counts_matches_numpy_on_expanded_data(seed: int) -> None:
    g = rng(seed)
    values = np.unique(g.integers(1, 100_000, size=g.integers(1, 60)).astype(float))
    counts = g.integers(0, 50, size=values.size).astype(float)
    counts[g.integers(0, values.size)] += 1  # at least one recorded value
    data = np.repeat(values, counts.astype(int))
    for q in QS:
        # HdrHistogram's definition: the smallest value whose cumulative count reaches q % of
        # the total — numpy's "inverted_cdf" (nearest rank) on the expanded data.
        expected = np.percentile(data, q, method="inverted_cdf")
        assert percentile_of_counts(values, counts, q) == expected, (q, values, counts)


def test_percentile_of_counts_batched_rows_match_single_rows() -> None:
    g = rng(3)
    values = np.arange(1.0, 41.0)
    counts = g.integers(0, 9, size=(25, values.size)).astype(float)
    counts[:, 0] += 1
    for q in (50, 99, 99.9):
        batch = percentile_of_counts(values, counts, q)
        assert isinstance(batch, np.ndarray) and batch.shape == (25,)
        assert list(batch) == [percentile_of_counts(values, row, q) for row in counts]


def test_percentile_of_counts_edge_cases() -> None:
    v = np.array([1.0, 2.0, 3.0, 4.0])
    assert percentile_of_counts(v, np.array([0.0, 0, 0, 5]), 0) == 4.0  # zeros before are skipped
    assert percentile_of_counts(v, np.array([1.0, 1, 1, 1]), 50) == 2.0  # exactly half: the lower
    assert percentile_of_counts(v, np.array([1.0, 1, 1, 1]), 50.01) == 3.0
    assert percentile_of_counts(v, np.array([1.0, 1, 1, 1]), 100) == 4.0
    assert np.isnan(percentile_of_counts(v, np.zeros(4), 50))
    # 1000 samples: p99.9 is the 999th value, not the 1000th (no float round-up).
    counts = np.array([998.0, 1, 1, 0])
    assert percentile_of_counts(v, counts, 99.9) == 2.0


def test_second_histograms_pool_like_all_the_data() -> None:
    g = rng(5)
    seconds, every = [], []
    for _ in range(12):
        vals = np.unique(g.integers(100, 5000, size=30)).astype(float)
        cnts = g.integers(1, 20, size=vals.size).astype(float)
        seconds.append((vals, cnts))
        every.append(np.repeat(vals, cnts.astype(int)))
    h = SecondHistograms.from_pairs(seconds)
    data = np.concatenate(every)
    assert h.n == 12 and h.counts.sum() == data.size
    for q in (50, 90, 99, 99.9, 100):
        assert h.pooled_percentile(q) == np.percentile(data, q, method="inverted_cdf")
    per = h.per_second(99)
    assert list(per) == [np.percentile(x, 99, method="inverted_cdf") for x in every]
    # weights of all ones are the pooled histogram
    ones = np.asarray(h.pooled_percentile(99, np.ones((3, 12))))
    assert list(ones) == [h.pooled_percentile(99)] * 3


def test_second_histograms_count_repeated_values() -> None:
    h = SecondHistograms.from_pairs([(np.array([5.0, 5.0, 7.0]), np.array([1.0, 2.0, 4.0]))])
    assert list(h.values) == [5.0, 7.0] and list(h.counts[0]) == [3.0, 4.0]
    assert SecondHistograms.from_pairs([]).n == 0
    assert np.isnan(SecondHistograms.from_pairs([]).pooled_percentile(50))


def test_resample_weights() -> None:
    w = resample_weights(7, 500, rng(2))
    assert w.shape == (500, 7)
    assert (w.sum(axis=1) == 7).all() and (w >= 0).all()
    assert abs(w.mean() - 1) < 0.05  # each unit drawn once per replicate on average
    assert (resample_weights(7, 5, rng(2)) == resample_weights(7, 5, rng(2))).all()  # seeded


# --- describe --------------------------------------------------------------------------------

HAND = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 22, 40]
# numpy's default (linear) quartiles: Q1 = 4.25, Q3 = 10.75, IQR = 6.5
# inner fences -5.5 / 20.5, outer fences -15.25 / 30.25 → 22 is mild, 40 is extreme.


def test_describe_hand_made() -> None:
    d = describe(HAND)
    assert d["n"] == 14
    assert d["median"] == 7.5
    assert d["mean"] == 10.0
    assert d["min"] == 1.0 and d["max"] == 40.0
    assert d["sd"] == pytest.approx(statistics.stdev(HAND))  # sample sd (n - 1)
    assert d["mad"] == statistics.median(abs(x - 7.5) for x in HAND) == 3.5  # raw MAD, not scaled
    assert d["outliers_mild"] == 1  # 22: between the fences
    assert d["outliers_extreme"] == 1  # 40: beyond the outer fence (not counted as mild too)
    assert d["unstable"] is True  # sd 9.8 ≥ 10 % of the mean


def test_describe_outliers_low_side_and_none() -> None:
    d = describe([-x for x in HAND])  # the mirror image: -22 mild, -40 extreme
    assert (d["outliers_mild"], d["outliers_extreme"]) == (1, 1)
    assert describe([10, 11, 12, 13])["outliers_mild"] == 0


@pytest.mark.parametrize(
    ("xs", "unstable"),
    [
        ([100, 101, 99, 100], False),
        ([100, 100, 100, 130], True),  # sd 15 = 14 % of 107.5
        ([10.0, 11.0], False),  # sd 0.707 = 6.7 % of 10.5
        ([10.0, 12.0], True),  # sd 1.414 = 12.9 % of 11
        ([0.0, 0.0, 0.0], False),
    ],
)
def test_describe_stability_warning(xs: list[float], unstable: bool) -> None:
    assert describe(xs)["unstable"] is unstable


def test_describe_small_and_dirty_inputs() -> None:
    assert describe([]) == {"n": 0}
    assert describe([None, float("nan")]) == {"n": 0}
    one = describe([None, 5, float("inf")])
    assert one == {"n": 1, "median": 5.0, "mean": 5.0, "min": 5.0, "max": 5.0}  # no sd from one value
    assert describe(np.array([3.0, 4.0]))["n"] == 2


# --- ratio of medians, p-value, significance ------------------------------------------------


def test_ratio_of_medians_clearly_different() -> None:
    g = rng(11)
    base = g.normal(10.0, 0.6, 60)
    other = g.normal(20.0, 1.2, 60)  # true ratio of medians: 2
    res = ratio_of_medians(base, other, rng(12))
    assert res["ratio"] == pytest.approx(np.median(other) / np.median(base))
    lo, hi = res["ci"]
    assert lo < 2.0 < hi and lo < res["ratio"] < hi
    assert hi - lo < 0.2
    assert res["p_value"] < 1e-10
    assert (res["n_base"], res["n_other"]) == (60, 60)
    assert significance(res, 0.01) == "higher"
    back = ratio_of_medians(other, base, rng(12))
    assert back["ci"][0] < 0.5 < back["ci"][1]
    assert significance(back, 0.01) == "lower"


def test_ratio_interval_coverage() -> None:
    # The 95 % interval should contain the true ratio in roughly 95 % of experiments.
    g = rng(21)
    hits, trials = 0, 120
    for _ in range(trials):
        base = g.lognormal(np.log(10), 0.3, 40)
        other = g.lognormal(np.log(15), 0.3, 40)  # true ratio of medians 1.5
        lo, hi = ratio_of_medians(base, other, g, b=800)["ci"]
        hits += lo <= 1.5 <= hi
    assert hits / trials >= 0.85, hits


def test_identical_samples_no_significant_difference() -> None:
    x = rng(4).normal(100.0, 5.0, 40)
    res = ratio_of_medians(x, x.copy(), rng(5))
    assert res["ratio"] == 1.0
    assert res["ci"][0] <= 1.0 <= res["ci"][1]
    assert res["p_value"] > 0.9
    assert significance(res, 0.01) == "no significant difference"
    const = ratio_of_medians(np.full(10, 7.0), np.full(10, 7.0), rng(5))
    assert const["ratio"] == 1.0 and const["ci"] == [1.0, 1.0]
    assert const["p_value"] is None
    assert significance(const, 0.01) == "no significant difference"


def test_noise_band_hides_tiny_but_certain_differences() -> None:
    g = rng(8)
    base = 100.0 + g.normal(0, 0.05, 300)
    other = 100.5 + g.normal(0, 0.05, 300)  # 0.5 % slower, with no doubt at all
    res = ratio_of_medians(base, other, rng(9))
    assert res["p_value"] < 1e-50
    assert 1.003 < res["ci"][0] < res["ci"][1] < 1.007
    assert significance(res, 0.01) == "no significant difference"  # inside the ±1 % band
    assert significance(res, 0.001) == "higher"  # a quieter lab sees it


@pytest.mark.parametrize(
    ("ci", "p", "noise", "expected"),
    [
        ([1.004, 1.006], 1e-9, 0.01, "no significant difference"),
        ([1.02, 1.05], 1e-9, 0.01, "higher"),
        ([0.90, 0.95], 0.001, 0.01, "lower"),
        ([0.90, 0.995], 0.001, 0.01, "no significant difference"),  # interval reaches into the band
        ([1.02, 1.05], 0.05, 0.01, "no significant difference"),  # p must be < 0.05
        ([1.02, 1.05], 0.049, 0.01, "higher"),
        ([0.5, 2.0], 0.001, 0.01, "no significant difference"),  # straddles 1
        ([1.02, 1.05], None, 0.01, "no significant difference"),
        (None, 0.001, 0.01, "no significant difference"),
        ([1.04, 1.2], 0.001, 0.05, "no significant difference"),  # a noisy lab's 5 % band
    ],
)
def test_significance_rule(ci: list[float] | None, p: float | None, noise: float, expected: str) -> None:
    assert significance({"ci": ci, "p_value": p}, noise) == expected


def test_ratio_of_medians_degenerate_inputs() -> None:
    empty = ratio_of_medians(np.array([]), np.array([1.0, 2.0]), rng())
    assert empty == {"ratio": None, "ci": None, "p_value": None, "n_base": 0, "n_other": 2}
    nan = ratio_of_medians(np.array([np.nan, 1.0, 2.0]), np.array([2.0, 4.0, np.inf]), rng())
    assert (nan["n_base"], nan["n_other"]) == (2, 2)  # non-finite samples are ignored
    one = ratio_of_medians(np.array([2.0]), np.array([4.0]), rng())
    assert one["ratio"] == 2.0 and one["p_value"] is None  # no test from one sample
    assert significance(one, 0.01) == "no significant difference"


def test_interval() -> None:
    assert interval(np.arange(0.0, 1001.0)) == pytest.approx([25.0, 975.0])
    assert interval(np.array([np.nan, np.inf])) is None
    assert interval(np.array([3.0, np.inf, 3.0])) == [3.0, 3.0]
