"""Tuning this machine for real, and putting every knob back exactly.

Each test starts from deliberately unusual values (zone_reclaim_mode 1, THP always,
numa_balancing 1, …) so that a restore cannot pass by writing defaults, and the
``machine`` fixture puts the machine's true values back in a ``finally`` whatever
happens. These tests need root and fail (never skip) without it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from labctl.state import StateStore
from tests.conftest import LABCTL, run_labctl
from tests.sandbox.conftest import SandboxHandle, make_sandbox
from tests.tuning.helpers import ROOT, bracketed, read_real, real_snapshot, sysctl

pytestmark = [pytest.mark.integration, pytest.mark.root]

LOCAL = str(ROOT / "inventories" / "local.yml")
THP = "/sys/kernel/mm/transparent_hugepage"
LIMITS = "/etc/security/limits.d/90-labctl-memlock.conf"

# Non-default starting values; each is something a profile here changes.
UNUSUAL = {
    "kernel.numa_balancing": "1",
    "vm.zone_reclaim_mode": "1",
    "kernel.perf_event_paranoid": "0",
    "kernel.io_uring_disabled": "1",
    "thp.enabled": "always",
    "thp.defrag": "defer",
}


def write_knob(key: str, value: str) -> None:
    if key.startswith("thp."):
        Path(f"{THP}/{key[4:]}").write_text(value + "\n")
    elif key.startswith("/"):
        Path(key).write_text(value + "\n")
    else:
        Path(sysctl(key)).write_text(value + "\n")


def put_back(saved: dict[str, Any]) -> None:
    """Write the machine's saved values back, directly (independent of labctl)."""
    now = real_snapshot()
    for key, value in saved.items():
        if now.get(key) == value:
            continue
        if key == "limits.memlock":
            if value is None:
                Path(LIMITS).unlink(missing_ok=True)
            else:
                Path(LIMITS).write_text(value)
        elif key.endswith(("_bytes", "_ratio")) and key.startswith("vm.dirty"):
            if value != "0":  # only the active member of a pair is ever written
                write_knob(key, value)
        else:
            write_knob(key, str(value))


@pytest.fixture
def machine() -> Iterator[dict[str, Any]]:
    """Start from unusual values; yield the snapshot to compare with; always restore the machine."""
    if os.geteuid() != 0:
        pytest.fail("tuning integration tests need root (they write /proc/sys and /sys)")
    original = real_snapshot()
    missing = [k for k in UNUSUAL if k not in original]
    if missing:
        pytest.fail(f"this kernel lacks knobs the tests rely on: {missing}")
    try:
        for key, value in UNUSUAL.items():
            write_knob(key, value)
        start = real_snapshot()
        for key, value in UNUSUAL.items():
            assert str(start[key]) == value, key
        yield start
    finally:
        put_back(original)
        assert real_snapshot() == original, "the machine was not put back"


def labctl_json(*args: str, env: dict[str, str] | None = None, code: int = 0) -> dict[str, Any]:
    res = run_labctl(*args, "--json", env=env)
    assert res.code == code, f"labctl {' '.join(args)} exited {res.code}: {res.stdout}\n{res.stderr}"
    return json.loads(res.stdout)


def state(data_dir: Path, host: str) -> dict[str, Any]:
    return StateStore(data_dir).get(host)


def data_dir() -> Path:
    return Path(os.environ["LABCTL_DATA_DIR"])


