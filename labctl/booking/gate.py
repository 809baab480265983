"""The booking gate: host-touching commands call :func:`require_booking` before any Ansible run.

A host needs a booking when its hostvars say ``labctl_booking_required: true``
(set on the host, a group, or ``all`` — Ansible merges group vars into hostvars, so
the merged value is the only one looked at). For such hosts the caller (the
``owner`` setting) must hold a booking that is active now and covers every one of
them; otherwise the command is refused with :class:`~labctl.errors.NotBooked`
(exit 3) naming the host and whoever holds it. Hosts without the variable need no
booking, which keeps a developer's own machine and the sandbox friction-free.

``teardown`` is the exception that makes crashes recoverable: the owner may still
tear down for ``teardown_grace`` after the booking ended, as long as nobody else's
booking has started on the host meanwhile.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from labctl.booking.model import (
    STORED_RELEASED,
    Booking,
    iso_utc,
    parse_booking_id,
    to_utc,
    utcnow,
)
from labctl.booking.store import BookingStore, open_store
from labctl.config import Settings, parse_duration
from labctl.errors import InputError, NotBooked, NotOwner
from labctl.inventory import Host, Inventory

REQUIRED_VAR = "labctl_booking_required"
GATED_COMMANDS = ("provision", "tune", "deploy", "run", "teardown")
_TRUE = {"true", "yes", "on", "1", "y"}
_FALSE = {"false", "no", "off", "0", "n", ""}


def booking_required(inventory: Inventory, host: str) -> bool:
    """Whether ``host``'s merged hostvars set ``labctl_booking_required`` to a true value."""
    if host not in inventory.hosts:
        raise InputError(f"unknown host {host!r}", file=str(inventory.path), host=host)
    value = inventory.var(host, REQUIRED_VAR, False)
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    # a gate must not guess: a typo should not silently open a shared host
    raise InputError(
        f"{REQUIRED_VAR} must be true or false, got {value!r}",
        file=str(inventory.path),
        key=REQUIRED_VAR,
        host=host,
    )


def require_booking(
    settings: Settings,
    inventory: Inventory,
    hosts: Iterable[str | Host],
    booking_id: str | int | None = None,
    command: str = "provision",
    now: datetime | None = None,
) -> dict[str, Any] | None:
    """Refuse ``command`` on ``hosts`` unless the caller holds a booking where one is required.

    Returns ``None`` when no targeted host requires a booking. Otherwise returns the
    booking used as a dict (the ``--json`` form) with an extra ``covering`` key
    mapping each gated host to the booking id that covers it — usually one booking,
    but the caller may hold separate bookings for separate hosts. ``booking_id``
    selects one booking explicitly; it must be the caller's and cover every gated
    host. Raises NotBooked / NotOwner (exit 3) or InputError (exit 2, unknown id).
    """
    names = [h.name if isinstance(h, Host) else str(h) for h in hosts]
    gated = [n for n in names if booking_required(inventory, n)]
    if not gated:
        return None
    now = to_utc(now) if now is not None else utcnow()
    grace = timedelta(0)
    if command == "teardown":
        grace = timedelta(seconds=parse_duration(settings.teardown_grace, key="teardown_grace"))
    with open_store(settings) as store:
        if booking_id is not None:
            chosen = _explicit(
                store, settings.owner, parse_booking_id(booking_id), gated, command, now, grace
            )
            covering = {h: chosen for h in gated}
        else:
            covering = _implicit(store, settings.owner, gated, command, now, grace)
        _check_nobody_else_after_end(store, settings.owner, covering, command, now)
    primary = covering[gated[0]]
    doc = primary.to_dict(now)
    doc["covering"] = {h: b.id for h, b in covering.items()}
    return doc


def _allowed_until(b: Booking, grace: timedelta) -> datetime:
    return b.end + grace


