#!/usr/bin/env python3
"""Shipping throughput: labctl's spool + sinks vs a bare client writing the same points.

    .venv/bin/python scripts/bench_ship.py [--points 200000] [--batch 5000] [--repeat 3]

Starts its own VictoriaMetrics (InfluxDB line protocol on /api/v2/write) and influxd
1.x (/write) on free loopback ports, builds N points with labctl's builders, and
times, on each server:

* labctl: ``Spool.append`` (durable, fsync per batch) and ``ship`` (V2Sink / V1Sink,
  one synchronous request per batch, the ack file rewritten after each);
* bare: influxdb-client's batching WriteApi (background batches, flush on close) and
  its SYNCHRONOUS writes of the same batches (VictoriaMetrics); a bare urllib3 POST
  of the same batches to /write (influxd; urllib3 is what ``requests`` is built on,
  and requests is not a labctl dependency).

Every variant writes its own, equal-sized copy of the data (a distinct run_id) so no
variant benefits from overwriting another's points; each is repeated and the median
is reported. The counts on the server are checked after every write.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import urllib3  # noqa: E402

from labctl.metrics import Spool, V1Sink, V2Sink, latency_interval_points, read_hlog, ship, to_lines  # noqa: E402
from tests.servers import (  # noqa: E402
    Server,
    influx_query,
    start_influxd,
    start_victoria_metrics,
    vm_sample_counts,
)

DATA = ROOT / "tests" / "metrics" / "data"
BASE_NS = 1_700_000_000_000_000_000


def make_points(n: int) -> Callable[[str], list[str]]:
    """Return ``lines(run_id)``: n points as labctl's builders make them.

    The builders run on the four one-second intervals of a real loadgen log (latency
    + throughput points); the rest is those lines re-timed one second apart, which is
    exactly what the builders produce for identical histograms at later times.
    """
    intervals = read_hlog(DATA / "loadgen-corrected.hlog")
    tags = {"run_id": "RUNID", "experiment": "bench", "variant": "go", "lang": "go", "rate": 1000, "rep": 1}
    templates = []
    for iv in intervals:
        lat, thr = to_lines(latency_interval_points(tags, [iv]))
        templates.append((lat.rsplit(" ", 1)[0], thr.rsplit(" ", 1)[0]))

    def lines(run_id: str) -> list[str]:
        out: list[str] = []
        for i in range(n // 2):
            lat, thr = templates[i % len(templates)]
            ts = BASE_NS + i * 1_000_000_000
            out.append(f"{lat.replace('RUNID', run_id)} {ts}")
            out.append(f"{thr.replace('RUNID', run_id)} {ts}")
        return out

    return lines


def batches(lines: list[str], size: int) -> list[list[str]]:
    return [lines[i : i + size] for i in range(0, len(lines), size)]


def count_vm(server: Server, run_id: str) -> int:
    got = vm_sample_counts(
        server.url, f'{{__name__=~"labctl_(latency_count|throughput_rps)",run_id="{run_id}"}}'
    )
    return sum(got.values())


def count_influx(server: Server, run_id: str) -> int:
    total = 0
    for measurement, field in (("labctl_latency", "count"), ("labctl_throughput", "rps")):
        q = f'SELECT count("{field}") FROM "{measurement}" WHERE "run_id" = \'{run_id}\''  # noqa: S608 - our own ids
        doc = influx_query(server.url, q)
        total += sum(s["values"][0][1] for r in doc["results"] for s in r.get("series", []))
    return total


class Bench:
    """Runs each variant on its own copy of the data and keeps the timings."""

    def __init__(
        self, vm: Server, ix: Server, gen: Callable[[str], list[str]], n: int, batch: int, tmp: Path
    ):
        self.vm, self.ix, self.gen, self.n, self.batch, self.tmp = vm, ix, gen, n, batch, tmp
        self.times: dict[str, list[float]] = {}

    def _record(self, key: str, seconds: float) -> None:
        self.times.setdefault(key, []).append(seconds)

    def _check(self, server: Server, run_id: str) -> None:
        got = count_vm(server, run_id) if server is self.vm else count_influx(server, run_id)
        if got != self.n:
            raise SystemExit(f"{server.name} holds {got} points for {run_id}, expected {self.n}")

    def labctl(self, api: str, rep: int) -> None:
        """Spool.append (durable) of every batch, then ship() with labctl's sink."""
        server = self.vm if api == "v2" else self.ix
        run_id = f"labctl-{api}-{rep}"
        lines = self.gen(run_id)
        run_dir = self.tmp / run_id
        spool = Spool(run_dir)
        t0 = time.perf_counter()
        for b in batches(lines, self.batch):
            spool.append(b)
        self._record(f"{api}:append", time.perf_counter() - t0)
        sink = (
            V2Sink(server.url, org="labctl", bucket="labctl")
            if api == "v2"
            else V1Sink(server.url, db="labctl")
        )
        t0 = time.perf_counter()
        result = ship(run_dir, None, self.batch, sink=sink)
        self._record(f"{api}:ship", time.perf_counter() - t0)
        sink.close()
        if result.pending or result.error:
            raise SystemExit(f"labctl ship failed: {result}")
        self._check(server, run_id)

    def bare_batching(self, rep: int) -> None:
        """influxdb-client's default batching WriteApi; timed until close() has flushed."""
        from influxdb_client import InfluxDBClient, WriteOptions

        run_id = f"batching-{rep}"
        lines = self.gen(run_id)
        client = InfluxDBClient(url=self.vm.url, token="", org="labctl")
        opts = WriteOptions(batch_size=self.batch, flush_interval=1_000, max_retries=0)
        t0 = time.perf_counter()
        with client.write_api(write_options=opts) as w:
            w.write(bucket="labctl", record=lines)
        self._record("v2:bare-batching", time.perf_counter() - t0)
        client.close()
        self._check(self.vm, run_id)

    def bare_sync(self, rep: int) -> None:
        """influxdb-client SYNCHRONOUS writes of the same batches (what V2Sink does, bare)."""
        from influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        run_id = f"sync-{rep}"
        lines = self.gen(run_id)
        client = InfluxDBClient(url=self.vm.url, token="", org="labctl")
        w = client.write_api(write_options=SYNCHRONOUS)
        t0 = time.perf_counter()
        for b in batches(lines, self.batch):
            w.write(bucket="labctl", record="\n".join(b))
        self._record("v2:bare-sync", time.perf_counter() - t0)
        client.close()
        self._check(self.vm, run_id)

    def bare_post(self, rep: int) -> None:
        """A bare urllib3 POST of the same batches to influxd's /write."""
        run_id = f"post-{rep}"
        lines = self.gen(run_id)
        pool = urllib3.PoolManager()
        url = f"{self.ix.url}/write?db=labctl&precision=ns"
        t0 = time.perf_counter()
        for b in batches(lines, self.batch):
            r = pool.request("POST", url, body=("\n".join(b) + "\n").encode())
            if r.status != 204:
                raise SystemExit(f"influxd: HTTP {r.status} {r.data[:200]!r}")
        self._record("v1:bare-post", time.perf_counter() - t0)
        pool.clear()
        self._check(self.ix, run_id)


