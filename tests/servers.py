"""Real servers for tests and benchmarks: InfluxDB 1.x (Debian's influxd) and VictoriaMetrics.

Each starter runs the server on a free 127.0.0.1 port with its own configuration and
data directory under the given directory, waits until it answers, and returns a
:class:`Server` that can be stopped, killed and started again on the same port and
data (for outage tests). A missing binary raises :class:`ServerUnavailable` — tests
turn that into a failure, never a skip.

Usable outside pytest (scripts/bench_ship.py imports it).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

INFLUXD = "influxd"
VICTORIA_METRICS = "victoria-metrics"
START_TIMEOUT = 20.0


class ServerUnavailable(RuntimeError):
    """The server binary is missing or the server did not come up."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http(
    method: str,
    url: str,
    data: bytes | None = None,
    timeout: float = 5.0,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """A plain HTTP request: (status, body); connection errors give (0, b"")."""
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


@dataclass
class Server:
    """A running server process. ``url`` is its HTTP base URL."""

    name: str
    url: str
    port: int
    argv: list[str]
    ready_path: str
    ready_status: int
    workdir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def start(self) -> Server:
        """Start (or restart) the process with the same config and data; wait until ready."""
        if self.running:
            return self
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerUnavailable(f"{self.name} exited with {self.proc.returncode}: {self.log_tail()}")
            status, _ = http("GET", self.url + self.ready_path, timeout=1.0)
            if status == self.ready_status:
                return self
            time.sleep(0.05)
        self.stop()
        raise ServerUnavailable(
            f"{self.name} did not answer on {self.url} within {START_TIMEOUT} s: {self.log_tail()}"
        )

    @property
    def running(self) -> bool:
        """True while the process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; waits for the port to be free."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._wait_port_closed()

    def kill(self) -> None:
        """SIGKILL (a crash), and wait for it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._wait_port_closed()

    def _wait_port_closed(self) -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with socket.socket() as s:
                s.settimeout(0.2)
                if s.connect_ex(("127.0.0.1", self.port)) != 0:
                    return
            time.sleep(0.05)

    def log_tail(self, n: int = 5) -> str:
        """The last lines of the server's log (for failure messages)."""
        try:
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _need(binary: str) -> str:
    path = shutil.which(binary) or (f"/usr/bin/{binary}" if os.path.exists(f"/usr/bin/{binary}") else None)
    if path is None:
        raise ServerUnavailable(f"{binary} is not installed (Debian package: see Makefile APT_PACKAGES)")
    return path


# --------------------------------------------------------------------------- InfluxDB 1.x


def start_influxd(tmp_dir: str | Path, db: str = "labctl") -> Server:
    """Start Debian's influxd (1.x, v1 API) on a free loopback port; create ``db``.

    The configuration mirrors the acceptance helper (its own meta/data/wal dirs, a
    loopback RPC bind address) and turns off what slows a test server down (usage
    reporting, the _internal monitor store, query and HTTP logging).
    """
    binary = _need(INFLUXD)
    work = Path(tmp_dir) / f"influxd-{free_port()}"
    work.mkdir(parents=True)
    port, rpc = free_port(), free_port()
    conf = work / "influxdb.conf"
    conf.write_text(
        f"""reporting-disabled = true
bind-address = "127.0.0.1:{rpc}"
[meta]
  dir = "{work}/meta"
[data]
  dir = "{work}/data"
  wal-dir = "{work}/wal"
  query-log-enabled = false
[monitor]
  store-enabled = false
[http]
  bind-address = "127.0.0.1:{port}"
  log-enabled = false
[logging]
  level = "warn"
[continuous_queries]
  enabled = false
"""
    )
    server = Server(
        name="influxd",
        url=f"http://127.0.0.1:{port}",
        port=port,
        argv=[binary, "-config", str(conf)],
        ready_path="/ping",
        ready_status=204,
        workdir=work,
        log_path=work / "log",
        extra={"db": db},
    ).start()
    influx_query(server.url, f'CREATE DATABASE "{db}"', db=None)
    return server


def influx_query(url: str, q: str, db: str | None = "labctl", epoch: str | None = "ns") -> dict[str, Any]:
    """Run an InfluxQL query through ``/query`` (POST); return the parsed JSON.

    Raises AssertionError when the server reports an error for any statement.
    """
    params: dict[str, str] = {"q": q}
    if db:
        params["db"] = db
    if epoch:
        params["epoch"] = epoch
    status, body = http(
        "POST",
        url + "/query",
        data=urllib.parse.urlencode(params).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=30,
    )
    if status != 200:
        raise AssertionError(f"InfluxQL {q!r}: HTTP {status}: {body[:300]!r}")
    doc: dict[str, Any] = json.loads(body)
    for res in doc.get("results", []):
        if "error" in res:
            raise AssertionError(f"InfluxQL {q!r}: {res['error']}")
    return doc


