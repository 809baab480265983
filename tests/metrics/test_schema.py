"""Point builders, the gctrace parser and the interval-log reader (no servers)."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hdrh.histogram import HdrHistogram

from labctl.metrics import (
    HostSample,
    Interval,
    cell_summary_point,
    gc_pause_points,
    host_sample_points,
    latency_interval_points,
    parse_gctrace,
    read_hlog,
    to_lines,
)
from labctl.metrics.schema import TAG_KEYS, percentiles

DATA = Path(__file__).resolve().parent / "data"
TAGS = {
    "run_id": "20261128-0531-ab12",
    "experiment": "gc-tail-latency",
    "variant": "go",
    "lang": "go",
    "rate": 5000,
    "rep": 1,
}

GO_NEW = (
    "gc 12 @3.456s 2%: 0.018+1.2+0.003 ms clock, 0.073+0.5/1.1/2.3+0.014 ms cpu, "
    "4->5->2 MB, 6 MB goal, 0 MB stacks, 0 MB globals, 4 P"
)
GO_OLD = "gc 1 @0.019s 0%: 0.011+0.26+0.003 ms clock, 0.045+0.12/0.18/0.23+0.012 ms cpu, 4->4->0 MB, 5 MB goal, 4 P"
GO_FORCED = "gc 7 @2.104s 1%: 0.020+1.1+0.004 ms clock, 0.081+0/0.95/0.66+0.018 ms cpu, 3->3->1 MB, 4 MB goal, 4 P (forced)"


def fields(line: str) -> dict[str, str]:
    """The field set of one line-protocol line as strings."""
    _, fieldset, _ = line.split(" ")
    return dict(item.split("=", 1) for item in fieldset.split(","))


def tagset(line: str) -> dict[str, str]:
    key = line.split(" ")[0]
    return dict(item.split("=", 1) for item in key.split(",")[1:])


# --------------------------------------------------------------------------- gctrace


def test_parse_gctrace_current_format() -> None:
    (ev,) = parse_gctrace(GO_NEW, process_start_ns=1_000_000_000_000_000_000)
    assert ev.cycle == 12 and ev.at_s == 3.456 and ev.cpu_pct == 2.0
    assert ev.clock_ms == (0.018, 1.2, 0.003)
    assert ev.cpu_ms == (0.073, 0.5, 1.1, 2.3, 0.014)
    assert (ev.heap_before_mb, ev.heap_after_mb, ev.heap_live_mb, ev.heap_goal_mb) == (4, 5, 2, 6)
    assert (ev.stacks_mb, ev.globals_mb, ev.procs, ev.forced) == (0, 0, 4, False)
    assert ev.stw_us == pytest.approx(21.0)
    assert ev.time_ns == 1_000_000_000_000_000_000 + 3_456_000_000 + 12


def test_parse_gctrace_old_format_and_forced() -> None:
    text = "\n".join(["some program output", GO_OLD, "scvg: inuse: 4, idle: 1", GO_FORCED, "gc garbage line"])
    old, forced = parse_gctrace(text, process_start_ns=0)
    assert old.cycle == 1 and old.heap_goal_mb == 5 and old.procs == 4
    assert old.stacks_mb is None and old.globals_mb is None and not old.forced
    assert old.stw_us == pytest.approx(14.0)
    assert forced.forced and forced.cycle == 7 and forced.cpu_ms == (0.081, 0.0, 0.95, 0.66, 0.018)


def test_parse_gctrace_tolerates_prefixes_and_variants() -> None:
    text = (
        "2026-11-28T05:31:00Z stderr: " + GO_NEW + "\n"
        "gc 3 @0.5s 1%: 0.01+0.2+0.01 ms clock, 4->4->1 MB, 5 MB goal, 1MB globals, 8 P\n"
        "gc x @bad\n"
    )
    a, b = parse_gctrace(text, 0)
    assert a.cycle == 12
    assert b.cycle == 3 and b.cpu_ms == () and b.globals_mb == 1 and b.procs == 8


def test_parse_real_go_gctrace() -> None:
    events = parse_gctrace((DATA / "gctrace-go1.26.txt").read_text(), 0)
    assert [e.cycle for e in events] == [1, 2, 3]
    assert all(e.stw_us is not None and e.stw_us > 0 for e in events)
    assert events[1].heap_after_mb == 10 and events[1].procs == 2


def test_gc_pause_points() -> None:
    events = parse_gctrace("\n".join([GO_OLD, GO_NEW, GO_FORCED]), 1_700_000_000_000_000_000)
    lines = to_lines(gc_pause_points(TAGS, events))
    assert len(lines) == 3
    assert all(line.startswith("labctl_gc,") for line in lines)
    f = fields(lines[1])
    assert float(f["stw_us"]) == 21.0 and float(f["mark_us"]) == 1200.0
    assert f["cycle"] == "12i" and f["heap_before_mb"] == "4" and f["heap_after_mb"] == "5"
    assert f["heap_goal_mb"] == "6" and f["cpu_pct"] == "2" and f["forced"] == "false"
    assert fields(lines[2])["forced"] == "true"
    assert "stacks" not in lines[0]
    assert len({line.rsplit(" ", 1)[1] for line in lines}) == 3


# --------------------------------------------------------------------------- interval logs


def test_read_hlog_real_loadgen_log_matches_its_summary() -> None:
    """The Python reader decodes the Rust writer's log: merged, it gives the summary's figures."""
    summary = json.loads((DATA / "loadgen-summary.json").read_text())
    text = (DATA / "loadgen-corrected.hlog").read_text()
    start = float(re.search(r"#\[StartTime: ([\d.]+)", text).group(1))  # type: ignore[union-attr]
    intervals = read_hlog(DATA / "loadgen-corrected.hlog")
    assert len(intervals) == 4
    assert intervals[0].start_ns == round(start * 1e6) * 1000
    for a, b in itertools.pairwise(intervals):
        assert b.start_ns == a.end_ns and a.end_ns - a.start_ns == 1_000_000_000
    merged = HdrHistogram(1, 3_600_000_000, 3)
    for iv in intervals:
        merged.add(iv.histogram)
    assert merged.get_total_count() == summary["responses"]
    got = percentiles(merged, [50, 90, 99])
    assert (got[50], got[90], got[99]) == (summary["p50_us"], summary["p90_us"], summary["p99_us"])
    assert merged.get_max_value() == summary["max_us"]


def test_read_hlog_absolute_timestamps(tmp_path: Path) -> None:
    """A log with absolute interval stamps (Java style: StartTime, no BaseTime) reads the same."""
    text = (DATA / "loadgen-corrected.hlog").read_text()
    start = float(re.search(r"#\[StartTime: ([\d.]+)", text).group(1))  # type: ignore[union-attr]
    out = []
    for line in text.splitlines():
        if line.startswith("#[BaseTime"):
            continue
        m = re.match(r"^(\d+\.\d+),(.*)$", line)
        out.append(f"{start + float(m.group(1)):.3f},{m.group(2)}" if m else line)
    path = tmp_path / "abs.hlog"
    path.write_text("\n".join(out) + "\n")
    assert [iv.start_ns for iv in read_hlog(path)] == [
        iv.start_ns for iv in read_hlog(DATA / "loadgen-corrected.hlog")
    ]


def test_read_hlog_start_time_without_base_time(tmp_path: Path) -> None:
    """Relative stamps anchored by StartTime alone (no BaseTime line) read the same."""
    text = (DATA / "loadgen-corrected.hlog").read_text()
    path = tmp_path / "nobase.hlog"
    path.write_text("\n".join(x for x in text.splitlines() if not x.startswith("#[BaseTime")) + "\n")
    assert [iv.start_ns for iv in read_hlog(path)] == [
        iv.start_ns for iv in read_hlog(DATA / "loadgen-corrected.hlog")
    ]


def test_read_hlog_without_anchor_is_refused(tmp_path: Path) -> None:
    text = (DATA / "loadgen-corrected.hlog").read_text()
    path = tmp_path / "rel.hlog"
    path.write_text("\n".join(x for x in text.splitlines() if not x.startswith("#[")) + "\n")
    with pytest.raises(ValueError, match="relative"):
        read_hlog(path)


def test_percentiles_nearest_rank() -> None:
    h = HdrHistogram(1, 1_000_000, 3)
    for v in range(1, 4001):
        h.record_value(v)
    got = percentiles(h, [50, 99.9, 100])
    assert got[50] == h.get_highest_equivalent_value(2000)
    assert got[99.9] == h.get_highest_equivalent_value(3996)
    assert got[100] == h.get_max_value()


# --------------------------------------------------------------------------- latency points


def test_latency_interval_points_fields_and_throughput() -> None:
    intervals = read_hlog(DATA / "loadgen-corrected.hlog")
    lines = to_lines(latency_interval_points(TAGS, intervals, "corrected"))
    lat = [x for x in lines if x.startswith("labctl_latency,")]
    thr = [x for x in lines if x.startswith("labctl_throughput,")]
    assert len(lat) == len(thr) == len(intervals)
    f = fields(lat[0])
    assert set(f) == {"count", "p50_us", "p90_us", "p99_us", "p999_us", "max_us"}
    assert f["count"].endswith("i")
    assert tagset(lat[0])["kind"] == "corrected" and "kind" not in tagset(thr[0])
    count = int(f["count"][:-1])
    assert float(fields(thr[0])["rps"]) == pytest.approx(count / 1.0)
    assert float(f["p50_us"]) <= float(f["p99_us"]) <= float(f["p999_us"]) <= float(f["max_us"])
    assert int(lat[0].rsplit(" ", 1)[1]) == intervals[0].start_ns
    unc = to_lines(latency_interval_points(TAGS, read_hlog(DATA / "loadgen-uncorrected.hlog"), "uncorrected"))
    assert all(x.startswith("labctl_latency,") and "kind=uncorrected" in x for x in unc)


def test_empty_interval_has_count_zero_and_no_percentiles() -> None:
    iv = Interval(1_795_000_000_000_000_000, 1_795_000_001_000_000_000, HdrHistogram(1, 1_000_000, 3))
    lat, thr = to_lines(latency_interval_points(TAGS, [iv]))
    assert fields(lat) == {"count": "0i"}
    assert fields(thr) == {"rps": "0"}


def test_rebuilding_gives_identical_lines() -> None:
    """Same data, same lines: re-shipping overwrites instead of duplicating."""
    a = to_lines(latency_interval_points(TAGS, read_hlog(DATA / "loadgen-corrected.hlog")))
    b = to_lines(latency_interval_points(dict(TAGS), read_hlog(DATA / "loadgen-corrected.hlog")))
    assert a == b


# --------------------------------------------------------------------------- cells


def test_cell_summary_point_from_real_outputs() -> None:
    summary = json.loads((DATA / "loadgen-summary.json").read_text())
    server = json.loads((DATA / "riskd-go-exit.json").read_text())
    (line,) = to_lines([cell_summary_point(TAGS, summary, server, 1_795_000_000_000_000_000)])
    f = fields(line)
    for key in (
        "requested_rps",
        "achieved_rps",
        "p50_us",
        "p99_us",
        "p999_us",
        "max_us",
        "uncorrected_p99_us",
    ):
        assert float(f[key]) == summary[key]
    assert f["errors"] == "0i" and f["timeouts"] == "0i" and f["saturated"] == "false"
    assert f["rss_hwm_bytes"] == f"{server['rss_hwm_bytes']}i" and f["gc_cycles"] == f"{server['gc_cycles']}i"
    assert float(f["gc_pause_p99_us"]) == server["gc_pause_p99_us"]
    assert "lang" not in f and "go_version" not in f and "decisions" not in f and "target" not in f
    assert line.endswith(" 1795000000000000000")


def test_cell_absent_metrics_are_absent_not_zero() -> None:
    summary = {
        "requested_rps": 1000,
        "achieved_rps": 985.0,
        "errors": 2,
        "p99_us": None,
        "max_us": float("nan"),
    }
    server = {"rss_hwm_bytes": 1000, "gc_pause_p99_us": None, "gc_cycles": "n/a"}
    f = fields(to_lines([cell_summary_point(TAGS, summary, server, 1)])[0])
    assert "p99_us" not in f and "max_us" not in f and "gc_pause_p99_us" not in f and "gc_cycles" not in f
    assert f["saturated"] == "true"  # 985 < 1000 x 0.99
    assert f["achieved_rps"] == "985" and f["requested_rps"] == "1000"
    f2 = fields(to_lines([cell_summary_point(TAGS, {"errors": 0}, None, 1)])[0])
    assert "saturated" not in f2  # unknown rates: no verdict
    f3 = fields(to_lines([cell_summary_point(TAGS, {**summary, "saturated": False}, None, 1)])[0])
    assert f3["saturated"] == "false"  # the runner's verdict wins over the 1 % rule


def test_field_types_are_stable() -> None:
    """A whole-number float and an int produce the same field type (no type conflicts)."""
    a = fields(
        to_lines([cell_summary_point(TAGS, {"p99_us": 100, "errors": 1.0}, {"gc_pause_max_us": 7}, 1)])[0]
    )
    b = fields(
        to_lines([cell_summary_point(TAGS, {"p99_us": 100.5, "errors": 1}, {"gc_pause_max_us": 7.5}, 1)])[0]
    )
    assert not a["p99_us"].endswith("i") and not b["p99_us"].endswith("i")
    assert a["errors"] == b["errors"] == "1i"
    assert not a["gc_pause_max_us"].endswith("i")


# --------------------------------------------------------------------------- host + tags


def test_host_sample_points_only_present_fields() -> None:
    samples: list[HostSample | dict[str, Any]] = [
        HostSample(time_ns=10, entropy_avail=256, load1=0.25),
        {"time_ns": 20, "ctxt_per_s": 1500.5, "mem_available_bytes": 10**9, "procs_running": 2},
        {"time_ns": 30},
    ]
    lines = to_lines(host_sample_points({"run_id": "r1", "host": "lab-01"}, samples))
    assert len(lines) == 2
    assert fields(lines[0]) == {"entropy_avail": "256i", "load1": "0.25"}
    assert fields(lines[1]) == {
        "ctxt_per_s": "1500.5",
        "mem_available_bytes": "1000000000i",
        "procs_running": "2i",
    }


@pytest.mark.parametrize(
    "bad",
    [{"request_id": "123"}, {"variant": "go fast"}, {"run_id": "x" * 200}, {"host": "a,b"}, {"rep": True}],
)
def test_tags_are_identifiers_only(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        host_sample_points({**TAGS, **bad}, [HostSample(time_ns=1, load1=1.0)])


def test_tag_values_normalised() -> None:
    (line,) = to_lines(
        host_sample_points({"run_id": "r", "rate": 5000.0, "rep": 2}, [HostSample(1, load1=1.0)])
    )
    assert tagset(line) == {"rate": "5000", "rep": "2", "run_id": "r"}
    assert set(TAG_KEYS) >= {"run_id", "experiment", "variant", "lang", "host", "rate", "rep", "kind"}
