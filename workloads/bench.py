#!/usr/bin/env python3
"""Benchmark the riskd servers with loadgen: `make bench-workloads`.

For each server (build/bin/riskd-<lang>, default state) this finds the capacity with
`loadgen --max` (closed loop), then measures latency open loop at fixed fractions of
the LOWEST capacity (so every variant sees the same offered load), restarting the
server for every cell and interleaving the variants level by level. It prints one
table and writes the same data as JSON (default build/bench-workloads.json).

Stdlib only. Loopback only. Every subprocess and the whole run are bounded in time.
A cell whose achieved rate is more than 1 % below the requested one is marked
saturated; errors and timeouts are reported per cell.
"""

from __future__ import annotations

import argparse
import json
import platform
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / "build" / "bin"
LANGS = ("go", "rust", "cpp")


class BenchError(Exception):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One riskd process on a free loopback port, stopped with SIGTERM."""

    def __init__(self, lang: str, ready_timeout: float, extra: list[str]) -> None:
        self.lang = lang
        self.port = free_port()
        self.proc = subprocess.Popen(
            [str(BIN / f"riskd-{lang}"), "--listen", f"127.0.0.1:{self.port}", *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + ready_timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                raise BenchError(f"riskd-{lang}: no READY within {ready_timeout:.0f} s")
            ready, _, _ = select.select([self.proc.stdout], [], [], min(left, 0.5))
            if ready:
                line = self.proc.stdout.readline()
                if line.startswith("READY"):
                    self.ready_line = line.strip()
                    return
                if not line:
                    err = self.kill()
                    raise BenchError(f"riskd-{lang} exited before READY: {err[-500:]}")
            elif self.proc.poll() is not None:
                err = self.kill()
                raise BenchError(f"riskd-{lang} exited before READY: {err[-500:]}")

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def kill(self) -> str:
        self.proc.kill()
        _, err = self.proc.communicate(timeout=10)
        return err or ""

    def stop(self) -> dict[str, Any]:
        """SIGTERM; returns the server's final JSON line ({} if there was none)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()
            return {"error": "did not exit within 20 s of SIGTERM"}
        lines = [ln for ln in (out or "").splitlines() if ln.strip()]
        try:
            stats = json.loads(lines[-1]) if lines else {}
        except json.JSONDecodeError:
            stats = {"error": f"last line is not JSON: {lines[-1][:200]}"}
        return stats if isinstance(stats, dict) else {}