def influx_field_counts(url: str, where: str, db: str = "labctl") -> dict[tuple[str, str], int]:
    """``{(measurement, field): number of values}`` from ``SELECT count(*) … WHERE where``."""
    doc = influx_query(url, f"SELECT count(*) FROM /^labctl_/ WHERE {where}", db=db)
    out: dict[tuple[str, str], int] = {}
    for res in doc.get("results", []):
        for series in res.get("series", []):
            cols = series["columns"]
            for row in series["values"]:
                for col, value in zip(cols, row, strict=True):
                    if col.startswith("count_") and value:
                        key = (series["name"], col[len("count_") :])
                        out[key] = out.get(key, 0) + int(value)
    return out


# --------------------------------------------------------------------------- VictoriaMetrics


def start_victoria_metrics(tmp_dir: str | Path) -> Server:
    """Start VictoriaMetrics on a free loopback port with its own storage directory.

    ``-dedup.minScrapeInterval=1ms`` makes a sample re-sent with the same series and
    timestamp replace the first one (InfluxDB's overwrite semantics; without it VM
    keeps both). Retention is long so that fixture data with old timestamps is kept;
    ``-search.latencyOffset=0s`` makes fresh samples queryable at once.
    """
    binary = _need(VICTORIA_METRICS)
    port = free_port()
    work = Path(tmp_dir) / f"victoria-metrics-{port}"
    work.mkdir(parents=True)
    return Server(
        name="victoria-metrics",
        url=f"http://127.0.0.1:{port}",
        port=port,
        argv=[
            binary,
            f"-storageDataPath={work / 'data'}",
            f"-httpListenAddr=127.0.0.1:{port}",
            "-retentionPeriod=100y",
            "-dedup.minScrapeInterval=1ms",
            "-search.latencyOffset=0s",
            "-search.disableCache",
            "-loggerLevel=ERROR",
        ],
        ready_path="/health",
        ready_status=200,
        workdir=work,
        log_path=work / "log",
    ).start()


def vm_flush(url: str) -> None:
    """Make everything VictoriaMetrics received searchable now."""
    http("GET", url + "/internal/force_flush", timeout=10)


def vm_sample_counts(url: str, match: str = '{__name__=~"labctl_.*"}') -> dict[str, int]:
    """``{metric name: samples}`` from ``/api/v1/export`` (after a flush).

    VictoriaMetrics names an InfluxDB field ``<measurement>_<field>``.
    """
    vm_flush(url)
    query = urllib.parse.urlencode({"match[]": match})
    status, body = http("GET", f"{url}/api/v1/export?{query}", timeout=60)
    if status != 200:
        raise AssertionError(f"export: HTTP {status}: {body[:300]!r}")
    out: dict[str, int] = {}
    for line in body.splitlines():
        if not line.strip():
            continue
        doc = json.loads(line)
        name = doc["metric"]["__name__"]
        out[name] = out.get(name, 0) + len(doc["values"])
    return out


def stop_all(*servers: Server | None) -> None:
    """Stop every given server, ignoring errors (for finalizers)."""
    for s in servers:
        if s is not None:
            with contextlib.suppress(Exception):
                s.stop()


# --------------------------------------------------------------------------- expectations


def lp_field_counts(lines: list[str], resolution_ns: int = 1) -> dict[tuple[str, str], int]:
    """``{(measurement, field): values}`` that a server should hold after ``lines``.

    Points with the same measurement, tag set and timestamp (at the server's
    ``resolution_ns``) count once: the server overwrites them. Handles labctl's own
    lines: identifier tags, numeric/boolean fields, an explicit timestamp.
    """
    latest: dict[tuple[str, str], set[str]] = {}
    for line in lines:
        key, fields, ts = line.split(" ")
        measurement = key.split(",", 1)[0]
        series = f"{key} {int(ts) // resolution_ns}"
        for item in fields.split(","):
            name = item.split("=", 1)[0]
            latest.setdefault((measurement, name), set()).add(series)
    return {k: len(v) for k, v in latest.items()}


def vm_expected_counts(lines: list[str]) -> dict[str, int]:
    """``lp_field_counts`` under VictoriaMetrics' names (``<measurement>_<field>``).

    VictoriaMetrics keeps milliseconds (``-influxTrimTimestamp`` defaults to 1ms).
    """
    return {f"{m}_{f}": n for (m, f), n in lp_field_counts(lines, 1_000_000).items()}
