"""The shared sandbox fixture: real SSH hosts in network namespaces, for integration tests.

``sandbox3`` (session scope) brings up 3 hosts with ``labctl sandbox up`` in a data
dir of its own and always runs ``labctl sandbox down`` at the end. It yields a
:class:`SandboxHandle`::

    def test_something(sandbox3):
        labctl("provision", "-i", str(sandbox3.inventory), "--json")
        sandbox3.stop_host("sbx-2")      # sbx-2 now refuses connections
        sandbox3.start_host("sbx-2")

It needs root and fails (never skips) without it: the integration suite must say
what is missing. :func:`make_sandbox` builds a sandbox of any size for one test.

Other test folders get the fixture by importing it into their conftest.py::

    from tests.sandbox.conftest import sandbox3  # noqa: F401  (a pytest fixture)

However many conftests import it, one sandbox serves the whole session: the hosts
are reference-counted and removed when the last user is done.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

LABCTL = Path(sys.executable).parent / "labctl"
ROOT = Path(__file__).resolve().parents[2]


def labctl_env(data_dir: Path) -> dict[str, str]:
    """The process environment with labctl's own variables cleared and the data dir set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABCTL_")}
    env["LABCTL_DATA_DIR"] = str(data_dir)
    return env


@dataclass
class SandboxHandle:
    """A running sandbox: its inventory, host names, data dir, and a way to stop/start a host's sshd."""

    data_dir: Path
    inventory: Path
    hosts: list[str]
    addresses: dict[str, str] = field(default_factory=dict)
    known_hosts: Path | None = None

    @property
    def env(self) -> dict[str, str]:
        """Environment for running labctl against this sandbox's data dir."""
        return labctl_env(self.data_dir)

    def labctl(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run labctl with the sandbox's data dir."""
        return subprocess.run(
            [str(LABCTL), *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            cwd=ROOT,
            check=False,
        )

    def stop_host(self, name: str, everything: bool = False) -> None:
        """Stop one host's sshd: connections to it are refused until :meth:`start_host`."""
        res = self.labctl("sandbox", "stop-host", name, *(["--all"] if everything else []))
        assert res.returncode == 0, res.stderr

    def start_host(self, name: str) -> None:
        """Start one host's sshd again (no-op if it runs)."""
        res = self.labctl("sandbox", "start-host", name)
        assert res.returncode == 0, res.stderr


def require_root() -> None:
    """Fail (not skip) the test when not root: the sandbox needs network namespaces."""
    if os.geteuid() != 0:
        pytest.fail("sandbox tests need root (network namespaces, veth, sshd); run the suite as root")


@contextmanager
def make_sandbox(n: int, data_dir: Path) -> Iterator[SandboxHandle]:
    """``labctl sandbox up --hosts n`` in ``data_dir``; ``sandbox down`` on exit, whatever happened."""
    require_root()
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    handle = SandboxHandle(data_dir, data_dir / "sandbox" / "inventory.yml", [])
    try:
        res = handle.labctl("sandbox", "up", "--hosts", str(n), "--json")
        if res.returncode != 0:
            pytest.fail(f"labctl sandbox up failed ({res.returncode}): {res.stdout} {res.stderr}")
        doc: dict[str, Any] = json.loads(res.stdout)
        handle.inventory = Path(doc["inventory"])
        handle.hosts = list(doc["hosts"])
        handle.addresses = dict(doc.get("addresses", {}))
        handle.known_hosts = Path(doc["known_hosts"]) if doc.get("known_hosts") else None
        yield handle
    finally:
        down = handle.labctl("sandbox", "down")
        if down.returncode != 0:
            print(f"labctl sandbox down failed: {down.stderr}", file=sys.stderr)


_SHARED: dict[str, Any] = {"users": 0, "handle": None, "cm": None}


@contextmanager
def shared_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxHandle]:
    """The session's 3-host sandbox, created on first use and removed when its last user ends."""
    if _SHARED["handle"] is None:
        cm = make_sandbox(3, tmp_path_factory.mktemp("sandbox3"))
        _SHARED["handle"], _SHARED["cm"] = cm.__enter__(), cm
    _SHARED["users"] += 1
    try:
        yield _SHARED["handle"]
    finally:
        _SHARED["users"] -= 1
        if _SHARED["users"] == 0:
            cm, _SHARED["cm"], _SHARED["handle"] = _SHARED["cm"], None, None
            cm.__exit__(None, None, None)


@pytest.fixture(scope="session")
def sandbox3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxHandle]:
    """Three sandbox hosts (sbx-1..3) shared by the whole session; removed at the end."""
    with shared_sandbox(tmp_path_factory) as handle:
        yield handle
