"""`sandbox up` grows and shrinks a sandbox in place, and `sandbox down` leaves nothing behind."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.sandbox.conftest import LABCTL, labctl_env, require_root

pytestmark = [pytest.mark.integration, pytest.mark.root]


def _labctl(data_dir: Path, *args: str) -> tuple[int, Any, str]:
    proc = subprocess.run(
        [str(LABCTL), *args, "--json"],
        capture_output=True,
        text=True,
        env=labctl_env(data_dir),
        timeout=120,
        check=False,
    )
    return proc.returncode, json.loads(proc.stdout) if proc.stdout.strip() else None, proc.stderr


def _traces(data_dir: Path, slot: int) -> dict[str, list[str]]:
    """Everything of this sandbox still on the machine."""
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout.split(
        "\n"
    )
    links = os.listdir("/sys/class/net")
    procs = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if str(data_dir).encode() in cmdline and int(pid) != os.getpid():
            procs.append(f"{pid}: {cmdline[:120]!r}")
    files = [str(p) for p in (data_dir / "sandbox").rglob("*")] if (data_dir / "sandbox").exists() else []
    return {
        "netns": [n.split()[0] for n in netns if n.startswith(f"lcsb-{slot}-")],
        "links": [ln for ln in links if ln.startswith(f"lcsb-{slot}-")],
        "processes": procs,
        "files": files + ([str(data_dir / "sandbox")] if (data_dir / "sandbox").exists() else []),
    }


def test_up_grows_shrinks_and_down_removes_everything(tmp_path: Path) -> None:
    require_root()
    data_dir = tmp_path / "own"
    data_dir.mkdir(mode=0o700)
    code, doc, err = _labctl(data_dir, "sandbox", "up", "--hosts", "2")
    assert code == 0, err
    try:
        slot = int(json.loads((data_dir / "sandbox" / "sandbox.json").read_text())["slot"])
        assert doc["hosts"] == ["sbx-1", "sbx-2"] and doc["changed"] is True
        assert Path(doc["inventory"]).is_file() and (data_dir / "sandbox").stat().st_mode & 0o077 == 0
        sbx1_key = (data_dir / "sandbox/hosts/sbx-1/ssh_host_ed25519_key.pub").read_text()

        code, doc, _ = _labctl(data_dir, "sandbox", "up", "--hosts", "2")
        assert (code, doc["changed"], doc["changes"]) == (0, False, [])

        code, doc, _ = _labctl(data_dir, "sandbox", "up", "--hosts", "3")
        assert code == 0 and doc["hosts"] == ["sbx-1", "sbx-2", "sbx-3"]
        assert all("sbx-3" in c or "known_hosts" in c or "inventory" in c for c in doc["changes"]), doc[
            "changes"
        ]
        assert len(Path(doc["known_hosts"]).read_text().splitlines()) == 3
        assert (data_dir / "sandbox/hosts/sbx-1/ssh_host_ed25519_key.pub").read_text() == sbx1_key

        code, doc, _ = _labctl(data_dir, "sandbox", "up", "--hosts", "1")
        assert code == 0 and doc["hosts"] == ["sbx-1"]
        assert sorted(_traces(data_dir, slot)["netns"]) == [f"lcsb-{slot}-1"]
        assert "sbx-2:" not in Path(doc["inventory"]).read_text()

        code, doc, _ = _labctl(data_dir, "sandbox", "stop-host", "sbx-1", "--all")
        assert code == 0 and doc["changed"] is True
        code, doc, _ = _labctl(data_dir, "sandbox", "status")
        assert code == 1 and doc["hosts"]["sbx-1"]["reachable"] is False
        code, doc, _ = _labctl(data_dir, "sandbox", "start-host", "sbx-1")
        assert code == 0 and doc["changed"] is True
        code, doc, _ = _labctl(data_dir, "sandbox", "status")
        assert code == 0 and doc["hosts"]["sbx-1"]["ok"] is True
        code, doc, _ = _labctl(data_dir, "sandbox", "stop-host", "sbx-7")
        assert code == 2 and "sbx-7" in doc["error"]
    finally:
        code, doc, err = _labctl(data_dir, "sandbox", "down")
    assert code == 0, err
    assert doc["removed"]
    assert _traces(data_dir, slot) == {"netns": [], "links": [], "processes": [], "files": []}
    code, doc, _ = _labctl(data_dir, "sandbox", "down")  # nothing left to remove: still fine
    assert (code, doc["removed"]) == (0, [])


def test_sandbox_refuses_without_root_and_names_the_reason() -> None:
    if not Path("/usr/bin/setpriv").exists():
        pytest.fail("setpriv (util-linux) is needed to run labctl as an unprivileged user")
    env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "LABCTL_DATA_DIR": "/nonexistent/labctl"}
    proc = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            str(LABCTL),
            "sandbox",
            "up",
            "--hosts",
            "1",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
        cwd="/",
    )
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["ok"] is False and doc["kind"] == "EnvironmentProblem" and "needs root" in doc["error"]
