"""The InfluxDB schema: point builders for every measurement labctl writes.

Every builder returns influxdb-client :class:`~influxdb_client.Point` objects with an
explicit nanosecond timestamp derived from the data itself (an interval's start, a GC
cycle's offset from the process start, a sample's time), never from "now". Building
the same data twice therefore yields byte-identical line protocol, and writing it
again overwrites the same series + timestamp instead of adding a duplicate.

Measurements (see docs/metrics.md for units and meaning):

``labctl_latency``     one point per one-second histogram interval, tag ``kind``
``labctl_throughput``  one point per interval: ``rps``
``labctl_cell``        one point per cell (variant x rate x repetition): summary figures
``labctl_gc``          one point per Go GC cycle (from ``GODEBUG=gctrace=1``)
``labctl_host``        host samples (entropy, load, context switches, memory)

Tags are the low-cardinality identifiers in :data:`TAG_KEYS` only; everything
measured is a field. A figure that could not be measured is *absent*, never 0.
Field types are fixed per field name (:data:`INT_FIELDS` are integers, everything else
is a float, ``saturated``/``forced`` are booleans) so that a value that happens to be
whole in one run and fractional in the next never causes a field-type conflict.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from influxdb_client import Point, WritePrecision

__all__ = [
    "CELL_SERVER_FIELDS",
    "CELL_SUMMARY_FIELDS",
    "HOST_FIELDS",
    "INT_FIELDS",
    "MEASUREMENTS",
    "SATURATION_TOLERANCE",
    "TAG_KEYS",
    "GcEvent",
    "HostSample",
    "Interval",
    "cell_summary_point",
    "gc_pause_points",
    "host_sample_points",
    "latency_interval_points",
    "parse_gctrace",
    "percentiles",
    "read_hlog",
    "to_lines",
]

MEASUREMENTS = ("labctl_latency", "labctl_throughput", "labctl_cell", "labctl_gc", "labctl_host")

#: The only tag keys labctl writes. Adding one is a schema change: extend this tuple and
#: docs/metrics.md together. Never add a per-sample or free-text tag.
TAG_KEYS: tuple[str, ...] = ("run_id", "experiment", "variant", "lang", "host", "rate", "rep", "kind")

#: Tag values are identifiers: no spaces, no free text, bounded length.
_TAG_VALUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:+@/=-]{0,127}$")
_FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")

#: Fields written as integers. Every other numeric field is a float.
INT_FIELDS = frozenset(
    {
        "count",
        "errors",
        "timeouts",
        "requests_sent",
        "responses",
        "requests_unsent",
        "rss_hwm_bytes",
        "gc_cycles",
        "cycle",
        "procs",
        "entropy_avail",
        "mem_available_bytes",
        "procs_running",
    }
)
_BOOL_FIELDS = frozenset({"saturated", "forced"})

#: Loadgen summary keys copied into ``labctl_cell`` (when present and numeric).
CELL_SUMMARY_FIELDS: tuple[str, ...] = (
    "requested_rps",
    "achieved_rps",
    "errors",
    "timeouts",
    "requests_sent",
    "responses",
    "requests_unsent",
    "p50_us",
    "p90_us",
    "p99_us",
    "p999_us",
    "max_us",
    "mean_us",
    "uncorrected_p50_us",
    "uncorrected_p90_us",
    "uncorrected_p99_us",
    "uncorrected_p999_us",
    "uncorrected_max_us",
    "uncorrected_mean_us",
    "send_lag_p50_us",
    "send_lag_p99_us",
    "send_lag_max_us",
)

#: Server self-metrics with a documented meaning; other numeric keys of the server's
#: exit line are kept too (as floats), so a new runtime metric needs no code change.
CELL_SERVER_FIELDS: tuple[str, ...] = (
    "rss_hwm_bytes",
    "gc_cycles",
    "gc_pause_total_us",
    "gc_pause_p50_us",
    "gc_pause_p99_us",
    "gc_pause_max_us",
    "heap_live_bytes",
    "heap_goal_bytes",
    "sched_latency_p99_us",
    "memory_total_bytes",
)

HOST_FIELDS: tuple[str, ...] = (
    "entropy_avail",
    "load1",
    "ctxt_per_s",
    "mem_available_bytes",
    "procs_running",
)

#: A cell whose achieved rate falls short of the requested one by more than this
#: fraction is saturated (methodology.md, "Report what was achieved").
SATURATION_TOLERANCE = 0.01

_PERCENTILES: tuple[tuple[str, float], ...] = (
    ("p50_us", 50.0),
    ("p90_us", 90.0),
    ("p99_us", 99.0),
    ("p999_us", 99.9),
)


# --------------------------------------------------------------------------- helpers


def _tags(tags: Mapping[str, Any], **extra: Any) -> dict[str, str]:
    """Validate and normalise tags: known keys only, identifier-like values."""
    out: dict[str, str] = {}
    for key, value in {**tags, **extra}.items():
        if value is None:
            continue
        if key not in TAG_KEYS:
            raise ValueError(f"tag {key!r} is not part of the schema (allowed: {', '.join(TAG_KEYS)})")
        if isinstance(value, bool):
            raise ValueError(f"tag {key!r}: booleans are not identifiers")
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        text = str(value)
        if not _TAG_VALUE.match(text):
            raise ValueError(f"tag {key}={text!r} is not a low-cardinality identifier")
        out[key] = text
    return out


def _number(value: Any) -> float | int | None:
    """A finite number, or None for anything that is not one (absent, never 0)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return None


