"""Claim verdicts from synthetic per-second histograms: supported, refuted, inconclusive
(straddling, missing metric, saturated cells) — and estimators that share one bootstrap draw."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from labctl.analysis.samples import VariantRate
from labctl.analysis.stats import SecondHistograms
from labctl.analysis.verdicts import evaluate_claims, judge
from labctl.experiment.claims import parse_claim

RATE = "75%"
C25 = {
    "id": "C2.5",
    "statement": "Go's P99 at least twice Rust's",
    "expect": "p99_ms[go] / p99_ms[rust] >= 2",
}


def seconds(tails_ms: list[float], body_ms: float = 1.0, per_s: int = 1000) -> SecondHistograms:
    """One histogram per second: 98 % of requests at ``body_ms``, 2 % at that second's tail.

    The pooled p99 is then the median of the tail values (rank 0.99·N falls in the middle of
    the pooled tail), so the tails set the p99 directly.
    """
    tail = per_s // 50
    pairs = [
        (np.array([body_ms * 1000, t * 1000]), np.array([float(per_s - tail), float(tail)])) for t in tails_ms
    ]
    return SecondHistograms.from_pairs(pairs)


def group(
    variant: str,
    lang: str,
    hist: SecondHistograms,
    *,
    saturated: bool = False,
    gc_traced: bool = False,
    gc_counts: list[float] | None = None,
    gc_events_us: list[float] | None = None,
    rate: str = RATE,
) -> VariantRate:
    cells = [{"variant": variant, "lang": lang, "rate": rate, "saturated": saturated, "summary": {}}]
    return VariantRate(
        variant,
        lang,
        rate,
        cells,
        hist,
        gc_events_us=list(gc_events_us or []),
        gc_counts=list(gc_counts or []),
        gc_traced=gc_traced,
    )


def spread(center: float, width: float, n: int = 30) -> list[float]:
    return list(np.linspace(center - width, center + width, n))


def verdicts(claims: list[dict[str, Any]], *groups: VariantRate, seed: int = 7) -> list[dict[str, Any]]:
    g = {(vr.variant, vr.rate): vr for vr in groups}
    rates = sorted({vr.rate for vr in groups})
    return evaluate_claims(claims, g, {}, rates, np.random.default_rng(seed))


def go(tails: list[float], **kw: Any) -> VariantRate:
    return group("go", "go", seconds(tails), gc_traced=True, **kw)


def rust(tails: list[float], **kw: Any) -> VariantRate:
    return group("rust", "rust", seconds(tails), **kw)


def test_synthetic_p99_is_the_median_tail() -> None:
    h = seconds(spread(10, 2, 31))
    assert h.pooled_percentile(99) == pytest.approx(10_000, rel=1e-9)
    assert h.pooled_percentile(50) == 1000


def test_supported() -> None:
    (v,) = verdicts([C25], go(spread(10, 2)), rust(spread(2, 0.3)))
    assert v["verdict"] == "supported", v
    assert v["value"] == pytest.approx(5.0, rel=0.05)
    lo, hi = v["ci"]
    assert 2 < lo < 5 < hi
    assert "entirely satisfies >= 2" in v["reason"] and RATE in v["reason"]
    assert set(v["inputs"]) == {"p99_ms[go]", "p99_ms[rust]"}
    assert v["inputs"]["p99_ms[go]"]["units"] == 30
    assert (v["claim"], v["rate"], v["expect"]) == ("C2.5", RATE, C25["expect"])


def test_refuted() -> None:
    (v,) = verdicts([C25], go(spread(2.2, 0.3)), rust(spread(2, 0.3)))
    assert v["verdict"] == "refuted", v
    assert v["ci"][1] < 2
    assert "entirely fails >= 2" in v["reason"]


def test_inconclusive_when_the_interval_straddles_the_threshold() -> None:
    (v,) = verdicts([C25], go(spread(4, 3)), rust(spread(2, 0.5)))
    assert v["verdict"] == "inconclusive", v
    lo, hi = v["ci"]
    assert lo < 2 < hi
    assert "straddles" in v["reason"]


def test_same_data_same_verdict_and_interval() -> None:
    a = verdicts([C25], go(spread(4, 3)), rust(spread(2, 0.5)), seed=3)
    b = verdicts([C25], go(spread(4, 3)), rust(spread(2, 0.5)), seed=3)
    assert a == b


def test_inconclusive_when_a_metric_is_missing() -> None:
    claim = {"id": "C9.1", "expect": "gc_pause_max_ms[go] - gc_pause_max_ms[rust] > 1"}
    (v,) = verdicts([claim], go(spread(10, 2), gc_events_us=[300, 900]), rust(spread(2, 0.3)))
    assert v["verdict"] == "inconclusive"
    assert v["reason"].startswith("missing: ")
    assert "gc_pause_max_ms[rust]: rust has no garbage collector trace" in v["reason"]
    assert v["value"] is None and v["ci"] is None


def test_inconclusive_when_a_variant_has_no_cell_at_the_rate() -> None:
    claim = {"id": "C9.2", "expect": "p99_ms[go] / p99_ms[cpp] >= 2"}
    (v,) = verdicts([claim], go(spread(10, 2)), rust(spread(2, 0.3)))
    assert v["verdict"] == "inconclusive"
    assert "p99_ms[cpp]: no successful cell at 75%" in v["reason"]


def test_go_gc_pause_metrics() -> None:
    g = go(spread(10, 2), gc_events_us=[200.0] * 5 + [2000.0, 3000.0, 4000.0, 5000.0, 6000.0])
    (v,) = verdicts([{"id": "C9.3", "expect": "gc_pause_max_ms[go] > 1"}], g)
    assert v["verdict"] == "supported" and v["value"] == 6.0
    assert v["inputs"]["gc_pause_max_ms[go]"]["units"] == 10  # resampled by GC cycle
    # one long pause among few: resamples without it are likely, so the interval is wide
    few = go(spread(10, 2), gc_events_us=[200.0, 250.0, 300.0, 4000.0])
    (v,) = verdicts([{"id": "C9.3", "expect": "gc_pause_max_ms[go] > 1"}], few)
    assert v["verdict"] == "inconclusive" and v["ci"][0] < 1 < v["ci"][1]
    (v,) = verdicts([{"id": "C9.3", "expect": "gc_pause_max_ms[go] > 1"}], go(spread(10, 2)))
    # traced, but no cycle ran while measuring: the longest pause was 0
    assert v["value"] == 0.0 and v["verdict"] == "refuted"


@pytest.mark.parametrize("who", ["go", "rust", "both"])
def test_saturated_cells_make_latency_claims_inconclusive(who: str) -> None:
    g = go(spread(10, 2), saturated=who in ("go", "both"))
    r = rust(spread(2, 0.3), saturated=who in ("rust", "both"))
    (v,) = verdicts([C25], g, r)
    assert v["verdict"] == "inconclusive", v
    assert "saturated" in v["reason"]
    assert (who if who != "both" else "go, rust") in v["reason"]
    assert v["value"] == pytest.approx(5.0, rel=0.05)  # the numbers are still shown


def test_saturation_does_not_block_a_gc_frequency_claim() -> None:
    claim = {"id": "C1.2", "expect": "gc_cycles_per_s[go] > 5"}
    busy = go(spread(10, 2), saturated=True, gc_counts=[6.0, 7.0, 8.0, 7.0, 6.0, 8.0] * 5)
    (v,) = verdicts([claim], busy)
    assert v["verdict"] == "supported", v
    assert v["value"] == pytest.approx(7.0)
    calm = go(spread(10, 2), saturated=True, gc_counts=[0.0, 1.0, 0.0] * 10)
    (v,) = verdicts([claim], calm)
    assert v["verdict"] == "refuted", v


def test_gc_frequency_for_a_language_without_gc() -> None:
    (v,) = verdicts([{"id": "C1.2", "expect": "gc_cycles_per_s[rust] > 5"}], rust(spread(2, 0.3)))
    assert v["verdict"] == "inconclusive" and "no garbage collector trace" in v["reason"]


def test_claim_rate_picks_the_group_and_defaults_to_the_last_rate() -> None:
    low = go(spread(200, 10), rate="25%")
    high = go(spread(10, 1), rate="75%")
    c = {"id": "C5.1", "expect": "p99_ms[go] > 100"}
    (v,) = verdicts([c], low, high)
    assert (v["rate"], v["verdict"]) == ("75%", "refuted")
    (v,) = verdicts([{**c, "rate": "25%"}], low, high)
    assert (v["rate"], v["verdict"]) == ("25%", "supported")


def test_same_variant_metrics_share_one_draw() -> None:
    # gc_cycles_per_s and achieved_rps of one variant resample the same seconds. Built so
    # their ratio is exactly 1/1000 in every resample: with one shared draw the interval is
    # a point; with two independent draws it would be wide.
    per_s = [900, 1100, 1500, 2000, 2500, 3000, 800, 1200, 4000, 600] * 3
    pairs = [(np.array([1000.0]), np.array([float(n)])) for n in per_s]
    g = group(
        "go", "go", SecondHistograms.from_pairs(pairs), gc_traced=True, gc_counts=[n / 1000 for n in per_s]
    )
    (v,) = verdicts([{"id": "C9.4", "expect": "gc_cycles_per_s[go] / achieved_rps[go] * 1000 > 0.999"}], g)
    assert v["value"] == pytest.approx(1.0)
    assert v["ci"] == pytest.approx([1.0, 1.0])
    assert v["verdict"] == "supported"
    # while each input on its own has a real interval
    lo, hi = v["inputs"]["achieved_rps[go]"]["ci"]
    assert hi - lo > 200


def test_pooled_percentiles_of_one_variant_share_one_draw() -> None:
    # Every second holds 1000 requests of a single latency: in any resample the top 0.1 % of
    # requests all come from the slowest second drawn, so p99.9 == max in every replicate of
    # one shared draw (two independent draws would put the ratio anywhere from ~0.5 to ~2).
    pairs = [(np.array([t * 1000]), np.array([1000.0])) for t in np.linspace(1, 50, 30)]
    g = group("go", "go", SecondHistograms.from_pairs(pairs))
    (v,) = verdicts([{"id": "C9.5", "expect": "max_ms[go] / p999_ms[go] < 1.001"}], g)
    assert v["ci"] == pytest.approx([1.0, 1.0])
    assert v["verdict"] == "supported"
    lo, hi = v["inputs"]["max_ms[go]"]["ci"]
    assert hi / lo > 1.05  # each on its own varies from draw to draw


def test_different_variants_are_drawn_independently() -> None:
    # Identical data for two variants: with independent draws the ratio varies around 1.
    (v,) = verdicts(
        [{"id": "C9.6", "expect": "p99_ms[go] / p99_ms[rust] >= 1"}], go(spread(5, 3)), rust(spread(5, 3))
    )
    assert v["value"] == pytest.approx(1.0)
    assert v["ci"][0] < 1 < v["ci"][1]
    assert v["verdict"] == "inconclusive"


def test_single_second_is_judged_on_the_point_with_a_note() -> None:
    (v,) = verdicts([{"id": "C5.1", "expect": "p99_ms[go] > 100"}], go([300.0]))
    assert v["verdict"] == "supported"
    assert v["ci"] == [300.0, 300.0]
    assert "single sample" in v["reason"]


@pytest.mark.parametrize(
    ("expect", "lo", "hi", "verdict"),
    [
        ("p99_ms[go] >= 2", 2.0, 3.0, "supported"),
        ("p99_ms[go] >= 2", 1.0, 1.99, "refuted"),
        ("p99_ms[go] >= 2", 1.9, 2.1, "inconclusive"),
        ("p99_ms[go] < 2", 1.0, 1.99, "supported"),
        ("p99_ms[go] < 2", 2.0, 3.0, "refuted"),
        ("p99_ms[go] > -1", -0.5, 0.5, "supported"),
    ],
)
def test_judge(expect: str, lo: float, hi: float, verdict: str) -> None:
    assert judge(parse_claim(expect), lo, hi) == verdict
