"""Metrics: the InfluxDB schema, the durable spool, the sinks and shipping.

Typical use by the experiment runner::

    from labctl.metrics import BackgroundShipper, read_hlog, latency_interval_points, to_lines

    with BackgroundShipper(run_dir, settings) as shipper:      # ships every ~2 s
        shipper.append(to_lines(latency_interval_points(tags, read_hlog(log))))
        ...
    result = shipper.close()   # or ship(run_dir, settings) afterwards
    # result.shipped, result.pending, result.error → points_shipped / points_pending

See docs/metrics.md for the schema and the no-loss / no-duplicate guarantees.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from labctl.metrics.ship import BackgroundShipper, ShipResult, ship
from labctl.metrics.sinks import Sink, SinkError, V1Sink, V2Sink, sink_from_settings
from labctl.metrics.spool import Spool, SpoolCounts, SpoolError

# The schema is imported lazily: it pulls in influxdb-client (slow to import), which
# the spool, shipping and a v1 sink do not need. (``ship`` above is imported eagerly
# on purpose: the function must win over the submodule of the same name.)
_EXPORTS = {
    "GcEvent": "schema",
    "HostSample": "schema",
    "Interval": "schema",
    "cell_summary_point": "schema",
    "gc_pause_points": "schema",
    "host_sample_points": "schema",
    "latency_interval_points": "schema",
    "parse_gctrace": "schema",
    "read_hlog": "schema",
    "to_lines": "schema",
}

if TYPE_CHECKING:
    from labctl.metrics.schema import (
        GcEvent,
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


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "BackgroundShipper",
    "GcEvent",
    "HostSample",
    "Interval",
    "ShipResult",
    "Sink",
    "SinkError",
    "Spool",
    "SpoolCounts",
    "SpoolError",
    "V1Sink",
    "V2Sink",
    "cell_summary_point",
    "gc_pause_points",
    "host_sample_points",
    "latency_interval_points",
    "parse_gctrace",
    "read_hlog",
    "ship",
    "sink_from_settings",
    "to_lines",
]
