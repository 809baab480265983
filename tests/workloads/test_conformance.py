"""Conformance of the riskd servers (build/bin/riskd-{go,rust,cpp}) to
workloads/riskd/PROTOCOL.md, using the shared vectors that reference.py wrote.

Every server is a real process on a free 127.0.0.1 port, spoken to over TCP.
A missing binary is a failure, not a skip: build it first (``make workloads``).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
VECTORS = json.loads((ROOT / "workloads" / "riskd" / "vectors.json").read_text())
FLAGS: dict[str, int] = VECTORS["flags"]
CASES = [(bytes.fromhex(c["request"]), bytes.fromhex(c["response"])) for c in VECTORS["cases"]]
MALFORMED = [(m["why"], bytes.fromhex(m["frame"])) for m in VECTORS["malformed"]]
LANGS = ["go", "rust", "cpp"]

MAX_FRAME = 4096
READY_TIMEOUT = 5.0  # seconds from start to the READY line (1000 accounts: instant)
IO_TIMEOUT = 3.0  # per socket operation on a good connection
CLOSE_TIMEOUT = 2.0  # for the server to close a connection after a malformed frame
EXIT_TIMEOUT = 5.0  # from SIGTERM to exit


def binary(lang: str) -> Path:
    path = ROOT / "build" / "bin" / f"riskd-{lang}"
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"{path} is missing (or not executable): build the {lang} server first "
            f"(make workloads, or make {path})",
            pytrace=False,
        )
    return path


def flag_args() -> list[str]:
    args: list[str] = []
    for name in ("accounts", "window", "merchants", "rules", "seed"):
        args += [f"--{name}", str(FLAGS[name])]
    return args


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:  # bounded: every recv either makes progress, times out or ends
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def read_frame(sock: socket.socket) -> bytes:
    (n,) = struct.unpack(">I", recv_exact(sock, 4))
    assert 1 <= n <= MAX_FRAME, f"response frame length {n} is outside 1..{MAX_FRAME}"
    return recv_exact(sock, n)


def closed_by_peer(sock: socket.socket, timeout: float) -> str | None:
    """None when the peer closes (EOF or reset) within timeout, else what happened instead."""
    sock.settimeout(timeout)
    try:
        data = sock.recv(1)
    except (ConnectionResetError, ConnectionAbortedError):
        return None
    except TimeoutError:
        return f"still open after {timeout} s"
    return None if data == b"" else f"server sent data: {data.hex()}"


class Server:
    """One riskd process started with the vectors' flags; a context manager that
    always reaps the process."""

    def __init__(self, lang: str) -> None:
        self.lang = lang
        self.path = binary(lang)
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.errors = bytearray()  # the tail of stderr
        self.reader: threading.Thread | None = None
        self.err_reader: threading.Thread | None = None
        self._why_not_ready = "not started"

    def __enter__(self) -> Server:
        for attempt in range(3):  # the free port may be taken meanwhile: retry a little
            if self._start():
                return self
            if attempt < 2 and self.proc is not None and self.proc.returncode == 2:
                continue
            break
        self.__exit__()
        pytest.fail(f"riskd-{self.lang} did not become ready: {self._why_not_ready}", pytrace=False)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=EXIT_TIMEOUT)
        for t in (self.reader, self.err_reader):
            if t is not None:
                t.join(timeout=2)

    def _pump(self, stream: Any, lines: queue.Queue[str | None]) -> None:
        for raw in stream:  # ends at EOF, i.e. when the process exits
            lines.put(raw.decode("utf-8", "replace").rstrip("\r\n"))
        lines.put(None)

    def _pump_stderr(self, stream: Any) -> None:
        for chunk in iter(lambda: stream.read1(4096), b""):
            self.errors += chunk
            del self.errors[:-4000]

    def _start(self) -> bool:
        self.port = free_port()
        self.lines = queue.Queue()
        self.errors.clear()
        self.proc = subprocess.Popen(
            [str(self.path), "--listen", f"127.0.0.1:{self.port}", *flag_args()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.reader = threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines), daemon=True)
        self.reader.start()
        self.err_reader = threading.Thread(target=self._pump_stderr, args=(self.proc.stderr,), daemon=True)
        self.err_reader.start()
        try:
            line = self.lines.get(timeout=READY_TIMEOUT)
        except queue.Empty:
            self._why_not_ready = f"no line on stdout within {READY_TIMEOUT} s"
            return False
        if line is None:
            self.proc.wait(timeout=EXIT_TIMEOUT)
            self._why_not_ready = f"exited with {self.proc.returncode}; stderr: {self.stderr_text()!r}"
            return False
        want = (
            f"READY riskd-{self.lang} listen=127.0.0.1:{self.port} accounts={FLAGS['accounts']} "
            f"window={FLAGS['window']} rules={FLAGS['rules']}"
        )
        if line != want:
            self._why_not_ready = f"first stdout line is {line!r}, expected {want!r}"
            return False
        return True

    def stderr_text(self) -> str:
        if self.err_reader is not None:
            self.err_reader.join(timeout=1)  # it ends once the process has exited
        return self.errors.decode("utf-8", "replace")[-2000:]

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=IO_TIMEOUT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def terminate(self, sig: signal.Signals = signal.SIGTERM) -> dict[str, Any]:
        """Signal the server, check it exits 0 with a JSON summary, return the summary."""
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"riskd-{self.lang} still running {EXIT_TIMEOUT} s after {sig.name}")
        assert self.reader is not None
        self.reader.join(timeout=2)
        out: list[str] = []
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                break
            if line is not None and line.strip():
                out.append(line)
        assert code == 0, f"exit code {code} after {sig.name}; stderr: {self.stderr_text()!r}"
        assert out, f"nothing on stdout after {sig.name}"
        try:
            summary = json.loads(out[-1])
        except json.JSONDecodeError as e:
            pytest.fail(f"last stdout line is not JSON ({e}): {out[-1]!r}")
        assert isinstance(summary, dict), summary
        assert summary.get("lang") == self.lang, summary
        for key in ("requests", "malformed", "rss_hwm_bytes"):
            assert isinstance(summary.get(key), int), f"{key} missing or not an integer: {summary}"
        assert summary["rss_hwm_bytes"] > 0, summary
        if self.lang == "go":
            for key in ("gc_cycles", "gc_pause_max_us"):
                assert key in summary, f"{key} missing: {summary}"
        return summary


def round_trip(sock: socket.socket, i: int) -> None:
    request, want = CASES[i]
    try:
        sock.sendall(frame(request))
        got = read_frame(sock)
    except OSError as e:
        pytest.fail(f"case {i}: no response ({e!r}); request {request.hex()}")
    if got != want:
        pytest.fail(
            f"case {i} of {len(CASES)}: wrong response\n request {request.hex()}\n"
            f" got      {got.hex()}\n expected {want.hex()}"
        )


@pytest.mark.parametrize("lang", LANGS)
def test_vectors_on_one_connection(lang: str) -> None:
    with Server(lang) as srv:
        with srv.connect() as sock:
            for i in range(len(CASES)):
                round_trip(sock, i)
        summary = srv.terminate()
    assert summary["requests"] == len(CASES), summary
    assert summary["malformed"] == 0, summary


@pytest.mark.parametrize("lang", LANGS)
def test_malformed_frame_closes_only_its_connection(lang: str) -> None:
    """Each bad frame goes on its own connection; between them the good connection
    carries on with the vectors in order (a rejected frame must not touch the state)."""
    with Server(lang) as srv:
        with srv.connect() as good:
            round_trip(good, 0)
            for j, (why, bad_frame) in enumerate(MALFORMED):
                with srv.connect() as bad:
                    with contextlib.suppress(OSError):  # the server may close before all is sent
                        bad.sendall(bad_frame)
                        (declared,) = struct.unpack(">I", bad_frame[:4])
                        if 1 <= declared <= MAX_FRAME and len(bad_frame) - 4 < declared:
                            bad.shutdown(socket.SHUT_WR)  # truncated: the client goes away mid-frame
                    problem = closed_by_peer(bad, CLOSE_TIMEOUT)
                assert problem is None, f"malformed frame ({why}) {bad_frame.hex()}: {problem}"
                round_trip(good, j + 1)
        summary = srv.terminate()
    assert summary["requests"] == len(MALFORMED) + 1, summary
    # "A connection closed mid-frame (truncated) is dropped the same way": counted too.
    assert summary["malformed"] == len(MALFORMED), summary


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
@pytest.mark.parametrize("lang", LANGS)
def test_signal_closes_open_connections(lang: str, sig: signal.Signals) -> None:
    with Server(lang) as srv:
        idle, partial = srv.connect(), srv.connect()
        with idle, partial:
            round_trip(idle, 0)
            partial.sendall(frame(CASES[1][0])[:10])  # a request cut short, never finished
            time.sleep(0.1)
            summary = srv.terminate(sig)
            for name, sock in (("idle", idle), ("mid-frame", partial)):
                problem = closed_by_peer(sock, CLOSE_TIMEOUT)
                assert problem is None, f"{name} connection after {sig.name}: {problem}"
    assert summary["requests"] == 1, summary


# Each case changes one thing in an otherwise valid command line (no flag is repeated).
BAD_ARGS = {
    "unknown-flag": {"--no-such-flag": "1"},
    "workers-0": {"--workers": "0"},
    "window-0": {"--window": "0"},
    "merchants-0": {"--merchants": "0"},
    "rules-0": {"--rules": "0"},
    "bad-address": {"--listen": "not-an-address"},
}


@pytest.mark.parametrize("case", list(BAD_ARGS))
@pytest.mark.parametrize("lang", LANGS)
def test_bad_command_line_exits_2(lang: str, case: str) -> None:
    opts = {"--listen": "127.0.0.1:0", **{f"--{k}": str(v) for k, v in FLAGS.items()}, **BAD_ARGS[case]}
    args = [x for kv in opts.items() for x in kv]
    try:
        proc = subprocess.run(
            [str(binary(lang)), *args], stdin=subprocess.DEVNULL, capture_output=True, timeout=5, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"riskd-{lang} {' '.join(args)}: still running after 5 s, expected exit 2")
    assert proc.returncode == 2, (
        f"riskd-{lang} {' '.join(args)}: exit {proc.returncode}, expected 2; stderr {proc.stderr[-500:]!r}"
    )
    assert proc.stderr.strip(), "expected a message on stderr"
    assert b"READY" not in proc.stdout