def test_tune_verify_show_teardown_restores_every_knob_exactly(
    machine: dict[str, Any], tmp_path: Path
) -> None:
    before = machine
    doc = labctl_json("tune", "-i", LOCAL, "--profile", "low-noise", "--profile", "io-uring")
    host = doc["hosts"]["localhost"]
    assert host["ok"] and not host["failed"]
    now = real_snapshot()
    assert now["kernel.numa_balancing"] == "0" and now["vm.zone_reclaim_mode"] == "0"
    assert now["thp.enabled"] == "madvise" and now["thp.defrag"] == "madvise"
    assert now["kernel.perf_event_paranoid"] == "1" and now["kernel.io_uring_disabled"] == "0"
    assert "* hard memlock unlimited" in (read_real(LIMITS) or "")
    assert host["changed"] == 7
    knobs = host["knobs"]
    assert knobs["vm.zone_reclaim_mode"] == {
        "status": "changed",
        "before": 1,
        "wanted": 0,
        "after": 0,
        "available": True,
        "reason": "",
    }
    if not any(k.endswith("scaling_governor") for k in before):  # no cpufreq (a VM): reported, not a failure
        assert {"cpu.governor", "cpu.turbo"} <= set(host["not_available"])
        assert "cpufreq" in knobs["cpu.governor"]["reason"]
    # the snapshot was stored, with first originals, and the owned file recorded
    st = state(data_dir(), "localhost")
    assert st["connection"]["ansible_connection"] == "local"
    assert st["tuning"]["knobs"]["thp.enabled"]["original"] == "always"
    assert st["owned_files"] == [LIMITS]

    # a second, different profile keeps the FIRST originals
    strict = labctl_json("tune", "-i", LOCAL, "--profile", "numa-strict")
    assert strict["hosts"]["localhost"]["changed"] == 2  # THP enabled + defrag -> never
    assert bracketed(read_real(f"{THP}/enabled")) == "never"

    write_knob("vm.zone_reclaim_mode", "2")  # someone changes a tuned knob behind labctl's back
    show = labctl_json("tune", "--verify", code=1)  # --verify reports what --show does, from state alone
    assert show["drifted"] == {"localhost": ["vm.zone_reclaim_mode"]}
    rows = show["hosts"]["localhost"]["knobs"]
    assert rows["thp.enabled"]["original"] == "always"  # the first original, not low-noise's madvise
    assert rows["thp.enabled"]["current"] == "never" and rows["thp.enabled"]["wanted"] == "never"
    assert not rows["thp.enabled"]["drifted"]
    zr = rows["vm.zone_reclaim_mode"]
    assert (zr["original"], zr["current"], zr["wanted"], zr["drifted"]) == (1, 2, 0, True)
    assert show["hosts"]["localhost"]["profiles"] == ["low-noise", "io-uring", "numa-strict"]

    # what the deploy and run stages record (other modules write these keys): teardown undoes them too
    root = tmp_path / "srv" / "labctl"
    (root / "bin").mkdir(parents=True)
    sleeper = root / "bin" / "riskd-sleep"
    shutil.copy("/bin/sleep", sleeper)
    workload = subprocess.Popen([str(sleeper), "300"])
    pinned = subprocess.Popen(["numactl", "--cpunodebind=0", str(sleeper), "301"])  # runs what it execs
    deadline = time.monotonic() + 10
    while not Path(f"/proc/{pinned.pid}/cmdline").read_bytes().startswith(str(sleeper).encode()):
        assert time.monotonic() < deadline, "numactl did not exec the workload"
        time.sleep(0.02)
    extra = tmp_path / "99-labctl-test.conf"
    extra.write_text("x\n")

    def record(doc: dict[str, Any]) -> None:
        doc["deployed"] = {
            "root": str(root),
            "artifacts": {"riskd-sleep": {"path": str(sleeper), "sha256": "x"}},
        }
        doc["processes"] = [
            {"pid": workload.pid, "argv0": str(sleeper), "run_id": "r1"},
            {"pid": pinned.pid, "argv0": "numactl", "run_id": "r1"},
        ]
        doc["owned_files"] = [*doc.get("owned_files", []), str(extra)]

    StateStore(data_dir()).update("localhost", record)
    try:
        dry = labctl_json("teardown", "--check")
        assert dry["hosts"]["localhost"]["knobs"]["thp.enabled"]["status"] == "would restore"
        assert dry["hosts"]["localhost"]["processes"] == {
            str(workload.pid): "would stop",
            str(pinned.pid): "would stop",
        }
        assert workload.poll() is None and root.is_dir() and extra.exists()
        assert bracketed(read_real(f"{THP}/enabled")) == "never"
        assert state(data_dir(), "localhost")["tuning"]["knobs"]["thp.enabled"]["original"] == "always"

        down = labctl_json("teardown", "-i", LOCAL)
        host = down["hosts"]["localhost"]
        assert host["ok"], down
        assert host["files"] == {LIMITS: "absent", str(extra): "removed"}  # the knob restore removed LIMITS
        assert host["processes"] == {str(workload.pid): "stopped", str(pinned.pid): "stopped"}
        assert host["deployed"]["status"] == "removed"
        assert workload.wait(10) == -signal.SIGTERM and pinned.wait(10) == -signal.SIGTERM
        assert not root.exists() and not extra.exists()
    finally:
        for p in (workload, pinned):
            if p.poll() is None:
                p.kill()
                p.wait()
    assert real_snapshot() == before
    assert state(data_dir(), "localhost") == {"name": "localhost", "connection": st["connection"]}