def _typed(name: str, value: Any) -> float | int | bool | None:
    """Coerce a measured value to the field's fixed type (None when absent)."""
    if name in _BOOL_FIELDS:
        return value if isinstance(value, bool) else None
    num = _number(value)
    if num is None:
        return None
    if name in INT_FIELDS:
        return round(num)
    return float(num)


def _point(measurement: str, tags: Mapping[str, str], time_ns: int) -> Point:
    p = Point(measurement)
    for key, value in tags.items():
        p.tag(key, value)
    return p.time(int(time_ns), WritePrecision.NS)


def _set(p: Point, name: str, value: Any) -> bool:
    typed = _typed(name, value)
    if typed is None:
        return False
    p.field(name, typed)
    return True


def to_lines(points: Iterable[Point]) -> list[str]:
    """Serialise points to line protocol (nanosecond precision), skipping empty ones.

    A point without any field serialises to an empty string in influxdb-client; such
    points carry nothing and are dropped here rather than written as blank lines.
    """
    lines = []
    for p in points:
        line = p.to_line_protocol(precision=WritePrecision.NS)
        if line:
            lines.append(line)
    return lines


# --------------------------------------------------------------------------- latency


@dataclass(frozen=True)
class Interval:
    """One interval of an HdrHistogram interval log.

    ``start_ns``/``end_ns`` are absolute Unix times in nanoseconds; ``histogram`` is an
    ``hdrh.histogram.HdrHistogram`` holding that interval's values (microseconds for
    labctl's load generator).
    """

    start_ns: int
    end_ns: int
    histogram: Any


_MIN_EPOCH_S = 946684800.0  # 2000-01-01: anything earlier is a relative timestamp


def read_hlog(path: str | Path) -> list[Interval]:
    """Read an HdrHistogram interval log (V2-compressed, as written by the Rust crate).

    Uses the ``hdrhistogram`` package's ``HistogramLogReader``. Interval timestamps
    are made absolute with the log's ``#[BaseTime: …]`` (relative timestamps) or used
    as they are when they are already absolute (``#[StartTime: …]`` only, the
    reader's one-year heuristic). Times are rounded to the microsecond so the
    result is the same on every read. A log whose times cannot be made absolute
    (no StartTime/BaseTime and relative stamps) raises ``ValueError`` rather than
    producing points in 1970.
    """
    from hdrh.histogram import HdrHistogram
    from hdrh.log import HistogramLogReader

    reader = HistogramLogReader(str(path), HdrHistogram(1, 3_600_000_000, 3))
    out: list[Interval] = []
    try:
        while True:
            hist = reader.get_next_interval_histogram()
            if hist is None:
                break
            start_ms = float(hist.get_start_time_stamp())
            end_ms = float(hist.get_end_time_stamp())
            if start_ms / 1000.0 < _MIN_EPOCH_S:
                raise ValueError(
                    f"{path}: interval timestamps are relative and the log has no "
                    "#[StartTime]/#[BaseTime] to anchor them"
                )
            out.append(Interval(round(start_ms * 1000) * 1000, round(end_ms * 1000) * 1000, hist))
    finally:
        reader.input_file.close()
    return out


