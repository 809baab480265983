"""Descriptive statistics, bootstrap intervals and tests (numpy/scipy, nothing hand-rolled
that a library already does well).

Latency samples are kept as per-second histograms: a (seconds × values) count matrix
over a common value grid. Pooling seconds is a sum of rows, so a bootstrap replicate
of a pooled percentile is one matrix product — no percentile is ever averaged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as sps

B_DEFAULT = 2000
CONFIDENCE = 0.95


@dataclass
class SecondHistograms:
    """Per-second latency histograms sharing one value grid (µs)."""

    values: np.ndarray  # (V,) sorted distinct values
    counts: np.ndarray  # (S, V) counts per second

    @classmethod
    def from_pairs(cls, seconds: list[tuple[np.ndarray, np.ndarray]]) -> SecondHistograms:
        if not seconds:
            return cls(np.zeros(0), np.zeros((0, 0)))
        grid = np.unique(np.concatenate([v for v, _ in seconds])) if seconds else np.zeros(0)
        m = np.zeros((len(seconds), len(grid)))
        for i, (v, c) in enumerate(seconds):
            # add.at, not +=: a value listed twice in one second must count twice.
            np.add.at(m[i], np.searchsorted(grid, v), c)
        return cls(grid, m)

    @property
    def n(self) -> int:
        return int(self.counts.shape[0])

    def pooled_percentile(self, q: float, weights: np.ndarray | None = None) -> np.ndarray | float:
        """Percentile q (0–100) of the pooled histogram; with weights (B × S) one per replicate."""
        if self.n == 0:
            return float("nan")
        pooled = self.counts.sum(axis=0) if weights is None else weights @ self.counts
        return percentile_of_counts(self.values, pooled, q)

    def per_second(self, q: float) -> np.ndarray:
        return np.array([percentile_of_counts(self.values, row, q) for row in self.counts])


def percentile_of_counts(values: np.ndarray, counts: np.ndarray, q: float) -> np.ndarray | float:
    """The smallest value whose cumulative count reaches q% (as HdrHistogram reports it).

    ``counts`` is (V,) or (B, V); returns a float or a (B,) array.
    """
    c = np.atleast_2d(counts)
    total = c.sum(axis=1)
    cum = np.cumsum(c, axis=1)
    target = np.maximum(np.ceil(total * q / 100.0), 1)
    idx = (cum < target[:, None]).sum(axis=1)
    idx = np.minimum(idx, len(values) - 1)
    out = np.where(total > 0, values[idx], np.nan)
    return float(out[0]) if counts.ndim == 1 else out


def resample_weights(n: int, b: int, rng: np.random.Generator) -> np.ndarray:
    """(b × n) multiplicities: how often each of n units is drawn in each bootstrap replicate."""
    idx = rng.integers(0, n, size=(b, n))
    w = np.zeros((b, n))
    np.add.at(w, (np.arange(b)[:, None], idx), 1)
    return w


def describe(xs: Any) -> dict[str, Any]:
    """n, median, mean ± sd, MAD, Tukey outliers (reported, not dropped), stability warning."""
    a = np.asarray([x for x in xs if x is not None and np.isfinite(x)], dtype=float)
    if a.size == 0:
        return {"n": 0}
    out: dict[str, Any] = {
        "n": int(a.size),
        "median": float(np.median(a)),
        "mean": float(a.mean()),
        "min": float(a.min()),
        "max": float(a.max()),
    }
    if a.size >= 2:
        sd = float(a.std(ddof=1))
        out["sd"] = sd
        out["mad"] = float(sps.median_abs_deviation(a))
        q1, q3 = np.percentile(a, [25, 75])
        iqr = q3 - q1
        # Tukey: mild = between the inner (1.5×IQR) and outer (3×IQR) fences, extreme = beyond
        # the outer fence; the two counts do not overlap.
        extreme = (a < q1 - 3 * iqr) | (a > q3 + 3 * iqr)
        beyond_inner = (a < q1 - 1.5 * iqr) | (a > q3 + 1.5 * iqr)
        out["outliers_mild"] = int((beyond_inner & ~extreme).sum())
        out["outliers_extreme"] = int(extreme.sum())
        out["unstable"] = bool(out["mean"] and sd >= 0.10 * abs(out["mean"]))
    return out


def ratio_of_medians(
    base: np.ndarray, other: np.ndarray, rng: np.random.Generator, b: int = B_DEFAULT
) -> dict[str, Any]:
    """other/base ratio of medians, 95 % percentile-bootstrap interval, Mann-Whitney U p-value."""
    base = np.asarray(base, dtype=float)
    other = np.asarray(other, dtype=float)
    base = base[np.isfinite(base)]
    other = other[np.isfinite(other)]
    if base.size == 0 or other.size == 0:
        return {
            "ratio": None,
            "ci": None,
            "p_value": None,
            "n_base": int(base.size),
            "n_other": int(other.size),
        }
    mb = float(np.median(base))
    ratio = float(np.median(other)) / mb if mb else None
    rb = np.median(rng.choice(base, size=(b, base.size), replace=True), axis=1)
    ro = np.median(rng.choice(other, size=(b, other.size), replace=True), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        reps = ro / rb
    reps = reps[np.isfinite(reps)]
    ci = interval(reps)
    p = None
    if base.size >= 2 and other.size >= 2 and not (np.all(base == base[0]) and np.all(other == base[0])):
        p = float(sps.mannwhitneyu(other, base, alternative="two-sided").pvalue)
    return {"ratio": ratio, "ci": ci, "p_value": p, "n_base": int(base.size), "n_other": int(other.size)}


def interval(replicates: np.ndarray) -> list[float] | None:
    r = np.asarray(replicates, dtype=float)
    r = r[np.isfinite(r)]
    if r.size == 0:
        return None
    alpha = (1 - CONFIDENCE) / 2
    lo, hi = np.percentile(r, [100 * alpha, 100 * (1 - alpha)])
    return [float(lo), float(hi)]


def significance(ratio: dict[str, Any], noise: float) -> str:
    """'lower' / 'higher' (the contender against the baseline), or 'no significant difference'.

    Significant only when p < 0.05 AND the whole interval lies beyond the noise band.
    """
    ci, p = ratio.get("ci"), ratio.get("p_value")
    if ci is None or p is None or p >= 0.05:
        return "no significant difference"
    if ci[1] < 1 - noise:
        return "lower"
    if ci[0] > 1 + noise:
        return "higher"
    return "no significant difference"
