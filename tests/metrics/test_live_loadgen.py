"""The real load generator's interval logs, read back and shipped (build/bin/loadgen).

A missing binary is a failure: build it first (``make workloads``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hdrh.histogram import HdrHistogram

from labctl.metrics import Spool, latency_interval_points, read_hlog, ship, to_lines
from labctl.metrics.schema import percentiles
from labctl.metrics.sinks import V1Sink
from tests.servers import Server, influx_field_counts, lp_field_counts

ROOT = Path(__file__).resolve().parents[2]
LOADGEN = ROOT / "build" / "bin" / "loadgen"
STALL_SERVER = ROOT / "tests" / "workloads" / "stall_server.py"

pytestmark = pytest.mark.integration


def test_loadgen_logs_read_and_ship(tmp_path: Path, influxd: Server) -> None:
    if not LOADGEN.exists():
        pytest.fail(f"{LOADGEN} is missing: run `make workloads`")
    server = subprocess.Popen(
        [
            sys.executable,
            str(STALL_SERVER),
            "--listen",
            "127.0.0.1:0",
            "--stall-at",
            "1.0",
            "--stall-ms",
            "150",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None
        ready = server.stdout.readline()
        assert ready.startswith("READY"), ready
        target = ready.split("listen=")[1].split()[0]
        before = time.time_ns()
        proc = subprocess.run(
            [
                str(LOADGEN),
                "--target", target, "--rate", "800", "--duration", "3", "--warmup", "0.5",
                "--connections", "4", "--summary-json", str(tmp_path / "summary.json"),
                "--hist-log", str(tmp_path / "c.hlog"), "--hist-log-uncorrected", str(tmp_path / "u.hlog"),
            ],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        after = time.time_ns()
        assert proc.returncode == 0, proc.stderr
    finally:
        server.terminate()
        server.wait(10)
    summary = json.loads((tmp_path / "summary.json").read_text())
    corrected, uncorrected = read_hlog(tmp_path / "c.hlog"), read_hlog(tmp_path / "u.hlog")
    assert len(corrected) == len(uncorrected) == 3
    # absolute times, inside the measured period, one second apart
    assert before <= corrected[0].start_ns and corrected[-1].end_ns <= after + 1_000_000_000
    assert [iv.start_ns for iv in corrected] == [iv.start_ns for iv in uncorrected]
    merged = HdrHistogram(1, 3_600_000_000, 3)
    for iv in corrected:
        merged.add(iv.histogram)
    assert merged.get_total_count() == summary["responses"]
    got = percentiles(merged, [50, 90, 99])
    assert (got[50], got[90], got[99]) == (summary["p50_us"], summary["p90_us"], summary["p99_us"])
    assert merged.get_max_value() == summary["max_us"]
    assert summary["max_us"] >= 100_000, "the 150 ms stall must show in the corrected tail"

    tags = {"run_id": "live-loadgen", "variant": "stall", "lang": "py", "rate": 800, "rep": 1}
    lines = to_lines(latency_interval_points(tags, corrected, "corrected"))
    lines += to_lines(latency_interval_points(tags, uncorrected, "uncorrected"))
    Spool(tmp_path / "run").append(lines)
    result = ship(tmp_path / "run", None, sink=V1Sink(influxd.url, db="labctl"))
    assert (result.shipped, result.pending) == (len(lines), 0)
    assert influx_field_counts(influxd.url, "run_id='live-loadgen'") == lp_field_counts(lines)