def percentiles(hist: Any, pcts: Iterable[float]) -> dict[float, int]:
    """Nearest-rank percentiles of an ``hdrh`` histogram, in one pass.

    The rank of percentile P over N values is ceil(P/100 x N) computed exactly (with
    fractions), so P99.9 of 4000 values is the 3996th value. hdrh's own
    ``get_value_at_percentile`` rounds the rank to nearest instead, and the Rust
    crate's ``value_at_percentile(99.9)`` computes ceil(0.9990000000000001 x N) in
    floating point (the 3997th of 4000): both can differ from this by one rank. The
    value is the highest value equivalent to the bucket (HdrHistogram convention).
    """
    import numpy as np

    wanted = sorted(set(pcts))
    total = int(hist.get_total_count())
    if total <= 0:
        return {}
    n = min(int(hist.counts_len), int(hist.encoder.payload.counts_len))
    counts = np.ctypeslib.as_array(hist.counts)[:n].astype(np.int64)
    cumulative = np.cumsum(counts)
    out: dict[float, int] = {}
    for pct in wanted:
        frac = min(max(Fraction(str(pct)), Fraction(0)), Fraction(100))
        rank = max(1, math.ceil(frac * total / 100))
        idx = int(np.searchsorted(cumulative, rank, side="left"))
        idx = min(idx, n - 1)
        out[pct] = int(hist.get_highest_equivalent_value(hist.get_value_from_index(idx)))
    return out


def latency_interval_points(
    tags: Mapping[str, Any],
    intervals: Iterable[Interval],
    kind: str = "corrected",
    *,
    throughput: bool | None = None,
) -> list[Point]:
    """``labctl_latency`` (+ ``labctl_throughput``) points, one per interval.

    ``kind`` is ``corrected`` (latency from the intended send time) or ``uncorrected``.
    Fields: ``count`` (int) and ``p50_us``, ``p90_us``, ``p99_us``, ``p999_us``,
    ``max_us`` (floats, microseconds) — the percentiles are omitted for an interval
    that recorded nothing. ``labctl_throughput`` gets ``rps`` = count / interval
    length in seconds; it is written for the corrected log only unless
    ``throughput`` says otherwise (both logs count the same responses).
    Timestamp: the interval's start.
    """
    if kind not in ("corrected", "uncorrected"):
        raise ValueError(f"kind must be corrected or uncorrected, not {kind!r}")
    base = _tags(tags)
    lat_tags = _tags(base, kind=kind)
    want_rps = kind == "corrected" if throughput is None else throughput
    points: list[Point] = []
    for iv in intervals:
        hist = iv.histogram
        count = int(hist.get_total_count())
        p = _point("labctl_latency", lat_tags, iv.start_ns)
        _set(p, "count", count)
        if count > 0:
            values = percentiles(hist, [pct for _, pct in _PERCENTILES])
            for name, pct in _PERCENTILES:
                _set(p, name, values[pct])
            _set(p, "max_us", hist.get_max_value())
        points.append(p)
        seconds = (iv.end_ns - iv.start_ns) / 1e9
        if want_rps and seconds > 0:
            t = _point("labctl_throughput", base, iv.start_ns)
            _set(t, "rps", count / seconds)
            points.append(t)
    return points


# --------------------------------------------------------------------------- cells


