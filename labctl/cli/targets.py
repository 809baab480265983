"""Resolve the hosts a command targets, and check the booking gate, before anything runs."""

from __future__ import annotations

from pathlib import Path

from labctl.cli.common import App, resolve_inventory
from labctl.inventory import Host, Inventory, load_inventory


def target_hosts(
    app: App, inventory: Path | None, limit: str | None, booking_id: str | None, command: str
) -> tuple[Inventory, list[Host]]:
    """Load the inventory, select hosts by --limit, and refuse (exit 3) without a needed booking."""
    inv = load_inventory(resolve_inventory(app, inventory))
    hosts = inv.select(limit)
    from labctl.booking.gate import require_booking  # after input checks: bad input exits 2 first

    require_booking(app.settings, inv, hosts, booking_id=booking_id, command=command)
    return inv, hosts