def run_loadgen(target: str, args: list[str], timeout: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-") as d:
        summary = Path(d) / "summary.json"
        cmd = [str(BIN / "loadgen"), "--target", target, "--summary-json", str(summary), *args]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as e:
            raise BenchError(f"loadgen did not finish within {timeout:.0f} s") from e
        if r.returncode != 0 or not summary.exists():
            raise BenchError(f"loadgen exit {r.returncode}: {r.stderr.strip()[-500:]}")
        data: dict[str, Any] = json.loads(summary.read_text())
        return data


def cell(
    lang: str, loadgen_args: list[str], run_s: float, a: argparse.Namespace, deadline: float
) -> dict[str, Any]:
    """Fresh server, one loadgen run, server stopped; returns loadgen summary + server stats."""
    if time.monotonic() + run_s + 30 > deadline:
        raise BenchError("time budget exhausted")
    srv = Server(lang, a.ready_timeout, a.server_arg)
    try:
        summary = run_loadgen(srv.target, loadgen_args, timeout=run_s + 60)
    finally:
        stats = srv.stop()
    summary["server"] = stats
    return summary


def fmt_int(v: Any) -> str:
    return "-" if v is None else f"{v:,.0f}"


def print_table(result: dict[str, Any]) -> None:
    headers = [
        "lang",
        "capacity rps",
        "load",
        "requested rps",
        "achieved rps",
        "p50 us",
        "p99 us",
        "p99.9 us",
        "max us",
        "errors",
        "timeouts",
        "note",
    ]
    rows: list[list[str]] = []
    for lang in result["langs"]:
        cap = result["capacity"].get(lang, {})
        first = True
        cap_txt = fmt_int(cap.get("achieved_rps")) if "error" not in cap else "error"
        cells = [c for c in result["cells"] if c["lang"] == lang]
        if not cells:
            rows.append([lang, cap_txt, "-", "-", "-", "-", "-", "-", "-", "-", "-", cap.get("error", "")])
        for c in cells:
            if "error" in c:
                row = [lang, cap_txt if first else "", f"{c['level_pct']}%", fmt_int(c["requested_rps"])]
                rows.append(row + ["-"] * 7 + [c["error"][:60]])
            else:
                note = "SATURATED" if c["saturated"] else ""
                rows.append(
                    [
                        lang,
                        cap_txt if first else "",
                        f"{c['level_pct']}%",
                        fmt_int(c["requested_rps"]),
                        f"{c['achieved_rps']:,.1f}",
                        fmt_int(c["p50_us"]),
                        fmt_int(c["p99_us"]),
                        fmt_int(c["p999_us"]),
                        fmt_int(c["max_us"]),
                        str(c["errors"]),
                        str(c["timeouts"]),
                        note,
                    ]
                )
            first = False
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cols: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i in (0, 2, 11) else c.rjust(w)
            for i, (c, w) in enumerate(zip(cols, widths, strict=True))
        )

    base = result.get("base_capacity_rps")
    print()
    print(
        f"riskd latency (open loop, {result['settings']['connections']} connections, "
        f"{result['settings']['duration_s']} s per cell; load = % of the lowest capacity"
        + (f", {base:,.0f} rps)" if base else ")")
    )
    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print(line(r))
    print()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--langs", default=",".join(LANGS), help="comma-separated (default go,rust,cpp)")
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--capacity-duration", type=float, default=5.0)
    ap.add_argument("--capacity-warmup", type=float, default=2.0)
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds per latency cell")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--levels", default="25,50,75", help="percent of the lowest capacity")
    ap.add_argument("--ready-timeout", type=float, default=120.0, help="seconds to wait for READY")
    ap.add_argument("--budget", type=float, default=1800.0, help="give up after this many seconds")
    ap.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="extra riskd flag (repeatable, e.g. --server-arg=--workers=2)",
    )
    ap.add_argument("--out", default=str(ROOT / "build" / "bench-workloads.json"))
    a = ap.parse_args()

    langs = [x.strip() for x in a.langs.split(",") if x.strip()]
    levels = [int(x) for x in a.levels.split(",") if x.strip()]
    if not langs or not levels or any(not 0 < lv <= 100 for lv in levels) or a.connections < 1:
        ap.error("bad --langs, --levels or --connections")
    if not (BIN / "loadgen").is_file():
        print(f"bench: {BIN / 'loadgen'} is missing: run `make workloads`", file=sys.stderr)
        return 1
    missing = [lang for lang in langs if not (BIN / f"riskd-{lang}").is_file()]
    for lang in missing:
        print(f"bench: {BIN / f'riskd-{lang}'} is missing: run `make workloads`", file=sys.stderr)
    langs = [lang for lang in langs if lang not in missing]
    if not langs:
        return 1

    deadline = time.monotonic() + a.budget
    result: dict[str, Any] = {
        "settings": {
            "connections": a.connections,
            "capacity_duration_s": a.capacity_duration,
            "capacity_warmup_s": a.capacity_warmup,
            "duration_s": a.duration,
            "warmup_s": a.warmup,
            "levels_pct": levels,
            "server_args": a.server_arg,
        },
        "host": {
            "machine": platform.machine(),
            "kernel": platform.release(),
            "python": platform.python_version(),
        },
        "langs": langs,
        "missing": missing,
        "capacity": {},
        "cells": [],
    }
    conns = ["--connections", str(a.connections)]

    # 1. Capacity, closed loop.
    for lang in langs:
        print(f"bench: capacity of riskd-{lang} ...", file=sys.stderr, flush=True)
        try:
            s = cell(
                lang,
                ["--max", "--duration", str(a.capacity_duration), "--warmup", str(a.capacity_warmup), *conns],
                a.capacity_duration + a.capacity_warmup,
                a,
                deadline,
            )
            result["capacity"][lang] = s
            print(f"bench:   {s['achieved_rps']:,.0f} rps, {s['errors']} errors", file=sys.stderr, flush=True)
        except BenchError as e:
            result["capacity"][lang] = {"error": str(e)}
            print(f"bench:   failed: {e}", file=sys.stderr, flush=True)

    caps = [
        c["achieved_rps"] for c in result["capacity"].values() if "error" not in c and c["achieved_rps"] > 0
    ]
    if not caps:
        print("bench: no capacity measured", file=sys.stderr)
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
        return 1
    base = min(caps)
    result["base_capacity_rps"] = base

    # 2. Latency at fixed fractions of the lowest capacity, variants interleaved.
    for level in levels:
        rate = round(base * level / 100.0, 1)
        for lang in langs:
            if "error" in result["capacity"][lang]:
                continue
            print(f"bench: riskd-{lang} at {level}% = {rate:,.0f} rps ...", file=sys.stderr, flush=True)
            entry: dict[str, Any] = {"lang": lang, "level_pct": level, "requested_rps": rate}
            try:
                s = cell(
                    lang,
                    ["--rate", str(rate), "--duration", str(a.duration), "--warmup", str(a.warmup), *conns],
                    a.duration + a.warmup,
                    a,
                    deadline,
                )
                entry.update(s)
                entry["saturated"] = s["achieved_rps"] < 0.99 * rate
                print(
                    f"bench:   p50 {s['p50_us']} p99 {s['p99_us']} p99.9 {s['p999_us']} us, "
                    f"{s['achieved_rps']:,.1f} rps, {s['errors']} errors, {s['timeouts']} timeouts",
                    file=sys.stderr,
                    flush=True,
                )
            except BenchError as e:
                entry["error"] = str(e)
                print(f"bench:   failed: {e}", file=sys.stderr, flush=True)
            result["cells"].append(entry)

    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    print(f"bench: written {a.out}", file=sys.stderr)
    failed = missing or any("error" in c for c in result["cells"]) or len(caps) < len(langs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