def cell_summary_point(
    tags: Mapping[str, Any],
    summary: Mapping[str, Any],
    server_metrics: Mapping[str, Any] | None,
    time_ns: int,
    *,
    saturated: bool | None = None,
) -> Point:
    """The ``labctl_cell`` point of one cell (variant x rate x repetition).

    ``summary`` is the load generator's summary JSON: the keys of
    :data:`CELL_SUMMARY_FIELDS` are copied when present. ``server_metrics`` is the
    server's JSON exit line: every numeric key is copied (``rss_hwm_bytes``,
    ``gc_cycles``, ``gc_pause_total_us``, ``gc_pause_p99_us``, ``gc_pause_max_us``, …);
    non-numeric values are ignored. Absent or null figures stay absent — never 0.
    ``saturated`` (argument, else a boolean ``summary["saturated"]``) defaults to
    achieved < requested x (1 - 1 %) and is absent when either rate is unknown. ``time_ns`` is the cell's measured end (or start) as chosen
    by the runner; keep it stable so that re-shipping overwrites.
    """
    p = _point("labctl_cell", _tags(tags), time_ns)
    for name in CELL_SUMMARY_FIELDS:
        _set(p, name, summary.get(name))
    for name, value in (server_metrics or {}).items():
        if name in CELL_SUMMARY_FIELDS or name in _BOOL_FIELDS or not _FIELD_NAME.match(str(name)):
            continue
        _set(p, str(name), value)
    if saturated is None and isinstance(summary.get("saturated"), bool):
        saturated = summary["saturated"]  # the runner's own verdict wins
    if saturated is None:
        req, ach = _number(summary.get("requested_rps")), _number(summary.get("achieved_rps"))
        if req is not None and ach is not None and req > 0:
            saturated = ach < req * (1.0 - SATURATION_TOLERANCE)
    if saturated is not None:
        p.field("saturated", bool(saturated))
    return p


# --------------------------------------------------------------------------- Go GC


@dataclass(frozen=True)
class GcEvent:
    """One parsed ``GODEBUG=gctrace=1`` line.

    ``clock_ms`` are the wall-clock phases (sweep termination, concurrent mark and
    scan, mark termination); ``stw_us`` is the stop-the-world part: sweep termination
    + mark termination. Heap sizes are in MB as Go prints them; ``heap_live_mb`` is
    the marked live heap (third number of ``#->#->#``). Fields Go did not print (older
    versions lack stacks/globals) are None.
    """

    cycle: int
    at_s: float
    time_ns: int
    cpu_pct: float
    clock_ms: tuple[float, ...]
    cpu_ms: tuple[float, ...]
    heap_before_mb: float | None
    heap_after_mb: float | None
    heap_live_mb: float | None
    heap_goal_mb: float | None
    stacks_mb: float | None
    globals_mb: float | None
    procs: int | None
    forced: bool

    @property
    def stw_us(self) -> float | None:
        """Stop-the-world wall time in microseconds (sweep + mark termination)."""
        if len(self.clock_ms) < 3:
            return None
        return round((self.clock_ms[0] + self.clock_ms[-1]) * 1000.0, 3)


_GC_HEAD = re.compile(r"\bgc (\d+) @(\d+(?:\.\d+)?)s (\d+(?:\.\d+)?)%: ([0-9.+]+) ms clock")
_GC_CPU = re.compile(r", ([0-9.+/]+) ms cpu")
_GC_HEAP = re.compile(r"(\d+(?:\.\d+)?)->(\d+(?:\.\d+)?)->(\d+(?:\.\d+)?) MB")
_GC_GOAL = re.compile(r"(\d+(?:\.\d+)?) MB goal")
_GC_STACKS = re.compile(r"(\d+(?:\.\d+)?) ?MB stacks")
_GC_GLOBALS = re.compile(r"(\d+(?:\.\d+)?) ?MB globals")
_GC_PROCS = re.compile(r"(\d+) P\b")


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in re.split(r"[+/]", text) if x)


def _opt(rx: re.Pattern[str], text: str) -> float | None:
    m = rx.search(text)
    return float(m.group(1)) if m else None


