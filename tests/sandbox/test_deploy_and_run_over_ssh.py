"""`labctl deploy` and `labctl run` over real SSH: a 2-host sandbox, server on one host,
load generator on the other, traffic across the sandbox bridge."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.sandbox.conftest import SandboxHandle

pytestmark = [pytest.mark.integration, pytest.mark.root]
ROOT = Path(__file__).resolve().parents[2]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def remote_sha256(sb: SandboxHandle, host: str, path: str) -> str:
    """sha256 as the host itself computes it (over SSH, through labctl's runner)."""
    from labctl.inventory import load_inventory
    from labctl.remote import runner_for

    inv = load_inventory(sb.inventory)
    with runner_for(inv.hosts[host]) as runner:
        res = runner.run(["sha256sum", path], timeout=60)
    assert res.rc == 0, res.stderr
    return res.stdout.split()[0]


def test_deploy_to_two_hosts_verifies_sha256_and_is_idempotent(sandbox3: SandboxHandle) -> None:
    hosts = sandbox3.hosts[:2]
    first = sandbox3.labctl(
        "deploy", "-i", str(sandbox3.inventory), "--limit", ",".join(hosts), "--json", timeout=900
    )
    assert first.returncode == 0, first.stderr[-2000:]
    doc = json.loads(first.stdout)
    assert set(doc["hosts"]) == set(hosts) and all(h["ok"] for h in doc["hosts"].values())
    for host in hosts:
        state = json.loads((sandbox3.data_dir / "state/hosts" / f"{host}.json").read_text())
        for name, entry in state["deployed"]["artifacts"].items():
            assert entry["sha256"] == doc["artifacts"][name]["sha256"]
            assert remote_sha256(sandbox3, host, entry["path"]) == entry["sha256"]
    second = sandbox3.labctl(
        "deploy", "-i", str(sandbox3.inventory), "--limit", ",".join(hosts), "--json", timeout=900
    )
    assert second.returncode == 0, second.stderr[-2000:]
    assert {h: v["changed"] for h, v in json.loads(second.stdout)["hosts"].items()} == dict.fromkeys(hosts, 0)


def test_run_with_server_and_client_on_different_hosts(sandbox3: SandboxHandle, tmp_path: Path) -> None:
    server, client = sandbox3.hosts[0], sandbox3.hosts[1]
    spec = (
        (ROOT / "tests/pipeline/data/tiny.yaml")
        .read_text()
        .replace(
            "repetitions: 1",
            f"repetitions: 1\nplacement:\n  server: {{host: {server}}}\n  client: {{host: {client}}}",
        )
    )
    path = tmp_path / "tiny-two-hosts.yaml"
    path.write_text(spec)
    r = sandbox3.labctl(
        "run",
        str(path),
        "-i",
        str(sandbox3.inventory),
        "--limit",
        f"{server},{client}",
        "--json",
        timeout=900,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout)
    run_dir = Path(doc["run_dir"])
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["placement"]["server"]["host"] == server
    assert manifest["placement"]["client"]["host"] == client
    cells = json.loads((run_dir / "results.json").read_text())["cells"]
    assert {c["lang"] for c in cells} == {"go", "rust", "cpp"}
    for c in cells:
        assert c["status"] == "ok", c.get("error")
        assert c["server_host"] == server and c["client_host"] == client
        assert c["summary"]["errors"] == 0 and c["summary"]["responses"] > 0
        assert sandbox3.addresses.get(server, "") in c["summary"].get(
            "target", sandbox3.addresses.get(server, "")
        )
    for host in (server, client):
        state = json.loads((sandbox3.data_dir / "state/hosts" / f"{host}.json").read_text())
        assert not state.get("processes")
