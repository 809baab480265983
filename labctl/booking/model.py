"""The booking model: what a booking is, its states, and the pure time logic around it.

Nothing here touches a database, so all of it is unit-tested without one. Times are
always timezone-aware and normalised to UTC; a time without a zone is refused rather
than guessed, because a lab shared across sites is exactly where "10:00" is ambiguous.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from labctl.config import parse_duration
from labctl.errors import InputError

# A start this far in the past is still accepted as "now": clocks of the machines
# sharing a PostgreSQL store drift, and a user may paste a time from a second ago.
START_TOLERANCE = timedelta(seconds=60)


class State(StrEnum):
    """Life cycle of a booking: booked -> active -> expired, or released at any point."""

    BOOKED = "booked"
    ACTIVE = "active"
    EXPIRED = "expired"
    RELEASED = "released"


# The only states that are stored. booked/active/expired follow from the clock, so a
# booking can never be left "active" by a crashed process; released is a decision
# someone made and must be recorded.
STORED_BOOKED = "booked"
STORED_RELEASED = "released"

# States that still hold their hosts for their window (used for listings).
CURRENT_STATES = (State.BOOKED, State.ACTIVE)


def utcnow() -> datetime:
    """The current time in UTC, truncated to whole seconds (bookings are not finer than that)."""
    return datetime.now(UTC).replace(microsecond=0)


def to_utc(value: datetime) -> datetime:
    """An aware datetime in UTC; a naive one is a programming error."""
    if value.tzinfo is None:
        raise ValueError("naive datetime: labctl only handles times with a zone")
    return value.astimezone(UTC)


def iso_utc(value: datetime | None) -> str | None:
    """ISO-8601 in UTC with a ``Z`` suffix, the form every --json document uses."""
    if value is None:
        return None
    return to_utc(value).isoformat().replace("+00:00", "Z")


def parse_time(text: str, now: datetime | None = None, key: str = "start") -> datetime:
    """``now`` or an ISO-8601 time *with a zone* (``Z`` or ``+02:00``) -> aware UTC datetime."""
    s = str(text).strip()
    if s.lower() == "now":
        return to_utc(now) if now is not None else utcnow()
    try:
        value = datetime.fromisoformat(s)
    except ValueError:
        raise InputError(
            f"not a time: {text!r} (use 'now' or ISO-8601 with a zone, e.g. 2031-03-01T10:00:00Z)", key=key
        ) from None
    if value.tzinfo is None:
        raise InputError(f"time {text!r} has no time zone; add one, e.g. {s}Z (UTC) or {s}+01:00", key=key)
    return value.astimezone(UTC)


def parse_positive_duration(text: str, key: str) -> timedelta:
    """A duration such as ``4h`` or ``1h30m`` that must be greater than zero."""
    s = str(text).strip()
    if s.startswith("-"):
        raise InputError(f"duration must be positive, got {text!r}", key=key)
    seconds = parse_duration(s, key=key)
    if seconds <= 0:
        raise InputError(f"duration must be positive, got {text!r}", key=key)
    return timedelta(seconds=seconds)


def parse_margin(text: str) -> timedelta:
    """The ``booking_margin`` setting: zero or more."""
    seconds = parse_duration(str(text), key="booking_margin")
    return timedelta(seconds=seconds)


def parse_hosts(text: str | Iterable[str]) -> list[str]:
    """``H1,H2`` (or a list) -> unique names in the order given; empty is an error."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    names: list[str] = []
    for raw in parts:
        name = raw.strip()
        if name and name not in names:
            names.append(name)
    if not names:
        raise InputError("no hosts given", key="hosts")
    return names


