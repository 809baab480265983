"""Shipping: send a run's pending spool batches to InfluxDB, in order, acking each.

:func:`ship` is what ``labctl ship`` and the end of a run call; a
:class:`BackgroundShipper` ships while a run is going, without ever blocking it.
Delivery is at-least-once from the spool's point of view (a batch whose ack was lost
to a crash is sent again) and exactly-once in effect on the server, because every
point has an explicit timestamp derived from its data: sending it again overwrites
the same series + timestamp.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from labctl.metrics.sinks import Sink, SinkError, sink_from_settings
from labctl.metrics.spool import Spool

if TYPE_CHECKING:
    from labctl.config import Settings

__all__ = ["DEFAULT_BATCH", "BackgroundShipper", "ShipResult", "ship"]

log = logging.getLogger("labctl.metrics")

DEFAULT_BATCH = 5000
NOT_CONFIGURED = "LABCTL_INFLUX_URL is not set: points stay in the run's spool"


@dataclass(frozen=True)
class ShipResult:
    """What a shipping attempt achieved.

    ``shipped``: points acknowledged by the server during this attempt. ``pending``:
    points still in the spool afterwards. ``error``: why shipping stopped early (None
    when it did not), never containing a secret. ``target``: the server, without
    credentials (None when no InfluxDB is configured).
    """

    shipped: int
    pending: int
    error: str | None = None
    target: str | None = None

    @property
    def ok(self) -> bool:
        """True when nothing is left pending and nothing failed."""
        return self.error is None and self.pending == 0

    def to_json(self) -> dict[str, object]:
        """The keys scripts rely on (``points_shipped``, ``points_pending``) and more."""
        return {
            "points_shipped": self.shipped,
            "points_pending": self.pending,
            "ship_error": self.error,
            "influx": self.target,
        }


def _ship_spool(
    spool: Spool, sink: Sink, batch: int, should_stop: Callable[[], bool] | None = None
) -> tuple[int, str | None]:
    """Send pending batches in order, acking each; stop at the first failure."""
    shipped = 0
    for lines, end in spool.pending_batches(batch):
        if should_stop is not None and should_stop():
            return shipped, "stopped before the spool was drained (time limit)"
        try:
            sink.write(lines)
        except SinkError as exc:
            return shipped, exc.message
        spool.ack(end)
        shipped += len(lines)
    return shipped, None


def ship(
    run_dir: str | Path,
    settings: Settings | None,
    batch: int = DEFAULT_BATCH,
    *,
    sink: Sink | None = None,
    timeout: float | None = None,
) -> ShipResult:
    """Send a run's pending points to the configured InfluxDB.

    Batches of at most ``batch`` points go out in spool order; each is acked in the
    spool as soon as the server acknowledged it. The first failure stops shipping and
    leaves the rest pending (``error`` says why; the caller should warn). With no
    ``influx_url`` nothing is sent and ``error`` says so when points are pending.
    ``sink`` overrides the settings (tests, benchmarks); ``timeout`` bounds the time
    spent (checked between batches). Shipping again after success sends nothing.
    """
    spool = Spool(run_dir)
    own = sink is None
    if sink is None:
        sink = sink_from_settings(settings) if settings is not None else None
    if sink is None:
        pending = spool.pending_count()
        return ShipResult(0, pending, NOT_CONFIGURED if pending else None, None)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        shipped, error = _ship_spool(
            spool, sink, batch, None if deadline is None else (lambda: time.monotonic() > deadline)
        )
    finally:
        if own:
            sink.close()
    return ShipResult(shipped, spool.pending_count(), error, sink.name)


class BackgroundShipper:
    """Ships a run's spool every ``interval`` seconds from a daemon thread.

    ``append`` writes to the spool synchronously (durable when it returns) and never
    waits for the network. When the server is down the thread backs off (doubling up
    to ``max_backoff``) and warns once per outage; the points wait in the spool.
    :meth:`close` makes one last attempt bounded by ``final_timeout`` and returns the
    final :class:`ShipResult`. Use as a context manager or call start()/close().
    """

    def __init__(
        self,
        run_dir: str | Path,
        settings: Settings | None = None,
        *,
        sink: Sink | None = None,
        interval: float = 2.0,
        batch: int = DEFAULT_BATCH,
        max_backoff: float = 30.0,
    ) -> None:
        self.spool = Spool(run_dir)
        self._own_sink = sink is None
        self._sink = (
            sink if sink is not None else (sink_from_settings(settings) if settings is not None else None)
        )
        self.interval = interval
        self.batch = batch
        self.max_backoff = max(max_backoff, interval)
        self._stop = threading.Event()
        self._deadline: float | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.shipped = 0
        self.last_error: str | None = None
        self.attempts = 0
        self._result: ShipResult | None = None

    @property
    def target(self) -> str | None:
        """The server (without credentials), or None when none is configured."""
        return self._sink.name if self._sink is not None else None

    def start(self) -> BackgroundShipper:
        """Start the shipping thread (a no-op without a configured server)."""
        if self._sink is not None and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="labctl-shipper", daemon=True)
            self._thread.start()
        return self

    def append(self, lines: list[str]) -> int:
        """Append points to the spool durably; returns at once (no network)."""
        return self.spool.append(lines)

    def _past_deadline(self) -> bool:
        return self._deadline is not None and time.monotonic() > self._deadline

    def _attempt(self) -> bool:
        assert self._sink is not None
        self.attempts += 1
        try:
            shipped, error = _ship_spool(self.spool, self._sink, self.batch, self._past_deadline)
        except Exception as exc:  # never let the thread die: the spool keeps the points
            shipped, error = 0, f"shipping failed: {type(exc).__name__}: {getattr(exc, 'message', exc)}"
        with self._lock:
            self.shipped += shipped
            was_ok = self.last_error is None
            self.last_error = error
        if error and was_ok:
            log.warning("metrics: %s; points stay in the spool, retrying with back-off", error)
        elif not error and not was_ok:
            log.info("metrics: %s reachable again, shipping resumed", self.target)
        return error is None

    def _run(self) -> None:
        delay = self.interval
        while not self._stop.wait(delay):
            ok = self._attempt()
            delay = self.interval if ok else min(self.max_backoff, max(delay, self.interval) * 2)
        self._attempt()  # the final attempt, bounded by the deadline set in close()

    def close(self, final_timeout: float = 10.0) -> ShipResult:
        """Stop the thread after one last attempt (at most ``final_timeout`` seconds).

        Returns the points shipped over the shipper's life, those still pending and
        the last error. If the last attempt is still waiting on the server when the
        time is up, it is abandoned (the daemon thread ends with the process; the
        spool stays consistent) and its points are reported pending. Closing again
        returns the first result.
        """
        if self._result is not None:
            return self._result
        if self._thread is None:
            pending = self.spool.pending_count()
            if self._sink is None:
                self._result = ShipResult(0, pending, NOT_CONFIGURED if pending else None, None)
                return self._result
            # Never started: one synchronous attempt.
            self._deadline = time.monotonic() + final_timeout
            self._attempt()
        else:
            self._deadline = time.monotonic() + final_timeout
            self._stop.set()
            self._thread.join(final_timeout + 0.5)
        finished = self._thread is None or not self._thread.is_alive()
        if finished and self._own_sink and self._sink is not None:
            self._sink.close()
        pending = self.spool.pending_count()
        with self._lock:
            error = self.last_error
            if not finished and error is None:
                error = f"{self.target}: the final attempt did not finish within {final_timeout:g} s"
            self._result = ShipResult(self.shipped, pending, error, self.target)
            return self._result

    def __enter__(self) -> BackgroundShipper:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
