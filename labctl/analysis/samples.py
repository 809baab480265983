"""Samples per (variant, rate): per-second histograms, GC events, self-reports — and the
estimator of every claim metric with its bootstrap replicates."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from labctl.analysis.stats import B_DEFAULT, SecondHistograms, interval, resample_weights
from labctl.metrics.schema import parse_gctrace, read_hlog

PERCENTILE_METRICS = {"p50_ms": 50.0, "p90_ms": 90.0, "p99_ms": 99.0, "p999_ms": 99.9, "max_ms": 100.0}


@dataclass
class Estimate:
    """A metric's point value and how to draw bootstrap replicates of it.

    Estimators that resample the same units (``unit == "seconds"``: the measured seconds
    of one variant at one rate) also offer ``from_weights``: given a (B × units)
    multiplicity matrix they compute the replicates for that very draw. A claim naming
    two such metrics of one variant (``p999_ms[go] / p50_ms[go]``) must use one draw
    for both, or the replicates of the ratio lose the correlation between them.
    """

    point: float | None
    replicate: Callable[[np.random.Generator, int], np.ndarray] | None = None
    units: int = 0
    missing: str | None = None  # why the metric is absent
    unit: str | None = None  # what is resampled, when shared with other estimators
    from_weights: Callable[[np.ndarray], np.ndarray] | None = None

    def replicates(
        self, rng: np.random.Generator, b: int = B_DEFAULT, weights: np.ndarray | None = None
    ) -> np.ndarray | None:
        if self.point is None:
            return None
        if self.replicate is None or self.units < 2:
            return np.full(b, self.point)
        if weights is not None and self.from_weights is not None:
            return self.from_weights(weights)
        return self.replicate(rng, b)

    def ci(self, rng: np.random.Generator, b: int = B_DEFAULT) -> list[float] | None:
        reps = self.replicates(rng, b)
        return interval(reps) if reps is not None else None


@dataclass
class VariantRate:
    variant: str
    lang: str
    rate: str
    cells: list[dict[str, Any]]
    hist: SecondHistograms
    gc_events_us: list[float] = field(default_factory=list)  # STW per GC cycle inside the windows
    gc_counts: list[float] = field(default_factory=list)  # GC cycles per measured second
    capacity_rps: float | None = None
    gc_traced: bool = False

    @property
    def saturated(self) -> bool:
        return any(c.get("saturated") for c in self.cells)

    def gc_pauses_us(self) -> np.ndarray:
        return np.asarray(self.gc_events_us, dtype=float)

    def gc_per_second(self) -> float | None:
        return float(np.mean(self.gc_counts)) if self.gc_counts else None

    def estimator(self, metric: str) -> Estimate:
        if metric in PERCENTILE_METRICS:
            q = PERCENTILE_METRICS[metric]
            if self.hist.n == 0:
                return Estimate(None, missing="no latency histogram was recorded")
            h = self.hist
            point = h.pooled_percentile(q)

            def from_w(w: np.ndarray) -> np.ndarray:
                return np.asarray(h.pooled_percentile(q, w)) / 1000.0

            return Estimate(
                float(point) / 1000.0,
                lambda rng, b: from_w(resample_weights(h.n, b, rng)),
                h.n,
                unit="seconds",
                from_weights=from_w,
            )
        if metric == "achieved_rps":
            counts = self.hist.counts.sum(axis=1) if self.hist.n else np.zeros(0)
            return _mean_estimate(counts, "no latency histogram was recorded", unit="seconds")
        if metric == "errors":
            vals: list[int] = [
                int((c.get("summary") or {}).get("errors", 0))
                + int((c.get("summary") or {}).get("timeouts", 0))
                for c in self.cells
            ]
            return Estimate(float(sum(vals)), None, len(vals))
        if metric == "capacity_rps":
            if self.capacity_rps is None:
                return Estimate(None, missing="capacity was not measured (absolute rates)")
            return Estimate(self.capacity_rps, None, 1)
        if metric in ("gc_pause_max_ms", "gc_pause_p99_ms"):
            if not self.gc_traced:
                return Estimate(None, missing=f"{self.lang} has no garbage collector trace")
            ev = self.gc_pauses_us() / 1000.0
            if ev.size == 0:
                return Estimate(0.0, None, 0)  # traced, and no GC ran while measuring
            if metric == "gc_pause_max_ms":
                return Estimate(
                    float(ev.max()), lambda rng, b: rng.choice(ev, (b, ev.size)).max(axis=1), ev.size
                )
            return Estimate(
                float(np.percentile(ev, 99)),
                lambda rng, b: np.percentile(rng.choice(ev, (b, ev.size)), 99, axis=1),
                ev.size,
            )
        if metric == "gc_cycles_per_s":
            if not self.gc_traced:
                return Estimate(None, missing=f"{self.lang} has no garbage collector trace")
            gcc = np.asarray(self.gc_counts, dtype=float)
            # Same seconds as the latency histograms when every cell had a trace: share the draw.
            return _mean_estimate(
                gcc, "no measured seconds", unit="seconds" if gcc.size == self.hist.n else None
            )
        if metric == "rss_mb":
            rss = [(c.get("server") or {}).get("rss_hwm_bytes") for c in self.cells]
            arr = np.asarray([v / 2**20 for v in rss if v], dtype=float)
            return _mean_estimate(arr, "the server reported no peak RSS")
        return Estimate(None, missing=f"unknown metric {metric}")


def _mean_estimate(arr: np.ndarray, why: str, unit: str | None = None) -> Estimate:
    if arr.size == 0:
        return Estimate(None, missing=why)

    def from_w(w: np.ndarray) -> np.ndarray:
        return np.asarray(w @ arr / arr.size)

    return Estimate(
        float(arr.mean()),
        lambda rng, b: from_w(resample_weights(arr.size, b, rng)),
        int(arr.size),
        unit=unit,
        from_weights=from_w,
    )


def _hist_arrays(h: Any) -> tuple[np.ndarray, np.ndarray]:
    vals, cnts = [], []
    for it in h.get_recorded_iterator():
        vals.append(it.value_iterated_to)
        cnts.append(it.count_added_in_this_iter_step)
    return np.asarray(vals, dtype=float), np.asarray(cnts, dtype=float)


def collect(run_dir: Path, results: dict[str, Any]) -> dict[tuple[str, str], VariantRate]:
    """Group the run's successful cells by (variant, rate) and load their raw files."""
    groups: dict[tuple[str, str], VariantRate] = {}
    seconds: dict[tuple[str, str], list[tuple[np.ndarray, np.ndarray]]] = {}
    capacity = results.get("capacity") or {}
    for cell in results.get("cells", []):
        if cell.get("status") != "ok":
            continue
        key = (cell["variant"], cell["rate"])
        vr = groups.get(key)
        if vr is None:
            cap = (capacity.get(cell["variant"]) or {}).get("achieved_rps")
            vr = groups[key] = VariantRate(
                cell["variant"],
                cell["lang"],
                cell["rate"],
                [],
                SecondHistograms.from_pairs([]),
                capacity_rps=cap,
            )
            seconds[key] = []
        vr.cells.append(cell)
        cdir = Path(run_dir) / "cells" / cell["cell_id"]
        hlog = cdir / "loadgen.hlog"
        intervals = read_hlog(hlog) if hlog.is_file() else []
        seconds[key].extend(_hist_arrays(iv.histogram) for iv in intervals)
        err = cdir / "server.err"
        if cell["lang"] == "go" and err.is_file():
            vr.gc_traced = True
            events = parse_gctrace(err.read_text(errors="replace"), int(cell.get("server_start_ns") or 0))
            if intervals:
                for iv in intervals:
                    inside = [e for e in events if iv.start_ns <= e.time_ns < iv.end_ns]
                    vr.gc_counts.append(len(inside) / max((iv.end_ns - iv.start_ns) / 1e9, 1e-9))
                    vr.gc_events_us.extend(e.stw_us for e in inside if e.stw_us is not None)
    for key, vr in groups.items():
        vr.hist = SecondHistograms.from_pairs(seconds[key])
    return groups