def _explicit(
    store: BookingStore,
    owner: str,
    booking_id: int,
    gated: list[str],
    command: str,
    now: datetime,
    grace: timedelta,
) -> Booking:
    b = store.get(booking_id)
    if b.owner != owner:
        raise NotOwner(
            f"{command}: booking {b.id} belongs to {b.owner}, not {owner}", booking=b.id, owner=b.owner
        )
    if b.status == STORED_RELEASED:
        raise NotBooked(f"{command}: booking {b.id} was released at {iso_utc(b.released_at)}", booking=b.id)
    missing = [h for h in gated if h not in b.hosts]
    if missing:
        host = missing[0]
        raise NotBooked(
            f"{command}: booking {b.id} does not cover host {host} (it covers {', '.join(b.hosts)}); "
            + _holder_text(store, host, owner, now),
            booking=b.id,
            host=host,
        )
    if now < b.start:
        raise NotBooked(
            f"{command}: booking {b.id} has not started yet (starts {iso_utc(b.start)})", booking=b.id
        )
    if now >= _allowed_until(b, grace):
        raise NotBooked(
            f"{command}: booking {b.id} expired at {iso_utc(b.end)}; extend it with "
            f"'labctl extend {b.id} --by 1h' (if the hosts are free)",
            booking=b.id,
        )
    return b


def _implicit(
    store: BookingStore, owner: str, gated: list[str], command: str, now: datetime, grace: timedelta
) -> dict[str, Booking]:
    mine = [b for b in store.at(gated, now, grace) if b.owner == owner]
    covering: dict[str, Booking] = {}
    for host in gated:
        # prefer a booking still running over one only inside the teardown grace
        candidates = sorted((b for b in mine if host in b.hosts), key=lambda b: (b.end <= now, b.start, b.id))
        if candidates:
            covering[host] = candidates[0]
    missing = [h for h in gated if h not in covering]
    if missing:
        host = missing[0]
        more = f" (and {len(missing) - 1} more: {', '.join(missing[1:])})" if len(missing) > 1 else ""
        raise NotBooked(
            f"{command} refused: host {host}{more} requires a booking ({REQUIRED_VAR}) and {owner} holds "
            f"none active now; " + _holder_text(store, host, owner, now),
            host=host,
            missing=missing,
        )
    return covering


def _check_nobody_else_after_end(
    store: BookingStore, owner: str, covering: dict[str, Booking], command: str, now: datetime
) -> None:
    """Inside the teardown grace the booking has ended: refuse if someone else's has begun."""
    for host, b in covering.items():
        if now < b.end:
            continue
        others = [x for x in store.at([host], now) if x.owner != owner]
        if others:
            x = others[0]
            raise NotBooked(
                f"{command}: your booking {b.id} ended at {iso_utc(b.end)} and host {host} is now held by "
                f"{x.describe()}",
                host=host,
                holder={"id": x.id, "owner": x.owner, "start": iso_utc(x.start), "end": iso_utc(x.end)},
            )


def _holder_text(store: BookingStore, host: str, owner: str, now: datetime) -> str:
    """Who holds ``host`` now, and what the caller could do about it."""
    holders = [b for b in store.at([host], now) if b.owner != owner]
    if holders:
        b = holders[0]
        text = f"it is held by {b.owner}: {b.describe()}"
    else:
        text = f"it is free now; book it with 'labctl book --hosts {host} --start now --duration 2h'"
    mine = [b for b in store.list_bookings(host=host, include_past=True, now=now) if b.owner == owner]
    upcoming = [b for b in mine if b.status != STORED_RELEASED and b.start > now]
    ended = [b for b in mine if b.status != STORED_RELEASED and b.end <= now]
    if upcoming:
        text += f"; your booking {upcoming[0].id} starts {iso_utc(upcoming[0].start)}"
    elif ended:
        last = ended[-1]
        text += f"; your booking {last.id} expired at {iso_utc(last.end)} (extend it: 'labctl extend {last.id} --by 1h')"
    return text
