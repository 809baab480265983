"""Shipping to real servers: influxd 1.6 (v1 /write) and VictoriaMetrics (/api/v2/write).

What is checked, on real servers: the counts a server holds equal the spool's, field
by field; a server stopped in the middle of shipping or during a background shipper's
run loses nothing (points stay pending, then go out on restart); shipping twice — or
re-sending batches whose ack was lost — adds nothing; no secret ever shows.
"""

from __future__ import annotations

import http.server
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from labctl.config import load_settings
from labctl.metrics import BackgroundShipper, SinkError, Spool, V1Sink, V2Sink, ship, sink_from_settings
from labctl.metrics.ship import NOT_CONFIGURED
from labctl.metrics.sinks import Sink
from tests.servers import (
    Server,
    influx_field_counts,
    lp_field_counts,
    vm_expected_counts,
    vm_sample_counts,
)

pytestmark = pytest.mark.integration


def v1_settings(server: Server, **env: str) -> Any:
    return load_settings(
        env={
            "LABCTL_DATA_DIR": "/nonexistent",
            "LABCTL_INFLUX_URL": server.url,
            "LABCTL_INFLUX_API": "v1",
            **env,
        }
    )


def v2_settings(server: Server, **env: str) -> Any:
    return load_settings(
        env={
            "LABCTL_DATA_DIR": "/nonexistent",
            "LABCTL_INFLUX_URL": server.url,
            "LABCTL_INFLUX_API": "v2",
            **env,
        }
    )


def held(server: Server, run_id: str) -> dict[Any, int]:
    """What the server holds for a run, in the form of the expectation helpers."""
    if server.name == "influxd":
        return dict(influx_field_counts(server.url, f"run_id='{run_id}'"))
    return dict(vm_sample_counts(server.url, f'{{__name__=~"labctl_.*",run_id="{run_id}"}}'))


def expected(server: Server, lines: list[str]) -> dict[Any, int]:
    return dict(lp_field_counts(lines)) if server.name == "influxd" else dict(vm_expected_counts(lines))


@pytest.fixture(params=["influxd", "victoria"])
def any_server(request: pytest.FixtureRequest) -> Server:
    server: Server = request.getfixturevalue(request.param)
    return server


def settings_for(server: Server, **env: str) -> Any:
    return v1_settings(server, **env) if server.name == "influxd" else v2_settings(server, **env)


# --------------------------------------------------------------------------- counts


def test_ship_counts_equal_spool_and_second_ship_adds_nothing(
    any_server: Server, tmp_path: Path, make_run_lines: Callable[..., list[str]]
) -> None:
    run_id = f"counts-{any_server.name}"
    lines = make_run_lines(run_id, reps=2)
    spool = Spool(tmp_path / "run")
    spool.append(lines)
    settings = settings_for(any_server)
    result = ship(tmp_path / "run", settings, batch=17)
    assert result.error is None, result.error
    assert (result.shipped, result.pending) == (len(lines), 0)
    assert tuple(spool.counts()) == (len(lines), len(lines), 0)
    want = expected(any_server, lines)
    assert held(any_server, run_id) == want
    # every measurement of the schema made it
    names = {k[0] if isinstance(k, tuple) else k.split("_", 2)[0] + "_" + k.split("_", 2)[1] for k in want}
    assert {"labctl_latency", "labctl_throughput", "labctl_cell", "labctl_gc", "labctl_host"} <= names
    again = ship(tmp_path / "run", settings)
    assert (again.shipped, again.pending, again.error) == (0, 0, None)
    assert held(any_server, run_id) == want


