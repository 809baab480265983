"""Shared fixtures. labctl's own environment variables are cleared before every test,
so a developer's settings never leak into results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.servers import Server, ServerUnavailable, start_influxd, start_victoria_metrics

ROOT = Path(__file__).resolve().parents[1]
LABCTL = Path(sys.executable).parent / "labctl"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for key in list(os.environ):
        if key.startswith("LABCTL_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("LABCTL_DATA_DIR", str(tmp_path / "labctl-data"))
    monkeypatch.chdir(tmp_path)
    yield


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)


def run_labctl(
    *args: str, env: dict[str, str] | None = None, timeout: float = 600, cwd: Path | None = None
) -> CliResult:
    """Run the installed ``labctl`` as a user would (a real process, real exit code)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.run(
        [str(LABCTL), *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=cwd or ROOT,
        check=False,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def labctl() -> Any:
    return run_labctl


# Real servers for the tests that need them: a missing binary fails the test, never skips it.
def _start(starter: Any, tmp: Path) -> Server:
    try:
        server: Server = starter(tmp)
    except ServerUnavailable as exc:
        pytest.fail(str(exc))
    return server


@pytest.fixture(scope="session")
def influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One influxd for the session (tests isolate themselves by run_id)."""
    server = _start(start_influxd, tmp_path_factory.mktemp("influxd"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def victoria(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One VictoriaMetrics for the session (tests isolate themselves by run_id)."""
    server = _start(start_victoria_metrics, tmp_path_factory.mktemp("vm"))
    yield server
    server.stop()


@pytest.fixture
def influxd_own(tmp_path: Path) -> Iterator[Server]:
    """An influxd of this test's own, which the test may stop and restart."""
    server = _start(start_influxd, tmp_path / "servers")
    yield server
    server.stop()


@pytest.fixture
def victoria_own(tmp_path: Path) -> Iterator[Server]:
    """A VictoriaMetrics of this test's own, which the test may stop and restart."""
    server = _start(start_victoria_metrics, tmp_path / "servers")
    yield server
    server.stop()