def test_check_changes_nothing_not_even_the_state(machine: dict[str, Any]) -> None:
    doc = labctl_json("tune", "-i", LOCAL, "--profile", "numa-strict", "--check")
    host = doc["hosts"]["localhost"]
    assert host["ok"] and host["changed"] == 5 and doc["check"] is True
    assert host["knobs"]["thp.enabled"]["status"] == "would change"
    assert real_snapshot() == machine
    assert StateStore(data_dir()).hosts() == []


def test_knob_the_host_refuses_is_caught_before_any_write(machine: dict[str, Any], tmp_path: Path) -> None:
    """This VM has no hardware NMI watchdog: the kernel makes kernel.nmi_watchdog read-only."""
    assert read_real(sysctl("kernel.nmi_watchdog")) == "0\n", "the test relies on nmi_watchdog being 0"
    profile = tmp_path / "refused.yaml"
    profile.write_text("include: [low-noise]\nknobs:\n  kernel.nmi_watchdog: 1\n")
    doc = labctl_json("tune", "-i", LOCAL, "--profile", str(profile), code=1)
    host = doc["hosts"]["localhost"]
    assert not host["ok"] and "kernel.nmi_watchdog: not writable" in host["msg"]
    assert "nothing was changed" in host["msg"]
    assert real_snapshot() == machine
    assert StateStore(data_dir()).hosts() == []


