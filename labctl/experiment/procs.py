"""Processes a run starts on hosts: servers, load generators and host samplers.

Every process is recorded in local state the moment it starts and forgotten once it
stopped, so `labctl teardown` can stop what a killed labctl left running.
"""

from __future__ import annotations

import contextlib
import signal
import time
from typing import Any

from labctl.remote import RemoteProcess, Runner
from labctl.state import StateStore

# Samples the host once a second for at most $1 seconds: entropy, load, context
# switches, memory. A fixed script; the only argument is a number.
SAMPLER_SCRIPT = r"""
end=$(( $(date +%s) + $1 ))
while [ "$(date +%s)" -lt "$end" ]; do
  echo "T $(date +%s%N)"
  echo "E $(cat /proc/sys/kernel/random/entropy_avail 2>/dev/null)"
  echo "L $(cat /proc/loadavg)"
  grep '^ctxt ' /proc/stat
  grep '^MemAvailable:' /proc/meminfo
  sleep 1
done
"""


def pin_prefix(numa_node: int | None, cpus: str | None) -> list[str]:
    """numactl/taskset prefix for a placement (empty when unpinned)."""
    if numa_node is not None and cpus:
        return ["numactl", f"--physcpubind={cpus}", f"--membind={numa_node}"]
    if numa_node is not None:
        return ["numactl", f"--cpunodebind={numa_node}", f"--membind={numa_node}"]
    if cpus:
        return ["taskset", "-c", cpus]
    return []


def parse_samples(text: str) -> list[dict[str, Any]]:
    """Turn the sampler's output into samples; ctxt becomes a per-second rate."""
    samples: list[dict[str, Any]] = []
    cur: dict[str, Any] | None = None
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        tag = parts[0]
        try:
            if tag == "T":
                # A garbled T line starts no sample, and its readings must not land on the previous one.
                cur = None
                cur = {"time_ns": int(parts[1])}
                samples.append(cur)
            elif cur is None:
                continue
            elif tag == "E" and len(parts) > 1:
                cur["entropy_avail"] = int(parts[1])
            elif tag == "L" and len(parts) >= 5:
                cur["load1"] = float(parts[1])
                cur["procs_running"] = int(parts[4].split("/")[0])
            elif tag == "ctxt" and len(parts) > 1:
                cur["_ctxt"] = int(parts[1])
            elif tag == "MemAvailable:" and len(parts) > 1:
                cur["mem_available_bytes"] = int(parts[1]) * 1024
        except (ValueError, IndexError):
            continue
    prev: dict[str, Any] | None = None
    for s in samples:
        if prev is not None and "_ctxt" in s and "_ctxt" in prev and s["time_ns"] > prev["time_ns"]:
            s["ctxt_per_s"] = (s["_ctxt"] - prev["_ctxt"]) / ((s["time_ns"] - prev["time_ns"]) / 1e9)
        prev = s
    for s in samples:
        s.pop("_ctxt", None)
    return [s for s in samples if len(s) > 1]


class ProcessTracker:
    """Start/stop processes through a Runner and keep local state in step."""

    def __init__(self, store: StateStore, host: str, runner: Runner, run_id: str) -> None:
        self.store, self.host, self.runner, self.run_id = store, host, runner, run_id
        self.live: list[RemoteProcess] = []

    def start(
        self,
        argv: list[str],
        env: dict[str, str],
        stdout_path: str,
        stderr_path: str,
        program: str | None = None,
    ) -> RemoteProcess:
        """Start ``argv`` and record it. ``program`` is what runs once a numactl/taskset wrapper has
        exec'd it; it is recorded as ``argv0`` so teardown recognises the process by its command line."""
        proc = self.runner.start(argv, env=env, stdout_path=stdout_path, stderr_path=stderr_path, cwd=None)
        self.live.append(proc)
        argv0 = program or argv[0]

        def add(doc: dict[str, Any]) -> None:
            doc.setdefault("processes", []).append({"pid": proc.pid, "argv0": argv0, "run_id": self.run_id})

        self.store.update(self.host, add)
        return proc

    def stop(self, proc: RemoteProcess, grace: float = 20.0) -> int | None:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL. Returns the exit code if known."""
        rc: int | None = None
        if self.runner.is_alive(proc):
            self.runner.signal(proc, signal.SIGTERM)
            rc = self.runner.wait(proc, grace)
            if rc is None and self.runner.is_alive(proc):
                self.runner.signal(proc, signal.SIGKILL)
                rc = self.runner.wait(proc, 5.0)
        else:
            rc = self.runner.wait(proc, 0.1)
        self._forget(proc)
        return rc

    def wait(self, proc: RemoteProcess, timeout: float) -> int | None:
        """Wait for a process to end by itself (interruptible: polls)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rc = self.runner.wait(proc, 0.5)
            if rc is not None or not self.runner.is_alive(proc):
                self._forget(proc)
                return rc
        return None

    def _forget(self, proc: RemoteProcess) -> None:
        if proc in self.live:
            self.live.remove(proc)

        def drop(doc: dict[str, Any]) -> None:
            doc["processes"] = [p for p in doc.get("processes", []) if p.get("pid") != proc.pid]
            if not doc["processes"]:
                doc.pop("processes")

        self.store.update(self.host, drop)

    def stop_all(self) -> None:
        for proc in list(self.live):
            # Best effort during cleanup: a process we cannot stop stays recorded for teardown.
            with contextlib.suppress(Exception):
                self.stop(proc, grace=5.0)