def parse_booking_id(value: str | int) -> int:
    """Booking ids are small integers; accept ``17`` or ``"17"``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    s = str(value).strip()
    if not re.fullmatch(r"\d{1,18}", s):
        raise InputError(
            f"not a booking id: {value!r} (ids are numbers, see 'labctl bookings')", key="booking"
        )
    return int(s)


def human_duration(delta: timedelta) -> str:
    """``1d 2h``, ``3h 05m``, ``45s``: the largest two units, for people."""
    total = int(abs(delta.total_seconds()))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {minutes:02d}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m {seconds:02d}s" if seconds else f"{minutes}m"
    return f"{seconds}s"


@dataclass(frozen=True)
class BookingRequest:
    """What ``labctl book`` asks for, already parsed and validated."""

    owner: str
    hosts: tuple[str, ...]
    start: datetime
    end: datetime
    purpose: str | None = None
    margin: timedelta = timedelta(0)

    def __post_init__(self) -> None:
        if not self.owner.strip():
            raise InputError("the booking owner is empty; set LABCTL_OWNER", key="owner")
        if not self.hosts:
            raise InputError("no hosts given", key="hosts")
        if self.end <= self.start:
            raise InputError(
                f"the booking ends ({iso_utc(self.end)}) before it starts ({iso_utc(self.start)})",
                key="duration",
            )
        if self.margin < timedelta(0):
            raise InputError("the cleaning margin cannot be negative", key="booking_margin")

    @property
    def busy_until(self) -> datetime:
        """End of the window plus the cleaning margin: what other bookings must stay clear of."""
        return self.end + self.margin

    def check_not_past(self, now: datetime) -> None:
        """Refuse windows that are already over or start well in the past."""
        if self.start < now - START_TOLERANCE:
            raise InputError(
                f"start {iso_utc(self.start)} is in the past (now is {iso_utc(now)}); use --start now",
                key="start",
            )
        if self.end <= now:
            raise InputError(f"the window ends in the past ({iso_utc(self.end)})", key="duration")

    def at(self, start: datetime) -> BookingRequest:
        """The same request moved to a new start, keeping its length (for --start now retries)."""
        return replace(self, start=start, end=start + (self.end - self.start))


@dataclass(frozen=True)
class Booking:
    """A stored booking. ``status`` is what is stored; :meth:`state` is what it is now."""

    id: int
    owner: str
    hosts: tuple[str, ...]
    start: datetime
    end: datetime
    margin: timedelta
    status: str
    created_at: datetime
    purpose: str | None = None
    released_at: datetime | None = None
    released_by: str | None = None
    forced_by: str | None = None
    forced_reason: str | None = None
    previous_owner: str | None = None

    @property
    def busy_until(self) -> datetime:
        """End plus cleaning margin."""
        return self.end + self.margin

    def state(self, now: datetime) -> State:
        """Derive the state from the clock (only ``released`` is stored)."""
        return derive_state(self.status, self.start, self.end, now)

    def window(self) -> str:
        """``2031-03-01T10:00:00Z..2031-03-01T12:00:00Z`` (+ margin), for messages."""
        text = f"{iso_utc(self.start)}..{iso_utc(self.end)}"
        if self.margin:
            text += f" (+{human_duration(self.margin)} cleaning)"
        return text

    def describe(self) -> str:
        """One line naming the booking, its owner and window: what a refusal must say."""
        return f"booking {self.id} by {self.owner} ({self.window()})"

    def to_dict(self, now: datetime) -> dict[str, Any]:
        """The --json form; times in ISO-8601 UTC."""
        return {
            "id": self.id,
            "owner": self.owner,
            "hosts": list(self.hosts),
            "start": iso_utc(self.start),
            "end": iso_utc(self.end),
            "state": self.state(now).value,
            "purpose": self.purpose,
            "margin_s": int(self.margin.total_seconds()),
            "busy_until": iso_utc(self.busy_until),
            "created_at": iso_utc(self.created_at),
            "released_at": iso_utc(self.released_at),
            "released_by": self.released_by,
            "forced_by": self.forced_by,
            "forced_reason": self.forced_reason,
            "previous_owner": self.previous_owner,
        }


def derive_state(status: str, start: datetime, end: datetime, now: datetime) -> State:
    """booked before ``start``, active in ``[start, end)``, expired from ``end`` on; released wins."""
    if status == STORED_RELEASED:
        return State.RELEASED
    if now < start:
        return State.BOOKED
    if now < end:
        return State.ACTIVE
    return State.EXPIRED


def windows_overlap(
    a_start: datetime, a_busy_until: datetime, b_start: datetime, b_busy_until: datetime
) -> bool:
    """Half-open ``[start, busy_until)`` windows overlap; touching ends do not."""
    return a_start < b_busy_until and b_start < a_busy_until
