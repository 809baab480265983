"""Real SSH against the shared 3-host sandbox: the SSH runner, doctor, provision, fault detection."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from labctl import remote
from labctl.inventory import Host, load_inventory
from tests.conftest import run_labctl
from tests.sandbox.conftest import SandboxHandle
from tests.sandbox.runner_checks import (
    check_files,
    check_killed_process_and_early_exit,
    check_process_lifecycle,
    check_run,
)

pytestmark = [pytest.mark.integration, pytest.mark.root]


def _host(sb: SandboxHandle, name: str) -> Host:
    return load_inventory(sb.inventory).hosts[name]


def _variant(
    sb: SandboxHandle, tmp_path: Path, *, known_hosts: Path | None = None, key: Path | None = None
) -> Path:
    """A copy of the sandbox inventory with another known_hosts file and/or private key."""
    doc: dict[str, Any] = yaml.safe_load(sb.inventory.read_text())
    v = doc["sandbox"]["vars"]
    if known_hosts is not None:
        v["labctl_known_hosts"] = str(known_hosts)
        v["ansible_ssh_common_args"] = f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes"
    # no reuse of a ControlPersist connection that an earlier test opened with the real key
    v["ansible_control_path_dir"] = str(tmp_path / "cp")
    if key is not None:
        v["ansible_ssh_private_key_file"] = str(key)
    out = tmp_path / "variant.yml"
    out.write_text(yaml.safe_dump(doc))
    return out


def _keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


# ---------------------------------------------------------------- the hosts and the SSH runner


def test_each_host_has_its_own_name_address_and_host_key(sandbox3: SandboxHandle) -> None:
    assert sandbox3.hosts == ["sbx-1", "sbx-2", "sbx-3"]
    fingerprints = set()
    for name in sandbox3.hosts:
        with remote.SshRunner.connect(_host(sandbox3, name)) as r:
            assert isinstance(r, remote.SshRunner)
            assert r.run(["hostname"], 30).stdout.strip() == name
            assert (
                sandbox3.addresses[name]
                in r.run(["ip", "-4", "-o", "addr", "show", "dev", "eth0"], 30).stdout
            )
            fingerprints.add(remote.fingerprint(r.server_key))
    assert len(fingerprints) == 3
    assert len(sandbox3.known_hosts.read_text().splitlines()) == 3  # type: ignore[union-attr]


def test_ssh_runner_run(sandbox3: SandboxHandle, tmp_path: Path) -> None:
    with remote.runner_for(_host(sandbox3, "sbx-1")) as r:
        check_run(r, str(tmp_path))  # the hosts share this machine's file system


def test_ssh_runner_process_lifecycle(sandbox3: SandboxHandle, tmp_path: Path) -> None:
    with remote.runner_for(_host(sandbox3, "sbx-2")) as r:
        check_process_lifecycle(r, str(tmp_path))
        check_killed_process_and_early_exit(r, str(tmp_path))


def test_ssh_runner_files(sandbox3: SandboxHandle, tmp_path: Path) -> None:
    remote_dir = tmp_path / "remote"
    remote_dir.mkdir()
    with remote.runner_for(_host(sandbox3, "sbx-3")) as r:
        check_files(r, str(remote_dir), tmp_path)


def test_a_started_process_survives_the_connection(sandbox3: SandboxHandle, tmp_path: Path) -> None:
    host = _host(sandbox3, "sbx-1")
    with remote.runner_for(host) as r:
        proc = r.start(["sleep", "30"], stdout_path=f"{tmp_path}/o", stderr_path=f"{tmp_path}/e")
    with remote.runner_for(host) as r:  # a new connection, as after a labctl restart
        assert r.is_alive(remote.RemoteProcess.from_json(proc.to_json()))
        assert r.signal(proc)
        assert r.wait(proc, 10) == 143


# ---------------------------------------------------------------- doctor


def test_doctor_is_ok_on_all_hosts(sandbox3: SandboxHandle) -> None:
    res = run_labctl("doctor", "-i", str(sandbox3.inventory), "--json")
    assert res.code == 0, res.stderr
    doc = res.json
    assert doc["ok"] is True and sorted(doc["hosts"]) == sandbox3.hosts
    for name, h in doc["hosts"].items():
        assert (h["ok"], h["changed"], h["failed"], h["unreachable"]) == (True, 0, False, False), h["msg"]
        checks = h["checks"]
        for key in ("reachable", "ssh", "python3", "privileges", "topology", "toolchains"):
            assert checks[key]["status"] == "ok", (name, key, checks[key])
        assert checks["privileges"]["data"]["root"] is True
        assert checks["topology"]["data"]["numa_nodes"] >= 1
        assert "mismatch" not in checks["topology"]["data"]  # the inventory's labctl_numa_nodes is right
        assert {"io_uring", "perf", "kernel"} <= set(checks)


def test_doctor_reports_a_stopped_sshd_as_refused(sandbox3: SandboxHandle) -> None:
    sandbox3.stop_host("sbx-2")
    try:
        with pytest.raises(remote.ConnectRefused):
            remote.connect(_host(sandbox3, "sbx-2"), timeout=5)
        res = run_labctl("doctor", "-i", str(sandbox3.inventory), "--json")
        assert res.code == 1
        hosts = res.json["hosts"]
        assert hosts["sbx-2"]["unreachable"] is True and hosts["sbx-2"]["ok"] is False
        assert "connection refused" in hosts["sbx-2"]["msg"]
        assert hosts["sbx-2"]["checks"]["reachable"]["data"]["reason"] == "refused"
        assert hosts["sbx-1"]["ok"] and hosts["sbx-3"]["ok"]
        assert res.json["failed_hosts"] == ["sbx-2"]
        assert "sbx-2" in res.stderr and "connection refused" in res.stderr
    finally:
        sandbox3.start_host("sbx-2")
    assert run_labctl("doctor", "-i", str(sandbox3.inventory), "--limit", "sbx-2", "--json").code == 0


def test_host_key_mismatch_is_detected_by_doctor_and_by_ansible(
    sandbox3: SandboxHandle, tmp_path: Path
) -> None:
    impostor = _keygen(tmp_path / "impostor")
    addr = sandbox3.addresses["sbx-1"]
    lines = [ln for ln in sandbox3.known_hosts.read_text().splitlines() if not ln.startswith(addr + " ")]  # type: ignore[union-attr]
    bad = tmp_path / "known_hosts"
    bad.write_text(
        "\n".join([*lines, f"{addr} {' '.join(Path(str(impostor) + '.pub').read_text().split()[:2])}"]) + "\n"
    )
    inv = _variant(sandbox3, tmp_path, known_hosts=bad)
    with pytest.raises(remote.HostKeyMismatch):
        remote.connect(load_inventory(inv).hosts["sbx-1"])
    res = run_labctl("doctor", "-i", str(inv), "--json")
    assert res.code == 1
    h = res.json["hosts"]["sbx-1"]
    assert h["unreachable"] and "HOST KEY MISMATCH" in h["msg"]
    assert h["checks"]["ssh"]["data"]["reason"] == "host_key_mismatch"
    assert res.json["hosts"]["sbx-2"]["ok"]
    # Ansible keeps checking too: the inventory's ssh arguments make a mismatch fatal
    prov = run_labctl("provision", "-i", str(inv), "--limit", "sbx-1", "--json")
    assert prov.code == 1 and prov.json["hosts"]["sbx-1"]["unreachable"] is True


def test_unknown_host_key_is_rejected_not_added(sandbox3: SandboxHandle, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    inv = _variant(sandbox3, tmp_path, known_hosts=empty)
    res = run_labctl("doctor", "-i", str(inv), "--limit", "sbx-3", "--json")
    assert res.code == 1
    h = res.json["hosts"]["sbx-3"]
    assert h["checks"]["ssh"]["data"]["reason"] == "unknown_host_key" and "unknown host key" in h["msg"]
    assert empty.read_text() == ""


def test_authentication_failure_is_named(sandbox3: SandboxHandle, tmp_path: Path) -> None:
    inv = _variant(sandbox3, tmp_path, key=_keygen(tmp_path / "stranger"))
    with pytest.raises(remote.AuthFailed, match="authentication as 'root'"):
        remote.connect(load_inventory(inv).hosts["sbx-1"])
    res = run_labctl("doctor", "-i", str(inv), "--limit", "sbx-1", "--json")
    assert res.code == 1 and res.json["hosts"]["sbx-1"]["checks"]["ssh"]["data"]["reason"] == "auth"


def test_a_silent_address_times_out_or_has_no_route(sandbox3: SandboxHandle) -> None:
    subnet = sandbox3.addresses["sbx-1"].rsplit(".", 1)[0]
    ghost = Host("ghost", {"ansible_host": f"{subnet}.250", "ansible_user": "root"})
    with pytest.raises(remote.ConnectError) as exc:
        remote.connect(ghost, timeout=1)
    assert exc.value.reason in ("timeout", "no_route") and exc.value.stage == "tcp"


def test_doctor_refuses_bad_input_before_connecting(sandbox3: SandboxHandle, tmp_path: Path) -> None:
    res = run_labctl("doctor", "-i", str(sandbox3.inventory), "--limit", "sbx-9", "--json")
    assert res.code == 2 and "sbx-9" in res.json["error"]
    bad = tmp_path / "bad.yml"
    bad.write_text("all: [unclosed\n")
    assert run_labctl("doctor", "-i", str(bad), "--json").code == 2


# ---------------------------------------------------------------- sandbox idempotence and provision


def test_sandbox_up_again_changes_nothing(sandbox3: SandboxHandle) -> None:
    before = sandbox3.labctl("sandbox", "status", "--json")
    known = sandbox3.known_hosts.read_text()  # type: ignore[union-attr]
    res = sandbox3.labctl("sandbox", "up", "--hosts", "3", "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert (doc["changed"], doc["changes"], doc["hosts"]) == (False, [], sandbox3.hosts)
    assert doc["inventory"] == str(sandbox3.inventory)
    assert sandbox3.known_hosts.read_text() == known  # type: ignore[union-attr]
    after = sandbox3.labctl("sandbox", "status", "--json")
    assert json.loads(after.stdout) == json.loads(before.stdout)  # same sshd pids: nothing restarted
    assert json.loads(after.stdout)["ok"] is True


def test_provision_over_ssh_is_idempotent_and_records_facts(sandbox3: SandboxHandle) -> None:
    first = run_labctl("provision", "-i", str(sandbox3.inventory), "--json")
    assert first.code == 0, first.stderr[-2000:]
    second = run_labctl("provision", "-i", str(sandbox3.inventory), "--json")
    assert second.code == 0, second.stderr[-2000:]
    hosts = second.json["hosts"]
    assert sorted(hosts) == sandbox3.hosts
    assert {n: h["changed"] for n, h in hosts.items()} == dict.fromkeys(sandbox3.hosts, 0)
    assert all(h["ok"] for h in hosts.values())
    facts = run_labctl("hosts", "--json").json["facts"]
    for name in sandbox3.hosts:
        assert facts[name]["hostname"] == name  # gathered on the host itself (its own UTS namespace)
        assert facts[name]["numa_nodes"] and facts[name]["kernel"]