def parse_gctrace(text: str, process_start_ns: int) -> list[GcEvent]:
    """Parse every ``gc N @Ts P%: …`` line in ``text`` (other lines are ignored).

    Accepts the current format (``…, # MB goal, # MB stacks, # MB globals, # P``),
    the older one ending at ``# MB goal, # P``, and a trailing ``(forced)``. Lines
    may carry a prefix (a log collector's timestamp). A line whose head does not
    parse is skipped; an optional part that is missing is None.

    ``time_ns`` = ``process_start_ns`` + the ``@`` offset (millisecond resolution) +
    the cycle number modulo 10^6 in nanoseconds, so two cycles printed in the same
    millisecond never share a timestamp (the offset is below one millisecond and
    deterministic).
    """
    events: list[GcEvent] = []
    for line in text.splitlines():
        m = _GC_HEAD.search(line)
        if not m:
            continue
        try:
            cycle = int(m.group(1))
            at_s = float(m.group(2))
            clock = _floats(m.group(4))
        except ValueError:
            continue
        rest = line[m.end() :]
        cpu_m = _GC_CPU.search(rest)
        heap_m = _GC_HEAP.search(rest)
        procs_m = _GC_PROCS.search(rest)
        try:
            cpu = _floats(cpu_m.group(1)) if cpu_m else ()
        except ValueError:
            cpu = ()
        events.append(
            GcEvent(
                cycle=cycle,
                at_s=at_s,
                time_ns=int(process_start_ns) + round(at_s * 1000) * 1_000_000 + cycle % 1_000_000,
                cpu_pct=float(m.group(3)),
                clock_ms=clock,
                cpu_ms=cpu,
                heap_before_mb=float(heap_m.group(1)) if heap_m else None,
                heap_after_mb=float(heap_m.group(2)) if heap_m else None,
                heap_live_mb=float(heap_m.group(3)) if heap_m else None,
                heap_goal_mb=_opt(_GC_GOAL, rest),
                stacks_mb=_opt(_GC_STACKS, rest),
                globals_mb=_opt(_GC_GLOBALS, rest),
                procs=int(procs_m.group(1)) if procs_m else None,
                forced="(forced)" in rest,
            )
        )
    return events


def gc_pause_points(tags: Mapping[str, Any], events: Iterable[GcEvent]) -> list[Point]:
    """``labctl_gc`` points, one per GC cycle.

    Fields: ``stw_us`` (sweep termination + mark termination wall clock, µs),
    ``mark_us`` (concurrent mark wall clock, µs), ``heap_before_mb``,
    ``heap_after_mb``, ``heap_live_mb``, ``heap_goal_mb``, ``cpu_pct`` (share of
    CPU spent in GC since the process started, as Go prints it), ``cycle`` (int),
    ``procs`` (int), ``forced`` (bool). Timestamp: :attr:`GcEvent.time_ns`.
    """
    base = _tags(tags)
    points: list[Point] = []
    for ev in events:
        p = _point("labctl_gc", base, ev.time_ns)
        _set(p, "stw_us", ev.stw_us)
        if len(ev.clock_ms) >= 3:
            _set(p, "mark_us", round(ev.clock_ms[1] * 1000.0, 3))
        _set(p, "heap_before_mb", ev.heap_before_mb)
        _set(p, "heap_after_mb", ev.heap_after_mb)
        _set(p, "heap_live_mb", ev.heap_live_mb)
        _set(p, "heap_goal_mb", ev.heap_goal_mb)
        _set(p, "cpu_pct", ev.cpu_pct)
        _set(p, "cycle", ev.cycle)
        _set(p, "procs", ev.procs)
        p.field("forced", ev.forced)
        points.append(p)
    return points


# --------------------------------------------------------------------------- host


@dataclass(frozen=True)
class HostSample:
    """One sample of host context. Unmeasured figures are None (and not written)."""

    time_ns: int
    entropy_avail: int | None = None
    load1: float | None = None
    ctxt_per_s: float | None = None
    mem_available_bytes: int | None = None
    procs_running: int | None = None


def host_sample_points(
    tags: Mapping[str, Any], samples: Iterable[HostSample | Mapping[str, Any]]
) -> list[Point]:
    """``labctl_host`` points: ``entropy_avail``, ``load1``, ``ctxt_per_s``,
    ``mem_available_bytes``, ``procs_running`` — only those present.

    A sample is a :class:`HostSample` or a mapping with ``time_ns`` and any of those
    keys. A sample without any of them produces no point.
    """
    base = _tags(tags)
    points: list[Point] = []
    for sample in samples:
        data: Mapping[str, Any] = sample if isinstance(sample, Mapping) else sample.__dict__
        if "time_ns" not in data:
            raise ValueError("host sample without time_ns")
        p = _point("labctl_host", base, int(data["time_ns"]))
        if sum(_set(p, name, data.get(name)) for name in HOST_FIELDS):
            points.append(p)
    return points
