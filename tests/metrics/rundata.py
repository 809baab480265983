"""Realistic line protocol for tests and benchmarks, built from checked-in real data.

``data/`` holds outputs of the real binaries: a loadgen run against the stall server
(interval logs, corrected and uncorrected, and its summary), riskd-go's exit line and
its ``GODEBUG=gctrace=1`` output.
"""

from __future__ import annotations

import json
from pathlib import Path

from labctl.metrics import (
    cell_summary_point,
    gc_pause_points,
    host_sample_points,
    latency_interval_points,
    parse_gctrace,
    read_hlog,
    to_lines,
)

DATA = Path(__file__).resolve().parent / "data"


def run_lines(run_id: str, variants: tuple[str, ...] = ("go", "rust", "cpp"), reps: int = 1) -> list[str]:
    """Line protocol for a small but complete run, built from the checked-in real data.

    Per variant and repetition: corrected + uncorrected latency intervals and
    throughput from a real loadgen log, one cell summary (Go's with the real riskd-go
    exit line), GC cycles from a real gctrace (Go only) and host samples. Each cell
    is shifted in time as the runner's interleaving would place it.
    """
    corrected = read_hlog(DATA / "loadgen-corrected.hlog")
    uncorrected = read_hlog(DATA / "loadgen-uncorrected.hlog")
    summary = json.loads((DATA / "loadgen-summary.json").read_text())
    go_exit = json.loads((DATA / "riskd-go-exit.json").read_text())
    gctrace = (DATA / "gctrace-go1.26.txt").read_text()
    span = corrected[-1].end_ns - corrected[0].start_ns + 1_000_000_000
    lines: list[str] = []
    cell = 0
    for rep in range(1, reps + 1):
        for variant in variants:
            shift = cell * span
            cell += 1
            lang = {"go": "go", "rust": "rust", "cpp": "cpp"}.get(variant, "go")
            tags = {
                "run_id": run_id,
                "experiment": "gc-tail-latency",
                "variant": variant,
                "lang": lang,
                "host": "localhost",
                "rate": 1000,
                "rep": rep,
            }
            moved = [type(iv)(iv.start_ns + shift, iv.end_ns + shift, iv.histogram) for iv in corrected]
            moved_u = [type(iv)(iv.start_ns + shift, iv.end_ns + shift, iv.histogram) for iv in uncorrected]
            points = latency_interval_points(tags, moved, "corrected")
            points += latency_interval_points(tags, moved_u, "uncorrected")
            server = go_exit if lang == "go" else {"rss_hwm_bytes": 12_345_678 + cell}
            points.append(cell_summary_point(tags, summary, server, moved[-1].end_ns))
            if lang == "go":
                points += gc_pause_points(tags, parse_gctrace(gctrace, moved[0].start_ns - 1_000_000_000))
            host_tags = {"run_id": run_id, "experiment": "gc-tail-latency", "host": "localhost"}
            samples = [
                {
                    "time_ns": iv.start_ns,
                    "entropy_avail": 256,
                    "load1": 0.5 + i / 10,
                    "ctxt_per_s": 12000.0,
                    "mem_available_bytes": 20_000_000_000,
                    "procs_running": 3,
                }
                for i, iv in enumerate(moved)
            ]
            points += host_sample_points(host_tags, samples)
            lines += to_lines(points)
    return lines


def synthetic_lines(run_id: str, n: int, start_ns: int = 1_795_000_000_000_000_000) -> list[str]:
    """``n`` distinct labctl_host points one millisecond apart (fast bulk data)."""
    return [
        f"labctl_host,host=h{i % 4},run_id={run_id} entropy_avail={256 + i % 7}i,load1={i % 10 / 10} "
        f"{start_ns + i * 1_000_000}"
        for i in range(n)
    ]
