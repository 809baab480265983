"""Tests of build/bin/loadgen, the open-loop load generator, against stall_server.py.

The binary is built by `make workloads`; a missing binary fails the tests (never skips).
Only loopback addresses are used; every run is bounded in time.
"""

from __future__ import annotations

import json
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOADGEN = ROOT / "build" / "bin" / "loadgen"
STALL_SERVER = Path(__file__).resolve().with_name("stall_server.py")


def loadgen_bin() -> Path:
    if not LOADGEN.is_file():
        pytest.fail(f"{LOADGEN} is missing: build it with `make workloads`")
    return LOADGEN


@contextmanager
def stall_server(*args: str) -> Iterator[subprocess.Popen[str]]:
    """Start stall_server.py on a free loopback port; yields the process with .target set."""
    proc = subprocess.Popen(
        [sys.executable, str(STALL_SERVER), "--listen", "127.0.0.1:0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 10
        line = ""
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 0.2)
            if ready:
                line = proc.stdout.readline()
                break
            if proc.poll() is not None:
                break
        assert line.startswith("READY stall-server listen="), f"stall server did not start: {line!r}"
        proc.target = line.strip().split("listen=", 1)[1]  # type: ignore[attr-defined]
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run_loadgen(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(loadgen_bin()), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def read_log(path: Path) -> list:
    """Intervals of an HdrHistogram interval log, read with the `hdrhistogram` package."""
    from hdrh.histogram import HdrHistogram
    from hdrh.log import HistogramLogReader

    reader = HistogramLogReader(str(path), HdrHistogram(1, 60_000_000, 3))
    out = []
    while (h := reader.get_next_interval_histogram()) is not None:
        out.append(h)
    return out


def count_at_or_above(hists: list, value_us: int) -> int:
    n = 0
    for h in hists:
        for it in h.get_recorded_iterator():
            if it.value_iterated_to >= value_us:
                n += it.count_at_value_iterated_to
    return n


# --------------------------------------------------------------------------- (a) + (d)

STALL_RATE, STALL_DURATION, STALL_WARMUP, STALL_CONNS = 500, 4, 1, 4


@pytest.fixture(scope="module")
def stall_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """500 req/s, 4 connections, 4 s (+1 s warm-up) against a server that stops
    answering for 200 ms once, 2 s after the first request (1 s into the measured period)."""
    loadgen_bin()
    d = tmp_path_factory.mktemp("stall")
    with stall_server("--stall-at", "2", "--stall-ms", "200") as srv:
        r = run_loadgen(
            "--target", srv.target,  # type: ignore[attr-defined]
            "--rate", str(STALL_RATE),
            "--duration", str(STALL_DURATION),
            "--warmup", str(STALL_WARMUP),
            "--connections", str(STALL_CONNS),
            "--summary-json", str(d / "summary.json"),
            "--hist-log", str(d / "corrected.hlog"),
            "--hist-log-uncorrected", str(d / "uncorrected.hlog"),
        )  # fmt: skip
    assert r.returncode == 0, r.stderr
    summary = json.loads((d / "summary.json").read_text())
    return {"summary": summary, "dir": d, "stderr": r.stderr}


def test_summary_fields(stall_run: dict) -> None:
    s = stall_run["summary"]
    keys = (
        "mode", "requested_rps", "achieved_rps", "duration_s", "warmup_s", "connections",
        "requests_sent", "responses", "errors", "timeouts", "decisions",
        "p50_us", "p90_us", "p99_us", "p999_us", "max_us", "mean_us",
        "uncorrected_p50_us", "uncorrected_p90_us", "uncorrected_p99_us",
        "uncorrected_p999_us", "uncorrected_max_us", "uncorrected_mean_us",
    )  # fmt: skip
    for key in keys:
        assert key in s, key
    assert s["mode"] == "open" and s["requested_rps"] == STALL_RATE
    assert s["connections"] == STALL_CONNS
    assert s["errors"] == 0 and s["timeouts"] == 0, s
    expected = STALL_RATE * STALL_DURATION
    assert abs(s["responses"] - expected) <= expected * 0.01, s
    assert abs(s["achieved_rps"] - STALL_RATE) <= STALL_RATE * 0.01, s
    assert sum(s["decisions"].values()) == s["responses"]
    assert s["decisions"]["approve"] == s["responses"]  # the stall server always approves
    assert "achieved" in stall_run["stderr"]  # the one-line human summary


def test_coordinated_omission_is_corrected(stall_run: dict) -> None:
    s = stall_run["summary"]
    # The 200 ms stall delays every request *scheduled* during it: at 500 req/s that is
    # ~100 of 2000 requests (5 %), with latencies spread over 0..200 ms. Measured from
    # the intended send time, the tail shows it:
    assert s["max_us"] >= 150_000, s
    assert s["p999_us"] >= 150_000, s
    assert s["p99_us"] >= 100_000, s
    # Measured from the actual send time (a closed-loop client's view) only the 4
    # requests in flight when the stall began (one per connection, 0.2 %) see it: the
    # stall still shows up in the uncorrected max and p99.9, but p99 stays small.
    assert s["uncorrected_max_us"] >= 150_000, s  # the in-flight ones really waited
    assert s["uncorrected_p99_us"] < 0.5 * s["p99_us"], s
    assert s["uncorrected_p90_us"] < 20_000, s


def test_interval_log_readable(stall_run: dict) -> None:
    s = stall_run["summary"]
    corrected = read_log(stall_run["dir"] / "corrected.hlog")
    uncorrected = read_log(stall_run["dir"] / "uncorrected.hlog")
    # One histogram per second of the measured period; their counts add up to the
    # responses of the summary (errors and timeouts are not latencies).
    assert len(corrected) == STALL_DURATION
    assert len(uncorrected) == STALL_DURATION
    assert sum(h.get_total_count() for h in corrected) == s["responses"]
    assert sum(h.get_total_count() for h in uncorrected) == s["responses"]
    assert max(h.get_max_value() for h in corrected) >= 150_000
    # The stall is in one (or two adjacent) intervals, not smeared over the run.
    slow = [i for i, h in enumerate(corrected) if h.get_max_value() >= 100_000]
    assert 1 <= len(slow) <= 2 and slow[-1] - slow[0] <= 1, slow
    # Counting slow responses: ~75 corrected latencies >= 50 ms (the requests scheduled
    # in the first 150 ms of the stall) but only the <= 4 requests in flight uncorrected.
    n_corr = count_at_or_above(corrected, 50_000)
    n_unc = count_at_or_above(uncorrected, 50_000)
    assert n_corr >= 40, (n_corr, n_unc)
    assert n_unc <= 2 * STALL_CONNS, (n_corr, n_unc)
    # Standard header lines.
    text = (stall_run["dir"] / "corrected.hlog").read_text()
    assert "#[StartTime: " in text and "#[BaseTime: " in text
    assert '"StartTimestamp","Interval_Length","Interval_Max","Interval_Compressed_Histogram"' in text


# --------------------------------------------------------------------------- (b)


@pytest.mark.parametrize(
    "args",
    [
        ["--rate", "-5"],
        ["--rate", "0"],
        ["--rate", "100", "--connections", "0"],
        ["--rate", "100", "--duration", "0"],
        ["--rate", "100", "--warmup", "-1"],
        ["--rate", "100", "--no-such-flag"],
        ["--rate", "lots"],
        [],  # neither --rate nor --max
    ],
)
def test_bad_flags_exit_2(args: list[str]) -> None:
    r = run_loadgen("--target", "127.0.0.1:9", "--duration", "1", *args, timeout=10)
    assert r.returncode == 2, (args, r.returncode, r.stderr)
    assert r.stderr.strip(), "a message on stderr"


def test_connection_refused_exit_1(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port that nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = run_loadgen("--target", f"127.0.0.1:{port}", "--rate", "10", "--duration", "1", timeout=10)
    assert r.returncode == 1, r.stderr
    assert "connect" in r.stderr.lower()


# --------------------------------------------------------------------------- (c)


def check_accounting(s: dict) -> None:
    """Every slot of the measured period is exactly one of these."""
    assert s["responses"] + s["errors"] + s["timeouts"] + s["requests_unsent"] == s["requests_scheduled"], s


def test_server_killed_mid_run_counts_errors(tmp_path: Path) -> None:
    with stall_server("--stall-ms", "0") as srv:
        p = subprocess.Popen(
            [
                str(loadgen_bin()),
                "--target", srv.target,  # type: ignore[attr-defined]
                "--rate", "400", "--duration", "4", "--warmup", "0.5", "--connections", "4",
                "--summary-json", str(tmp_path / "s.json"), "--hist-log", str(tmp_path / "h.hlog"),
            ],
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        time.sleep(2.5)  # 2 s into the measured period
        srv.send_signal(signal.SIGTERM)
        srv.wait(timeout=5)
        _, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["errors"] > 0, s
    assert 300 <= s["responses"] <= 1200, s
    check_accounting(s)
    assert s["requests_scheduled"] == 1600
    # No latency was recorded for the failures.
    assert sum(h.get_total_count() for h in read_log(tmp_path / "h.hlog")) == s["responses"]
    assert s["first_error"]


def test_dropped_connections_are_errors_not_latencies(tmp_path: Path) -> None:
    # Every 100th request: the server waits 400 ms, then closes without answering.
    # Were failures recorded as latencies, the uncorrected max would be >= 400 ms.
    with stall_server("--stall-ms", "0", "--drop-every", "100", "--drop-delay-ms", "400") as srv:
        r = run_loadgen(
            "--target", srv.target,  # type: ignore[attr-defined]
            "--rate", "200", "--duration", "3", "--warmup", "0.5", "--connections", "4",
            "--summary-json", str(tmp_path / "s.json"),
        )  # fmt: skip
    assert r.returncode == 0, r.stderr
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["errors"] >= 3, s
    assert s["timeouts"] == 0, s
    check_accounting(s)
    assert s["uncorrected_max_us"] < 300_000, s
    assert "closed" in (s["first_error"] or ""), s


def test_timeouts_are_counted_not_recorded(tmp_path: Path) -> None:
    # A 1.5 s stall with --timeout-ms 500: the requests waiting in it time out.
    with stall_server("--stall-at", "1", "--stall-ms", "1500") as srv:
        r = run_loadgen(
            "--target", srv.target,  # type: ignore[attr-defined]
            "--rate", "200", "--duration", "3", "--warmup", "0.5", "--connections", "4",
            "--timeout-ms", "500", "--summary-json", str(tmp_path / "s.json"),
        )  # fmt: skip
    assert r.returncode == 0, r.stderr
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["timeouts"] >= 4, s
    check_accounting(s)
    assert s["uncorrected_max_us"] < 600_000, s  # nothing slower than the timeout recorded


def test_max_mode(tmp_path: Path) -> None:
    with stall_server("--stall-ms", "0") as srv:
        r = run_loadgen(
            "--target", srv.target,  # type: ignore[attr-defined]
            "--max", "--duration", "1", "--warmup", "0.5", "--connections", "2",
            "--summary-json", str(tmp_path / "s.json"),
        )  # fmt: skip
    assert r.returncode == 0, r.stderr
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["mode"] == "max" and s["requested_rps"] is None
    assert s["responses"] > 100 and s["errors"] == 0, s
    assert s["achieved_rps"] == pytest.approx(s["responses"] / 1.0)
    assert s["p99_us"] == s["uncorrected_p99_us"]  # closed loop: nothing to correct
