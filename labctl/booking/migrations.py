"""Versioned schema migrations for the booking store.

The scheme: a ``schema_version`` table holds one row per applied step (version,
description, when). :data:`STEPS` is the ordered list of steps; each has a number,
a description and a function that gets a connection inside the migrating
transaction and the dialect name. On open, the store applies every step newer than
the highest recorded version, all in one transaction, then records them.

Rules for adding a step:

- Append a new :class:`Step` with the next number; never edit or reorder a released
  one (databases in the field already ran it). Steps define their own DDL instead of
  importing :mod:`labctl.booking.schema`, which describes only the *latest* shape.
- Update :mod:`labctl.booking.schema` to the new shape (a test compares the two).
- A step that means nothing on one backend still exists there and does nothing, so
  version numbers mean the same on SQLite and PostgreSQL.

Concurrency: many ``labctl`` processes may open a fresh store at once. SQLite's
``BEGIN IMMEDIATE`` and PostgreSQL's transaction-scoped advisory lock let exactly one
migrate while the others wait, then find nothing left to do. Both databases run DDL
inside transactions, so a failed step leaves the previous version intact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import (
    Column,
    Connection,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
    inspect,
    select,
    text,
)

from labctl.booking.model import utcnow
from labctl.booking.schema import UtcDateTime, schema_version
from labctl.errors import EnvironmentProblem

# Any constant works; it only has to be the same for every labctl process.
PG_MIGRATION_LOCK = 0x6C6162637431  # "labct1"


@dataclass(frozen=True)
class Step:
    """One migration: ``apply(conn, dialect_name)`` runs inside the migrating transaction."""

    version: int
    description: str
    apply: Callable[[Connection, str], None]


def _v1_tables(conn: Connection, dialect: str) -> None:
    md = MetaData()
    Table(
        "bookings",
        md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("owner", String(200), nullable=False),
        Column("purpose", Text),
        Column("starts_at", UtcDateTime, nullable=False),
        Column("ends_at", UtcDateTime, nullable=False),
        Column("margin_s", Float, nullable=False),
        Column("state", String(16), nullable=False),
        Column("created_at", UtcDateTime, nullable=False),
        Column("released_at", UtcDateTime),
        Column("released_by", String(200)),
        Column("forced_by", String(200)),
        Column("forced_reason", Text),
        Column("previous_owner", String(200)),
        sqlite_autoincrement=True,
    )
    Table(
        "booking_hosts",
        md,
        Column("booking_id", Integer, ForeignKey("bookings.id", ondelete="CASCADE"), primary_key=True),
        Column("host", String(255), primary_key=True),
        Column("starts_at", UtcDateTime, nullable=False),
        Column("end_with_margin", UtcDateTime, nullable=False),
        Column("state", String(16), nullable=False),
    )
    md.create_all(conn)


def _v2_overlap_guard(conn: Connection, dialect: str) -> None:
    if dialect == "postgresql":
        # The database itself refuses overlapping windows on one host, whatever client
        # writes to it. btree_gist lets a GiST index compare the plain `host` column
        # with `=`; it is a trusted extension, so the database owner may create it.
        conn.execute(text("CREATE EXTENSION IF NOT EXISTS btree_gist"))
        conn.execute(
            text(
                "ALTER TABLE booking_hosts ADD CONSTRAINT booking_hosts_no_overlap "
                "EXCLUDE USING gist (host WITH =, tstzrange(starts_at, end_with_margin, '[)') WITH &&) "
                "WHERE (state = 'booked')"
            )
        )
    else:
        # SQLite checks overlap in the writing transaction; this index keeps that check
        # a range scan per host instead of a table scan.
        conn.execute(text("CREATE INDEX booking_hosts_host_window ON booking_hosts (host, starts_at)"))


STEPS: tuple[Step, ...] = (
    Step(1, "bookings and booking_hosts tables", _v1_tables),
    Step(
        2, "overlap guard: exclusion constraint (PostgreSQL) / host-window index (SQLite)", _v2_overlap_guard
    ),
)
LATEST = STEPS[-1].version


def current_version(conn: Connection) -> int:
    """Highest applied step, 0 for an empty database."""
    if not inspect(conn).has_table("schema_version"):
        return 0
    return int(conn.execute(select(func.coalesce(func.max(schema_version.c.version), 0))).scalar_one())


def _check_not_newer(version: int) -> None:
    if version > LATEST:
        raise EnvironmentProblem(
            f"the booking store has schema version {version}, newer than this labctl knows ({LATEST}); "
            "upgrade labctl"
        )


def apply_pending(conn: Connection, dialect: str) -> list[int]:
    """Apply every step newer than the recorded version; the caller holds the write lock.

    Returns the versions applied (empty when the store was up to date).
    """
    if dialect == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_MIGRATION_LOCK})
    schema_version.create(conn, checkfirst=True)
    version = current_version(conn)
    _check_not_newer(version)
    applied: list[int] = []
    for step in STEPS:
        if step.version <= version:
            continue
        step.apply(conn, dialect)
        conn.execute(
            schema_version.insert().values(
                version=step.version, description=step.description, applied_at=utcnow()
            )
        )
        applied.append(step.version)
    return applied


def needs_migration(conn: Connection) -> bool:
    """Cheap check done on every open: is the store behind this labctl?"""
    version = current_version(conn)
    _check_not_newer(version)
    return version < LATEST