def test_resending_acknowledged_points_overwrites(
    any_server: Server, tmp_path: Path, make_run_lines: Callable[..., list[str]]
) -> None:
    """A crash between the server's acknowledgement and the ack file means a resend:
    the server must end up with the same data, not twice the data."""
    run_id = f"resend-{any_server.name}"
    lines = make_run_lines(run_id)
    spool = Spool(tmp_path / "run")
    spool.append(lines)
    settings = settings_for(any_server)
    assert ship(tmp_path / "run", settings).pending == 0
    before = held(any_server, run_id)
    spool.ack_path.unlink()  # forget every ack, as if killed before writing them
    assert spool.counts().pending == len(lines)
    again = ship(tmp_path / "run", settings, batch=10)
    assert again.shipped == len(lines) and again.pending == 0
    # the same points built again from the same data (a re-run of the builders) too
    Spool(tmp_path / "rebuilt").append(make_run_lines(run_id))
    assert ship(tmp_path / "rebuilt", settings).pending == 0
    assert held(any_server, run_id) == before == expected(any_server, lines)


def test_direct_sinks(
    influxd: Server, victoria: Server, make_synthetic_lines: Callable[..., list[str]]
) -> None:
    lines = make_synthetic_lines("direct", 1000)
    with V1Sink(influxd.url, db="labctl", gzip=True) as v1:
        v1.write(lines)
    with V2Sink(victoria.url, org="labctl", bucket="labctl", gzip=True) as v2:
        v2.write(lines)
    assert held(influxd, "direct") == lp_field_counts(lines)
    assert held(victoria, "direct") == vm_expected_counts(lines)


def test_rejected_batch_is_permanent_and_stays_pending(influxd: Server, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "run")
    spool.append(["labctl_host,run_id=rej load1=1 1795000000000000000"])
    spool.append(["labctl_host,run_id=rej load1=oops 1795000000000000001"])
    with pytest.raises(SinkError) as info:
        V1Sink(influxd.url, db="labctl").write(["labctl_host,run_id=rej load1=oops 1"])
    assert info.value.permanent and info.value.status == 400
    result = ship(tmp_path / "run", v1_settings(influxd), batch=1)
    assert result.shipped == 1 and result.pending == 1
    assert result.error and "HTTP 400" in result.error


def test_unconfigured_ships_nothing(tmp_path: Path) -> None:
    settings = load_settings(env={"LABCTL_DATA_DIR": str(tmp_path)})
    assert sink_from_settings(settings) is None
    Spool(tmp_path / "run").append(["labctl_host,run_id=u load1=1 1"])
    result = ship(tmp_path / "run", settings)
    assert (result.shipped, result.pending, result.error, result.target) == (0, 1, NOT_CONFIGURED, None)
    shipper = BackgroundShipper(tmp_path / "run", settings).start()
    assert shipper.close(0.1).pending == 1


