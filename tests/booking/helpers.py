"""Helpers shared by the booking tests."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

APP_ROLE = "labctl_app"  # the ordinary (non-superuser) role labctl connects as in the tests


def write_inventory(path: Path, hosts: dict[str, bool], group_required: bool | None = None) -> Path:
    """An inventory of local-connection hosts; ``hosts`` maps name -> labctl_booking_required.

    With ``group_required`` the flag is set on a group instead, to prove group vars count.
    """
    lines = ["all:", "  children:", "    lab:"]
    if group_required is not None:
        lines += ["      vars:", f"        labctl_booking_required: {str(group_required).lower()}"]
    lines.append("      hosts:")
    for name, required in hosts.items():
        lines.append(f"        {name}:")
        lines.append("          ansible_connection: local")
        lines.append("          ansible_python_interpreter: '{{ ansible_playbook_python }}'")
        if group_required is None:
            lines.append(f"          labctl_booking_required: {str(required).lower()}")
    path.write_text("\n".join(lines) + "\n")
    return path


@dataclass
class PgServer:
    base: Path
    port: int
    password: str

    def admin(self, sql: str, dbname: str = "postgres") -> None:
        """Run SQL as the superuser over the unix socket (trust auth, like a DBA's shell)."""
        import psycopg

        with psycopg.connect(
            host=str(self.base), port=self.port, user="postgres", dbname=dbname, autocommit=True
        ) as conn:
            conn.execute(sql)

    def new_database(self) -> str:
        """A fresh database owned by the application role; returns its plain postgresql:// URL."""
        name = "t_" + secrets.token_hex(6)
        self.admin(f"CREATE DATABASE {name} OWNER {APP_ROLE}")
        return f"postgresql://{APP_ROLE}:{self.password}@127.0.0.1:{self.port}/{name}"
