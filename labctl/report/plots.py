"""The report's figures, drawn with matplotlib (Agg) and embedded as PNG data URIs."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axis import Axis
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter

from labctl.analysis.samples import VariantRate
from labctl.metrics.schema import parse_gctrace, read_hlog

SPECTRUM = [50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99, 100]


def _uri(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


class _PlainLog(LogFormatter):
    """LogFormatter's choice of which ticks get a label, written as plain numbers (300, 0.1)."""

    def __call__(self, x: float, pos: int | None = None) -> str:
        return f"{x:g}" if super().__call__(x, pos) else ""


def _plain_log(axis: Axis) -> None:
    """Tick labels of a log axis as plain numbers instead of 3×10², 10⁻¹."""
    axis.set_major_formatter(_PlainLog())
    axis.set_minor_formatter(_PlainLog(labelOnlyBase=False, minor_thresholds=(1.5, 0.6)))


def _nines(p: float) -> float:
    return 1.0 / max(1e-5, 1.0 - p / 100.0)


def percentile_spectrum(groups: dict[tuple[str, str], VariantRate], rate: str) -> str | None:
    """Latency by percentile (log-log, 'nines' on x) for every variant at one rate."""
    fig, ax = plt.subplots(figsize=(7.5, 4))
    drawn = False
    for (variant, r), vr in sorted(groups.items()):
        if r != rate or vr.hist.n == 0:
            continue
        ys = [float(vr.hist.pooled_percentile(p)) / 1000.0 for p in SPECTRUM]
        ax.plot(
            [_nines(p) for p in SPECTRUM],
            ys,
            marker="o",
            ms=3,
            label=variant + (" (saturated)" if vr.saturated else ""),
        )
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks([_nines(p) for p in SPECTRUM[:-1]] + [_nines(100)])
    ax.set_xticklabels([f"{p:g}" for p in SPECTRUM[:-1]] + ["max"], rotation=45, fontsize=8)
    ax.set_xlabel("percentile (coordinated-omission corrected)")
    ax.set_ylabel("latency, ms (log)")
    _plain_log(ax.yaxis)
    ax.set_title(f"latency by percentile at {rate}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _uri(fig)


def latency_over_time(run_dir: Path, cells: list[dict[str, Any]], rate: str) -> str | None:
    """Per-second p99 and max for the first repetition of each variant at ``rate``; GC pauses marked."""
    chosen = {}
    for c in cells:
        if c.get("status") == "ok" and c["rate"] == rate and c["variant"] not in chosen:
            chosen[c["variant"]] = c
    if not chosen:
        return None
    fig, axes = plt.subplots(
        len(chosen), 1, figsize=(7.5, 1.9 * len(chosen) + 0.6), sharex=True, squeeze=False
    )
    for ax, (variant, c) in zip(axes[:, 0], sorted(chosen.items()), strict=True):
        cdir = run_dir / "cells" / c["cell_id"]
        ivs = read_hlog(cdir / "loadgen.hlog") if (cdir / "loadgen.hlog").is_file() else []
        if not ivs:
            ax.text(0.5, 0.5, "no interval log", transform=ax.transAxes, ha="center")
            continue
        t0 = ivs[0].start_ns
        # Each point stands for its whole interval: draw it at the middle, so the GC markers
        # (drawn at their own times) line up with the second they fell into.
        xs = [((iv.start_ns + iv.end_ns) / 2 - t0) / 1e9 for iv in ivs]
        p99 = [
            iv.histogram.get_value_at_percentile(99) / 1000 if iv.histogram.get_total_count() else np.nan
            for iv in ivs
        ]
        mx = [iv.histogram.get_max_value() / 1000 if iv.histogram.get_total_count() else np.nan for iv in ivs]
        ax.plot(xs, p99, label="p99", lw=1.2, marker="o", ms=3)
        ax.plot(xs, mx, label="max", lw=0.8, alpha=0.7, marker="o", ms=2)
        ax.set_xlim(0, (ivs[-1].end_ns - t0) / 1e9)
        err = cdir / "server.err"
        if c["lang"] == "go" and err.is_file():
            events = [
                e
                for e in parse_gctrace(err.read_text(errors="replace"), int(c.get("server_start_ns") or 0))
                if t0 <= e.time_ns <= ivs[-1].end_ns and e.stw_us is not None
            ]
            if events:
                ax.scatter(
                    [(e.time_ns - t0) / 1e9 for e in events],
                    [max(e.stw_us or 0, 1.0) / 1000 for e in events],
                    marker="v",
                    color="crimson",
                    s=14,
                    label="GC stop-the-world",
                    zorder=3,
                )
        ax.set_yscale("log")
        _plain_log(ax.yaxis)
        ax.set_ylabel("ms")
        ax.set_title(f"{variant} @ {rate}", fontsize=9, loc="left")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    axes[-1, 0].set_xlabel("seconds into the measurement")
    fig.suptitle("latency over time (corrected; one point per second)", fontsize=10)
    return _uri(fig)


def throughput(groups: dict[tuple[str, str], VariantRate], rates: list[str]) -> str | None:
    """Achieved vs requested rate per variant and rate."""
    variants = sorted({v for v, _ in groups})
    if not variants or not rates:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    width = 0.8 / len(variants)
    for i, v in enumerate(variants):
        ach = []
        for r in rates:
            vr = groups.get((v, r))
            vals = (
                [float((c.get("summary") or {}).get("achieved_rps", np.nan)) for c in vr.cells] if vr else []
            )
            ach.append(np.mean(vals) if vals else np.nan)
        ax.bar(np.arange(len(rates)) + i * width, np.asarray(ach, dtype=float), width, label=v)
    req = []
    for r in rates:
        vals = [
            float(c.get("rate_rps") or np.nan) for vr in groups.values() if vr.rate == r for c in vr.cells
        ]
        req.append(np.mean(vals) if vals else np.nan)
    ax.scatter(
        np.arange(len(rates)) + 0.4 - width / 2,
        np.asarray(req, dtype=float),
        marker="_",
        s=800,
        color="black",
        label="requested",
    )
    ax.set_xticks(np.arange(len(rates)) + 0.4 - width / 2)
    ax.set_xticklabels(rates)
    ax.set_ylabel("requests/s")
    ax.set_title("throughput: achieved vs requested")
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    return _uri(fig)


def gc_pauses(groups: dict[tuple[str, str], VariantRate]) -> str | None:
    """Distribution of Go's stop-the-world pauses per Go variant (all rates)."""
    per_variant: dict[str, list[float]] = {}
    for (v, _), vr in groups.items():
        if vr.gc_traced:
            per_variant.setdefault(v, []).extend(vr.gc_events_us)
    per_variant = {v: xs for v, xs in per_variant.items() if xs}
    if not per_variant:
        return None
    # Log axis: a pause below 1 µs is drawn at 1 µs.
    per_variant = {v: list(np.maximum(np.asarray(xs, dtype=float), 1.0)) for v, xs in per_variant.items()}
    allv = np.concatenate([np.asarray(x) for x in per_variant.values()])
    names = sorted(per_variant)
    if allv.size < 30:
        # Too few cycles for a histogram (one bar of height 1 says nothing): one tick per cycle.
        fig, ax = plt.subplots(figsize=(7.5, 1.2 + 0.45 * len(names)))
        for i, v in enumerate(names):
            ax.scatter(per_variant[v], [i] * len(per_variant[v]), marker="|", s=260, linewidths=2)
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels([f"{v} ({len(per_variant[v])} cycles)" for v in names], fontsize=8)
        ax.set_ylim(-0.7, len(names) - 0.3)
        ax.set_xlim(allv.min() / 2, allv.max() * 2)
        ax.grid(True, axis="x", which="both", alpha=0.3)
    else:
        fig, ax = plt.subplots(figsize=(7.5, 3.4))
        # Edges padded beyond the data: a pause equal to the smallest one must not fall off the
        # first bin through rounding of the log-spaced edges.
        bins = np.logspace(np.log10(allv.min() / 1.25), np.log10(allv.max() * 1.25), 30)
        for v in names:
            ax.hist(per_variant[v], bins=list(bins), alpha=0.6, label=f"{v} ({len(per_variant[v])} cycles)")
        ax.set_ylabel("cycles")
        ax.legend(fontsize=8)
    ax.set_xscale("log")
    _plain_log(ax.xaxis)
    ax.set_xlabel("stop-the-world pause per GC cycle, µs (GODEBUG=gctrace=1)")
    ax.set_title("GC pause distribution during measurement (all rates)")
    return _uri(fig)


def rss(groups: dict[tuple[str, str], VariantRate]) -> str | None:
    """Peak RSS per variant (max over cells)."""
    vals: dict[str, float] = {}
    for (v, _), vr in groups.items():
        for c in vr.cells:
            b = (c.get("server") or {}).get("rss_hwm_bytes")
            if b:
                vals[v] = max(vals.get(v, 0.0), b / 2**20)
    if not vals:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 2.8))
    names = sorted(vals)
    ax.barh(names, [vals[n] for n in names], color="slategray")
    ax.set_xlabel("peak resident set (VmHWM), MiB")
    ax.set_title("memory")
    ax.grid(True, axis="x", alpha=0.3)
    return _uri(fig)
