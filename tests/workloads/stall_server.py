#!/usr/bin/env python3
"""A tiny riskd-protocol server for the load-generator tests (stdlib only).

It answers every TXN with a valid DECISION frame (decision 0, score 0, no rules) and
stalls ALL answering once, for --stall-ms milliseconds, starting --stall-at seconds
after the first request it receives: every answer due in that window is held back
until the window ends, as a stop-the-world GC pause would do. A load generator that
corrects for coordinated omission must see the stall in its latency tail.

Extra knobs used by the error-accounting test: --drop-every N makes every N-th request
(counted over all connections) be dropped: after --drop-delay-ms the connection is
closed without an answer.

Prints ``READY stall-server listen=HOST:PORT`` once listening; exits 0 on SIGTERM or
SIGINT. See workloads/riskd/PROTOCOL.md for the wire format.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import struct
import sys
import threading
import time

TXN_LEN = 47
HEADER = struct.Struct(">I")
TXN = struct.Struct(">BQQIQ2sQQ")
DECISION = struct.Struct(">IBQBHHB")  # length, type, request_id, decision, score, fired, listed


class State:
    def __init__(self, stall_at: float, stall_ms: float, drop_every: int, drop_delay_ms: float) -> None:
        self.lock = threading.Lock()
        self.first: float | None = None
        self.stall_at = stall_at
        self.stall_s = stall_ms / 1000.0
        self.drop_every = drop_every
        self.drop_delay_s = drop_delay_ms / 1000.0
        self.count = 0
        self.stalled = False

    def on_request(self) -> tuple[float, bool]:
        """Returns (seconds to hold this answer, drop this request)."""
        now = time.monotonic()
        with self.lock:
            if self.first is None:
                self.first = now
            self.count += 1
            drop = self.drop_every > 0 and self.count % self.drop_every == 0
            start = self.first + self.stall_at
            end = start + self.stall_s
            hold = end - now if self.stall_s > 0 and start <= now < end else 0.0
            if hold > 0 and not self.stalled:
                self.stalled = True
                print(
                    f"stall-server: stalling all answers for {hold * 1000:.0f} ms",
                    file=sys.stderr,
                    flush=True,
                )
        return hold, drop


def recv_exact(conn: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def serve_conn(conn: socket.socket, state: State) -> None:
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while True:
            head = recv_exact(conn, 4)
            if head is None:
                return
            (length,) = HEADER.unpack(head)
            if length != TXN_LEN:
                return  # malformed for this server: close without answering
            payload = recv_exact(conn, length)
            if payload is None or payload[0] != 0x01:
                return
            request_id = TXN.unpack(payload)[1]
            hold, drop = state.on_request()
            if hold > 0:
                time.sleep(hold)
            if drop:
                time.sleep(state.drop_delay_s)
                return
            conn.sendall(DECISION.pack(15, 0x81, request_id, 0, 0, 0, 0))
    except OSError:
        return
    finally:
        conn.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (port 0 = any free port)")
    ap.add_argument("--stall-at", type=float, default=2.0, help="seconds after the first request")
    ap.add_argument("--stall-ms", type=float, default=200.0, help="length of the one stall (0 = none)")
    ap.add_argument("--drop-every", type=int, default=0, help="drop every N-th request (0 = never)")
    ap.add_argument("--drop-delay-ms", type=float, default=0.0, help="wait this long before dropping")
    a = ap.parse_args()
    host, _, port = a.listen.rpartition(":")
    if not host or not port.isdigit() or a.stall_ms < 0 or a.stall_at < 0 or a.drop_every < 0:
        ap.error("bad value")

    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.signal(signal.SIGINT, lambda *_: os._exit(0))

    state = State(a.stall_at, a.stall_ms, a.drop_every, a.drop_delay_ms)
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, int(port)))
    srv.listen(128)
    h, p = srv.getsockname()[:2]
    print(f"READY stall-server listen={h}:{p}", flush=True)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve_conn, args=(conn, state), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
