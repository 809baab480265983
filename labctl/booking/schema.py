"""Tables of the booking store, as the code queries them (the current schema version).

The tables are *created* by the numbered steps in :mod:`labctl.booking.migrations`,
never from these definitions, so that changing a definition here can never change
what an old migration step does. A test checks that the two agree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)


class UtcDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on both backends.

    PostgreSQL stores ``timestamptz`` (needed by the ``tstzrange`` exclusion
    constraint). SQLite has no such type: SQLAlchemy stores a fixed-width text
    ``YYYY-MM-DD HH:MM:SS.ffffff`` that sorts like the time it holds, so range
    comparisons in SQL stay correct as long as every value is UTC — which this type
    enforces on the way in and restores on the way out.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the booking store")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):  # pragma: no cover - drivers always convert
            value = datetime.fromisoformat(str(value))
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData()

# One row per booking: who, when, why, and how it ended.
bookings = Table(
    "bookings",
    metadata,
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

# One row per (booking, host): the unit the overlap rule is about. The window and the
# state are copied here so PostgreSQL's exclusion constraint can see them in one row.
booking_hosts = Table(
    "booking_hosts",
    metadata,
    Column("booking_id", Integer, ForeignKey("bookings.id", ondelete="CASCADE"), primary_key=True),
    Column("host", String(255), primary_key=True),
    Column("starts_at", UtcDateTime, nullable=False),
    Column("end_with_margin", UtcDateTime, nullable=False),
    Column("state", String(16), nullable=False),
)

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("description", Text, nullable=False),
    Column("applied_at", UtcDateTime, nullable=False),
)
