"""End to end: each riskd server under build/bin/loadgen at a fixed, moderate rate.

Binaries come from `make workloads`; a missing one fails its test (never skips).
Loopback only; every step is bounded in time.
"""

from __future__ import annotations

import json
import select
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "build" / "bin"

RATE, DURATION, WARMUP, CONNECTIONS = 2000, 4, 1, 8


def need(path: Path) -> Path:
    if not path.is_file():
        pytest.fail(f"{path} is missing: build it with `make workloads`")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            line = proc.stdout.readline()
            if line.startswith("READY"):
                return line.strip()
            if not line:
                break
        elif proc.poll() is not None:
            break
    proc.kill()
    _, err = proc.communicate(timeout=10)
    pytest.fail(f"server did not print READY within {timeout} s; stderr: {err[-2000:]}")


@pytest.mark.parametrize("lang", ["go", "rust", "cpp"])
def test_riskd_under_load(lang: str, tmp_path: Path) -> None:
    server = need(BIN / f"riskd-{lang}")
    loadgen = need(BIN / "loadgen")
    port = free_port()
    proc = subprocess.Popen(
        [str(server), "--listen", f"127.0.0.1:{port}", "--accounts", "20000", "--window", "16"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready = wait_ready(proc, timeout=60)
        assert ready.startswith(f"READY riskd-{lang} "), ready
        r = subprocess.run(
            [
                str(loadgen),
                "--target", f"127.0.0.1:{port}",
                "--rate", str(RATE), "--duration", str(DURATION), "--warmup", str(WARMUP),
                "--connections", str(CONNECTIONS), "--accounts", "20000",
                "--summary-json", str(tmp_path / "summary.json"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        s = json.loads((tmp_path / "summary.json").read_text())
        assert s["errors"] == 0, (s, r.stderr)
        assert s["timeouts"] == 0, (s, r.stderr)
        assert abs(s["achieved_rps"] - RATE) <= 0.01 * RATE, (s, r.stderr)
        assert sum(s["decisions"].values()) == s["responses"]
        assert s["p50_us"] is not None and s["p50_us"] > 0
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate(timeout=10)
            pytest.fail(f"riskd-{lang} did not exit within 15 s of SIGTERM")
    assert proc.returncode == 0, err[-2000:]
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert lines, "no output"
    stats = json.loads(lines[-1])
    assert stats["lang"] == lang
    assert stats["rss_hwm_bytes"] > 0
    assert stats["requests"] >= s["requests_sent"]
    if lang == "go":
        assert "gc_cycles" in stats and "gc_pause_max_us" in stats, stats
