"""Fixtures for the booking tests: tiny inventories, and a real PostgreSQL server.

The PostgreSQL server is Debian's postgresql 15, started once per test session as
the ``postgres`` system user (it refuses to run as root) with its own data
directory, a free port on 127.0.0.1 and its unix socket in that directory. Each test
gets a fresh database owned by an ordinary (non-superuser) role with a password, as
a team's shared lab would give labctl. If the binaries are missing the tests fail:
a silently skipped PostgreSQL test would hide exactly the backend a team relies on.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.booking.helpers import APP_ROLE, PgServer, write_inventory

PG_BIN = Path(os.environ.get("LABCTL_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


@pytest.fixture
def inventory(tmp_path: Path) -> Path:
    """Three hosts; h1 and h2 require bookings, free1 does not."""
    return write_inventory(tmp_path / "lab.yml", {"h1": True, "h2": True, "free1": False})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(cmd: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root; as an ordinary user it runs as that user
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A real PostgreSQL 15 server for the whole session, stopped at the end."""
    for tool in ("initdb", "pg_ctl", "postgres"):
        if not (PG_BIN / tool).exists():
            pytest.fail(
                f"PostgreSQL binary {PG_BIN / tool} is missing: install Debian's postgresql (make deps)"
            )
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.fail("running as root needs runuser to start PostgreSQL as the postgres user")
    base = Path(tempfile.mkdtemp(prefix="labctl-pg-"))
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    data, log = base / "data", base / "server.log"
    port = _free_port()
    password = secrets.token_urlsafe(12)
    try:
        subprocess.run(
            _as_postgres(
                [
                    str(PG_BIN / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    "postgres",
                    "-E",
                    "UTF8",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "--no-sync",
                    "--no-instructions",
                ]
            ),
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
        opts = (
            f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
        )
        subprocess.run(
            _as_postgres(
                [
                    str(PG_BIN / "pg_ctl"),
                    "-D",
                    str(data),
                    "-l",
                    str(log),
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    opts,
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
            text=True,
            timeout=90,
        )
    except subprocess.CalledProcessError as exc:
        tail = log.read_text()[-2000:] if log.exists() else ""
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(f"could not start PostgreSQL: {exc.stderr or exc.stdout}\n{tail}")
    server = PgServer(base, port, password)
    try:
        # an ordinary role, as a team's lab database would give labctl (not a superuser)
        server.admin(f"CREATE ROLE {APP_ROLE} LOGIN PASSWORD '{password}'")
        yield server
    finally:
        subprocess.run(
            _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
            capture_output=True,
            timeout=60,
            check=False,
        )
        for _ in range(50):  # pg_ctl -w returns once the postmaster is gone; be sure before deleting
            if not (data / "postmaster.pid").exists():
                break
            time.sleep(0.1)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """URL of a fresh, empty PostgreSQL database for one test."""
    return pg_server.new_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """Environment selecting the booking store: SQLite in the data dir, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return {}
    url = request.getfixturevalue("pg_url")
    return {"LABCTL_BOOKING_URL": url}
