"""Booking operations as a script or notebook would call them (the CLI is a thin layer on top).

These functions take parsed, typed values; parsing user text is in
:mod:`labctl.booking.model`. The store does the transactional work; this module adds
what is about the lab rather than the database: host names must exist in the
inventory, and a caller may wait for hosts to become free.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

from labctl.booking.model import Booking, BookingRequest, utcnow
from labctl.booking.store import BookingStore
from labctl.errors import BookingConflict, InputError
from labctl.inventory import Inventory

#: Longest sleep between two attempts of ``book(..., wait=...)``. Short enough that a
#: released host is picked up promptly, long enough not to hammer a shared database.
POLL_INTERVAL = timedelta(seconds=2)


def check_hosts(inventory: Inventory, names: Iterable[str]) -> tuple[str, ...]:
    """Inventory host names for ``names``; a group name stands for its hosts. Unknown names are InputError."""
    chosen: list[str] = []
    for name in names:
        if name in inventory.hosts:
            members = [name]
        elif inventory.groups.get(name):
            members = sorted(inventory.groups[name])
        else:
            known = ", ".join(sorted(inventory.hosts))
            raise InputError(
                f"unknown host {name!r} (inventory has: {known})", file=str(inventory.path), host=name
            )
        chosen.extend(m for m in members if m not in chosen)
    return tuple(chosen)


def book(
    store: BookingStore,
    request: BookingRequest,
    *,
    wait: timedelta | None = None,
    start_now: bool = False,
    clock: Callable[[], datetime] = utcnow,
    sleep: Callable[[float], None] = time.sleep,
    on_wait: Callable[[BookingConflict, timedelta], None] | None = None,
) -> Booking:
    """Book ``request``; with ``wait``, retry until the window is free or ``wait`` has passed.

    ``start_now`` means the request was for "now": each retry starts at the current
    time (keeping the duration) instead of an instant that has gone by. When the wait
    runs out, the last BookingConflict is raised, naming the holder.
    """
    now = clock()
    if start_now:
        # "now" means when the hosts are actually taken, not when the flags were parsed
        # (loading an inventory can take seconds, longer than a short booking lasts)
        request = request.at(now)
    request.check_not_past(now)
    deadline = now + wait if wait is not None else None
    while True:
        try:
            return store.create(request, now=now)
        except BookingConflict as conflict:
            if deadline is None:
                raise
            left = deadline - clock()
            if left <= timedelta(0):
                raise
            if on_wait is not None:
                on_wait(conflict, left)
            sleep(min(POLL_INTERVAL, left).total_seconds())
            now = clock()
            if start_now:
                request = request.at(now)
