"""Booking: reserve lab hosts for a time window so nobody else touches them meanwhile.

- :mod:`~labctl.booking.model` — the booking, its states, time parsing (pure logic)
- :mod:`~labctl.booking.store` — the store interface and its SQLite / PostgreSQL backends
- :mod:`~labctl.booking.migrations` — the versioned schema migrations
- :mod:`~labctl.booking.service` — operations as scripts call them (book, wait for free hosts)
- :mod:`~labctl.booking.gate` — :func:`require_booking`, called before any Ansible run

See docs/booking.md for the model and the reasons behind it.
"""

from labctl.booking.gate import require_booking
from labctl.booking.model import Booking, BookingRequest, State
from labctl.booking.service import book, check_hosts
from labctl.booking.store import BookingStore, open_store

__all__ = [
    "Booking",
    "BookingRequest",
    "BookingStore",
    "State",
    "book",
    "check_hosts",
    "open_store",
    "require_booking",
]