ROWS: list[tuple[str, str | tuple[str, ...] | None, str | None, str | None]] = [
    ("VictoriaMetrics /api/v2/write", None, None, None),
    ("  labctl ship (V2Sink, acked batches)", "v2:ship", "v2:bare-sync", "v2:bare-batching"),
    ("  labctl spool.append (fsync per batch)", "v2:append", None, None),
    ("  labctl append + ship", ("v2:append", "v2:ship"), "v2:bare-sync", "v2:bare-batching"),
    ("  bare influxdb-client SYNCHRONOUS", "v2:bare-sync", None, None),
    ("  bare influxdb-client batching WriteApi", "v2:bare-batching", None, None),
    ("influxd 1.6 /write", None, None, None),
    ("  labctl ship (V1Sink, acked batches)", "v1:ship", "v1:bare-post", None),
    ("  labctl spool.append (fsync per batch)", "v1:append", None, None),
    ("  labctl append + ship", ("v1:append", "v1:ship"), "v1:bare-post", None),
    ("  bare urllib3 POST", "v1:bare-post", None, None),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    n, batch = args.points - args.points % 2, args.batch
    gen = make_points(n)
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    sample = gen("x")
    build_s = time.perf_counter() - t0
    line_bytes = sum(len(x) + 1 for x in sample) / len(sample)

    with tempfile.TemporaryDirectory(prefix="bench-ship-") as tmp:
        vm = start_victoria_metrics(Path(tmp))
        ix = start_influxd(Path(tmp))
        try:
            bench = Bench(vm, ix, gen, n, batch, Path(tmp))
            for rep in range(args.repeat):  # interleaved, so drift hits every variant alike
                bench.labctl("v2", rep)
                bench.bare_sync(rep)
                bench.bare_batching(rep)
                bench.labctl("v1", rep)
                bench.bare_post(rep)
        finally:
            vm.stop()
            ix.stop()

    med = {k: statistics.median(v) for k, v in bench.times.items()}
    print(
        f"\nshipping {n} points ({line_bytes:.0f} bytes/line), {batch} per request, median of {args.repeat} "
        f"(server counts checked after every write); generating the lines took {build_s:.2f} s\n"
    )
    print(f"{'path':44} {'seconds':>8} {'points/s':>11} {'vs bare sync/POST':>18} {'vs bare batching':>17}")
    for label, key, ref, ref2 in ROWS:
        if key is None:
            print(label)
            continue
        secs = sum(med[k] for k in key) if isinstance(key, tuple) else med[key]
        r1 = f"{med[ref] / secs:.2f}x" if ref else ""
        r2 = f"{med[ref2] / secs:.2f}x" if ref2 else ""
        print(f"{label:44} {secs:8.3f} {n / secs:11,.0f} {r1:>18} {r2:>17}")
    print("\nratio = labctl's points/s divided by the bare client's (1.00x = as fast; < 1 = slower).")
    print(
        f"machine: {os.cpu_count()} CPUs, load average {load_before:.1f} before / {os.getloadavg()[0]:.1f} after "
        "(a busy machine slows every column; compare ratios, not absolute figures)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