@pytest.fixture
def bench_group() -> Iterator[str]:
    name = f"labctl-t{os.getpid() % 100000}"
    subprocess.run(["groupadd", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["groupdel", name], check=False, capture_output=True)


def test_host_failing_mid_tune_is_rolled_back(
    machine: dict[str, Any], tmp_path: Path, bench_group: str
) -> None:
    """The io_uring group disappears after the NUMA knobs were written: the io_uring role fails,
    and every knob written by this command is put back before labctl exits 1."""
    profile = tmp_path / "group.yaml"
    profile.write_text(f"include: [numa-strict]\nknobs:\n  kernel.io_uring_group: {bench_group}\n")
    env = {**os.environ, "LABCTL_TEST_PAUSE_AFTER_FIRST_WRITE": "4"}
    proc = subprocess.Popen(
        [str(LABCTL), "tune", "-i", LOCAL, "--profile", str(profile), "--json"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_first_write(proc)
        subprocess.run(["groupdel", bench_group], check=True)
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, out + err
    host = json.loads(out)["hosts"]["localhost"]
    assert "kernel.io_uring_group" in host["msg"] and "does not exist" in host["msg"]
    assert "rolled back 4 knob(s)" in host["msg"], host["msg"]
    assert real_snapshot() == machine
    assert "tuning" not in state(data_dir(), "localhost")


def wait_for_first_write(proc: subprocess.Popen[Any], timeout: float = 120) -> None:
    """Wait until kernel.numa_balancing (the first knob low-noise writes here) reads 0."""
    deadline = time.monotonic() + timeout
    while read_real(sysctl("kernel.numa_balancing")) != "0\n":
        assert proc.poll() is None, f"tune ended early: {proc.stderr.read() if proc.stderr else ''}"
        assert time.monotonic() < deadline, "the first write never happened"
        time.sleep(0.05)


def _orphans(data: Path) -> list[int]:
    """Processes (ansible-playbook and its workers) still running for this data dir."""
    needle = f"LABCTL_DATA_DIR={data}".encode()
    pids = []
    for env in Path("/proc").glob("[0-9]*/environ"):
        try:
            if needle in env.read_bytes().split(b"\0"):
                pids.append(int(env.parent.name))
        except OSError:
            continue
    return [p for p in pids if p != os.getpid()]


def _kill_orphans(data: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        pids = _orphans(data)
        if not pids:
            return
        for pid in pids:
            try:
                pgid = os.getpgid(pid)
                if pgid != os.getpgrp():
                    os.killpg(pgid, signal.SIGKILL)
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    raise AssertionError(f"processes for {data} survived SIGKILL: {_orphans(data)}")


def test_kill_9_between_first_and_last_write_then_teardown_from_state(
    machine: dict[str, Any], tmp_path: Path
) -> None:
    data = tmp_path / "crash-data"
    env = {**os.environ, "LABCTL_DATA_DIR": str(data), "LABCTL_TEST_PAUSE_AFTER_FIRST_WRITE": "120"}
    inv = tmp_path / "inventory.yml"
    shutil.copy(LOCAL, inv)
    proc = subprocess.Popen(
        [str(LABCTL), "tune", "-i", str(inv), "--profile", "low-noise", "--json"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_first_write(proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _kill_orphans(data)
    # killed in the pause: one knob written, the others not yet
    now = real_snapshot()
    assert now["vm.zone_reclaim_mode"] == "1" and now["thp.enabled"] == "always"
    st = StateStore(data).get("localhost")
    assert st["tuning"]["pending"]["profiles"] == ["low-noise"]
    assert st["tuning"]["knobs"]["kernel.numa_balancing"]["original"] == 1  # stored before the write
    # a new controller process, and the inventory is gone: teardown works from the state alone
    inv.unlink()
    res = run_labctl("teardown", "--json", env={"LABCTL_DATA_DIR": str(data)})
    assert res.code == 0, res.stdout + res.stderr
    assert res.json["hosts"]["localhost"]["ok"]
    assert res.json["hosts"]["localhost"]["knobs"]["kernel.numa_balancing"]["status"] == "restored"
    assert real_snapshot() == machine
    assert StateStore(data).get("localhost") == {"name": "localhost", "connection": st["connection"]}


@pytest.fixture(scope="module")
def sandbox1(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxHandle]:
    """One SSH sandbox host of our own (its own data dir), removed afterwards."""
    with make_sandbox(1, tmp_path_factory.mktemp("tuning-sandbox")) as handle:
        yield handle


def test_over_ssh_tune_then_teardown_from_state_after_the_inventory_is_gone(
    machine: dict[str, Any], sandbox1: SandboxHandle, tmp_path: Path
) -> None:
    data = tmp_path / "ssh-data"
    env = {"LABCTL_DATA_DIR": str(data)}
    inv = tmp_path / "lab.yml"
    shutil.copy(sandbox1.inventory, inv)
    name = sandbox1.hosts[0]
    doc = labctl_json("tune", "-i", str(inv), "--profile", "numa-strict", env=env)
    assert doc["hosts"][name]["ok"] and doc["hosts"][name]["changed"] == 5
    now = real_snapshot()  # a sandbox host shares this machine's kernel
    assert now["thp.enabled"] == "never" and now["vm.zone_reclaim_mode"] == "0"
    assert StateStore(data).get(name)["connection"]["ansible_user"] == "root"
    again = labctl_json("tune", "-i", str(inv), "--profile", "numa-strict", env=env)
    assert again["hosts"][name]["changed"] == 0  # a second tune with the same profile changes nothing
    verify = labctl_json("tune", "--verify", "-i", str(inv), env=env)
    assert verify["drifted"] == {}
    inv.unlink()
    down = labctl_json("teardown", env=env)
    assert down["hosts"][name]["ok"] and down["hosts"][name]["msg"] == "restored and verified"
    assert real_snapshot() == machine
    assert set(StateStore(data).get(name)) == {"name", "connection"}


def test_host_lost_mid_tune_stays_recorded_for_teardown(
    machine: dict[str, Any], sandbox1: SandboxHandle, tmp_path: Path
) -> None:
    data = tmp_path / "lost-data"
    name = sandbox1.hosts[0]
    env = {**os.environ, "LABCTL_DATA_DIR": str(data), "LABCTL_TEST_PAUSE_AFTER_FIRST_WRITE": "60"}
    proc = subprocess.Popen(
        [str(LABCTL), "tune", "-i", str(sandbox1.inventory), "--profile", "low-noise", "--json"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_first_write(proc)
        sandbox1.stop_host(name, everything=True)  # sshd and the module running under it are gone
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sandbox1.start_host(name)
    assert proc.returncode == 1, out + err
    msg = json.loads(out)["hosts"][name]["msg"]
    assert "labctl teardown" in msg, msg
    assert real_snapshot()["vm.zone_reclaim_mode"] == "1"  # killed after the first write only
    assert StateStore(data).get(name)["tuning"]["knobs"]["kernel.numa_balancing"]["original"] == 1
    down = labctl_json("teardown", "-i", str(sandbox1.inventory), env={"LABCTL_DATA_DIR": str(data)})
    assert down["hosts"][name]["ok"]
    assert real_snapshot() == machine
