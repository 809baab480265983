"""The report's figures from synthetic groups: every figure is a decodable PNG data URI, also
in the corner cases (a single GC cycle, many cycles, no data at all)."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest

from labctl.analysis.samples import VariantRate
from labctl.analysis.stats import SecondHistograms
from labctl.report import plots


def png(uri: str | None) -> tuple[int, int]:
    from PIL import Image

    assert uri is not None and uri.startswith("data:image/png;base64,")
    with Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1], validate=True))) as im:
        im.load()
        return im.size


def vr(variant: str, rate: str, *, lang: str = "go", gc: list[float] | None = None) -> VariantRate:
    g = np.random.default_rng(len(variant) + len(rate))
    pairs = [
        (np.array([500.0, 2000.0, float(g.integers(5000, 90000))]), np.array([900.0, 90.0, 10.0]))
        for _ in range(5)
    ]
    cells = [
        {
            "variant": variant,
            "rate": rate,
            "rate_rps": 1000.0,
            "summary": {"achieved_rps": 998.0},
            "server": {"rss_hwm_bytes": 80 * 2**20},
        }
    ]
    return VariantRate(
        variant,
        lang,
        rate,
        cells,
        SecondHistograms.from_pairs(pairs),
        gc_events_us=list(gc or []),
        gc_traced=lang == "go",
    )


@pytest.mark.parametrize(
    "events",
    [
        {"go": [92.0]},  # a quick run's single cycle: was an empty histogram
        {"go": [0.0, 350.0]},  # a 0 µs pause on a log axis
        {"go": [50.0, 50.0, 50.0]},  # all equal
        {"go": list(np.linspace(40, 900, 120)), "go-gogc400": list(np.linspace(60, 2000, 40))},
        {"go": [1200.0] * 40},  # many, all equal: the histogram path with one bar
    ],
)
def test_gc_pause_figure(events: dict[str, list[float]]) -> None:
    groups = {(v, "50%"): vr(v, "50%", gc=e) for v, e in events.items()}
    groups[("rust", "50%")] = vr("rust", "50%", lang="rust")
    w, h = png(plots.gc_pauses(groups))
    assert w > 300 and h > 80


def test_gc_pause_figure_absent_without_cycles() -> None:
    assert (
        plots.gc_pauses({("go", "50%"): vr("go", "50%"), ("rust", "50%"): vr("rust", "50%", lang="rust")})
        is None
    )


def test_other_figures() -> None:
    groups = {
        (v, r): vr(v, r, lang="go" if v == "go" else v) for v in ("go", "rust", "cpp") for r in ("25%", "75%")
    }
    assert png(plots.percentile_spectrum(groups, "75%"))[0] > 300
    assert plots.percentile_spectrum(groups, "99%") is None
    assert png(plots.throughput(groups, ["25%", "75%"]))[0] > 300
    assert png(plots.rss(groups))[0] > 300
    assert plots.throughput({}, []) is None