def test_missing_server_binary_fails_not_skips(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The fixtures turn a missing influxd / victoria-metrics into a failure."""
    import tests.servers as servers
    from tests.conftest import _start

    monkeypatch.setattr(servers, "INFLUXD", "influxd-not-installed-here")
    monkeypatch.setattr(servers.os.path, "exists", lambda p: False)
    with pytest.raises(pytest.fail.Exception, match="not installed"):
        _start(servers.start_influxd, tmp_path)


# --------------------------------------------------------------------------- outages


class StopAfter(Sink):
    """Pass batches through; stop the server right after the n-th acknowledged one."""

    def __init__(self, inner: Sink, server: Server, n: int) -> None:
        self.inner, self.server, self.n, self.name = inner, server, n, inner.name
        self.writes = 0

    def write(self, lines: list[str]) -> None:
        self.inner.write(lines)
        self.writes += 1
        if self.writes == self.n:
            self.server.stop()


@pytest.mark.parametrize("which", ["influxd_own", "victoria_own"])
def test_server_stopped_in_the_middle_of_shipping(
    which: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    make_run_lines: Callable[..., list[str]],
    make_synthetic_lines: Callable[..., list[str]],
) -> None:
    server: Server = request.getfixturevalue(which)
    run_id = f"mid-{which}"
    lines = make_run_lines(run_id, reps=3) + make_synthetic_lines(run_id, 700)
    spool = Spool(tmp_path / "run")
    spool.append(lines)
    settings = settings_for(server)
    sink = sink_from_settings(settings, retries=1)
    assert sink is not None
    result = ship(tmp_path / "run", settings, batch=100, sink=StopAfter(sink, server, 3))
    assert result.shipped == 300 and result.pending == len(lines) - 300
    assert result.error and "connection refused" in result.error
    assert spool.counts().acked == 300
    server.start()
    # what the server acknowledged survived its restart
    assert held(server, run_id) == expected(server, lines[:300])
    result = ship(tmp_path / "run", settings)
    assert (result.shipped, result.pending, result.error) == (len(lines) - 300, 0, None)
    assert held(server, run_id) == expected(server, lines)
    assert ship(tmp_path / "run", settings).shipped == 0
    assert held(server, run_id) == expected(server, lines)


def _wait(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_background_shipper_survives_an_outage(
    influxd_own: Server,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    make_synthetic_lines: Callable[..., list[str]],
) -> None:
    caplog.set_level(logging.INFO, logger="labctl.metrics")
    server = influxd_own
    run_dir = tmp_path / "run"
    all_lines = make_synthetic_lines("bg", 6000)
    chunks = [all_lines[i : i + 200] for i in range(0, len(all_lines), 200)]
    shipper = BackgroundShipper(
        run_dir, v1_settings(server), interval=0.1, max_backoff=0.4, batch=500
    ).start()
    slowest = 0.0
    for i, chunk in enumerate(chunks):
        t0 = time.monotonic()
        shipper.append(chunk)
        slowest = max(slowest, time.monotonic() - t0)
        if i == 10:
            _wait(lambda: shipper.spool.counts().pending == 0, 10, "the first chunks to ship")
            server.stop()
        if i == 20:
            _wait(lambda: shipper.last_error is not None, 10, "the shipper to notice the outage")
            assert shipper.spool.counts().pending > 0
            server.start()
        time.sleep(0.01)
    assert slowest < 0.5, f"an append waited {slowest:.2f} s: the run was blocked"
    result = shipper.close(final_timeout=10)
    assert (result.pending, result.error) == (0, None), result
    assert result.shipped == len(all_lines)
    assert held(server, "bg") == lp_field_counts(all_lines)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "points stay in the spool" in warnings[0].getMessage()


class Hanging(Sink):
    """A server that accepts the connection and never answers (until released)."""

    name = "hanging"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def write(self, lines: list[str]) -> None:
        self.calls += 1
        self.release.wait(30)
        raise SinkError("hanging: read timeout")


def test_a_hanging_server_never_blocks_the_run(tmp_path: Path) -> None:
    sink = Hanging()
    shipper = BackgroundShipper(tmp_path / "run", sink=sink, interval=0.02).start()
    shipper.append(["labctl_host,run_id=h load1=1 1"])
    _wait(lambda: sink.calls == 1, 5, "the shipper to be stuck in a write")
    t0 = time.monotonic()
    for i in range(50):  # appends while the shipper is stuck in the network
        shipper.append([f"labctl_host,run_id=h load1=1 {i + 2}"])
    assert time.monotonic() - t0 < 2
    t0 = time.monotonic()
    result = shipper.close(final_timeout=0.3)
    assert time.monotonic() - t0 < 2, "close() must honour its time limit"
    assert result.pending == 51 and result.shipped == 0 and result.error
    assert shipper.close() is result
    sink.release.set()


def test_server_down_for_the_whole_run_then_ship(
    influxd_own: Server, tmp_path: Path, make_run_lines: Callable[..., list[str]]
) -> None:
    """Acceptance C's outage: a whole run with InfluxDB down, then `ship`."""
    server = influxd_own
    server.stop()
    lines = make_run_lines("down")
    with BackgroundShipper(tmp_path / "run", v1_settings(server), interval=0.05, max_backoff=0.2) as shipper:
        for line in lines:
            shipper.append([line])
        time.sleep(0.3)
        result = shipper.close(final_timeout=1.0)
    assert result.shipped == 0 and result.pending == len(lines) and result.error
    server.start()
    result = ship(tmp_path / "run", v1_settings(server))
    assert (result.shipped, result.pending) == (len(lines), 0)
    assert held(server, "down") == lp_field_counts(lines)


# --------------------------------------------------------------------------- secrets


class _Echo(http.server.BaseHTTPRequestHandler):
    """Answers every request with ``status`` and a body echoing the request (the worst
    case: a server that repeats the credentials it received)."""

    status = 401
    seen: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        req = {"path": self.path, "headers": dict(self.headers.items())}
        type(self).seen.append(req)
        body = json.dumps({"error": "denied", "request": req}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(params=[401, 500])
def echo_server(request: pytest.FixtureRequest) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []
    handler = type("Echo", (_Echo,), {"status": request.param, "seen": seen})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    httpd.shutdown()
    httpd.server_close()


def _all_text(root: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_secrets_never_appear(
    api: str,
    echo_server: tuple[str, list[dict[str, Any]]],
    victoria: Server,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    secrets: dict[str, str],
    make_run_lines: Callable[..., list[str]],
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, including urllib3's and influxdb-client's
    url, seen = echo_server
    token, password = secrets["token"], secrets["password"]
    env = {"LABCTL_INFLUX_API": api, "LABCTL_INFLUX_TOKEN": token}
    if api == "v1":
        env = {"LABCTL_INFLUX_API": "v1", "LABCTL_INFLUX_USER": "labuser", "LABCTL_INFLUX_PASSWORD": password}
    data_dir = tmp_path / "data"
    settings = load_settings(env={"LABCTL_DATA_DIR": str(data_dir), "LABCTL_INFLUX_URL": url, **env})
    run_dir = data_dir / "runs" / "r1"
    Spool(run_dir).append(make_run_lines("secret"))
    messages: list[str] = []

    result = ship(run_dir, settings)
    assert result.shipped == 0 and result.error
    messages += [result.error, repr(result), json.dumps(result.to_json())]
    sink = sink_from_settings(settings, retries=0)
    assert sink is not None
    messages.append(repr(sink))
    with pytest.raises(SinkError) as info:
        sink.write(["labctl_host,run_id=s load1=1 1"])
    messages += [str(info.value), repr(info.value), json.dumps(info.value.to_json())]
    assert (
        info.value.__cause__ is None and info.value.__context__ is None
    ) or info.value.__suppress_context__
    shipper = BackgroundShipper(run_dir, settings, interval=0.05).start()
    time.sleep(0.2)
    messages.append(str(shipper.close(0.5)))
    # the good path, with the same credentials, to a real server
    good = load_settings(env={"LABCTL_DATA_DIR": str(data_dir), "LABCTL_INFLUX_URL": victoria.url, **env})
    if api == "v2":
        assert ship(run_dir, good).pending == 0

    # The credentials really were sent (so the echo really contained them) …
    assert seen and all("Authorization" in r["headers"] for r in seen)
    sent = json.dumps(seen)
    assert (token in sent) if api == "v2" else ("Basic " in sent)
    # … but never in a URL, and nowhere in what labctl produced.
    assert not any(token in r["path"] or password in r["path"] or "labuser" in r["path"] for r in seen)
    out = capsys.readouterr()
    haystack = "\n".join([*messages, caplog.text, out.out, out.err, _all_text(data_dir)])
    assert "denied" in haystack or "HTTP 5" in haystack  # the server's reason did come through
    for secret in (token, password):
        assert secret not in haystack
    import base64

    assert base64.b64encode(f"labuser:{password}".encode()).decode() not in haystack
    assert base64.b64encode(token.encode()).decode() not in haystack
