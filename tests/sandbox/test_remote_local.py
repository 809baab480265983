"""LocalRunner: the same behaviour as over SSH, on this machine (no root needed)."""

from __future__ import annotations

from pathlib import Path

from labctl.inventory import Host
from labctl.remote import LocalRunner, runner_for
from tests.sandbox.runner_checks import (
    check_files,
    check_killed_process_and_early_exit,
    check_process_lifecycle,
    check_run,
)


def test_runner_for_a_local_host_is_local() -> None:
    assert isinstance(runner_for(Host("localhost", {"ansible_connection": "local"})), LocalRunner)


def test_local_run(tmp_path: Path) -> None:
    check_run(LocalRunner(), str(tmp_path))


def test_local_process_lifecycle(tmp_path: Path) -> None:
    check_process_lifecycle(LocalRunner(), str(tmp_path))


def test_local_process_failures(tmp_path: Path) -> None:
    check_killed_process_and_early_exit(LocalRunner(), str(tmp_path))


def test_local_files(tmp_path: Path) -> None:
    remote_dir = tmp_path / "remote"
    remote_dir.mkdir()
    check_files(LocalRunner(), str(remote_dir), tmp_path)
