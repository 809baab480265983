"""``labctl book | bookings | extend | release``: flags in, typed booking API, output out."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import click

from labctl.booking.model import (
    CURRENT_STATES,
    Booking,
    BookingRequest,
    State,
    human_duration,
    parse_booking_id,
    parse_hosts,
    parse_margin,
    parse_positive_duration,
    parse_time,
    utcnow,
)
from labctl.cli.common import App, json_option, pass_app, resolve_inventory
from labctl.errors import BookingConflict, InputError

_STATE_STYLE = {
    State.BOOKED: "cyan",
    State.ACTIVE: "bold green",
    State.EXPIRED: "dim",
    State.RELEASED: "dim",
}


def _local(dt: datetime) -> str:
    """A time in the user's own zone, which is how people read a schedule."""
    return dt.astimezone().strftime("%Y-%m-%d %H:%M %Z")


def _summary(b: Booking) -> str:
    return f"booking {b.id}: {', '.join(b.hosts)} {_local(b.start)} -> {_local(b.end)} ({b.owner})"


@click.command("book")
@click.option(
    "--hosts", required=True, help="Comma-separated hosts (or groups) to book: all of them or none."
)
@click.option(
    "--start", default="now", show_default=True, help="'now' or ISO-8601 with a zone, e.g. 2031-03-01T10:00Z."
)
@click.option("--duration", required=True, help="Length of the window, e.g. 4h or 1h30m.")
@click.option("--purpose", default=None, help="What the hosts are for (shown to others).")
@click.option(
    "-i",
    "--inventory",
    type=click.Path(path_type=Path),
    default=None,
    help="Inventory the host names are checked against (default: the 'inventory' setting).",
)
@click.option(
    "--wait-until-free",
    "wait",
    default=None,
    metavar="TIMEOUT",
    help="If the hosts are taken, keep trying for up to TIMEOUT (e.g. 30m).",
)
@json_option
@pass_app
def book_cmd(
    app: App,
    hosts: str,
    start: str,
    duration: str,
    purpose: str | None,
    inventory: Path | None,
    wait: str | None,
) -> int:
    """Reserve hosts for a time window; prints the booking id."""
    from labctl.booking.service import book, check_hosts
    from labctl.booking.store import open_store
    from labctl.inventory import load_inventory

    # cheap checks of the flags first, so a typo is reported before the inventory is parsed
    now = utcnow()
    names = parse_hosts(hosts)
    begin = parse_time(start, now=now, key="start")
    length = parse_positive_duration(duration, key="duration")
    patience = parse_positive_duration(wait, key="wait-until-free") if wait is not None else None
    margin = parse_margin(app.settings.booking_margin)
    inv = load_inventory(resolve_inventory(app, inventory))
    request = BookingRequest(
        owner=app.settings.owner,
        hosts=check_hosts(inv, names),
        start=begin,
        end=begin + length,
        purpose=purpose,
        margin=margin,
    )
    told: list[bool] = []

    def on_wait(conflict: BookingConflict, left: timedelta) -> None:
        if not told:  # say it once; the poll itself is silent
            app.info(f"waiting up to {human_duration(left)} for the hosts to be free: {conflict.message}")
            told.append(True)

    with open_store(app.settings) as store:
        b = book(store, request, wait=patience, start_now=start.strip().lower() == "now", on_wait=on_wait)
    if not app.json_mode:
        app.out.print(str(b.id), highlight=False)
        app.info(f"booked {_summary(b)}")
    return app.finish({"booking_id": b.id, "booking": b.to_dict(utcnow())})


@click.command("bookings")
@click.option("--host", default=None, help="Only bookings that include this host.")
@click.option("--all", "show_all", is_flag=True, help="Also past, expired and released bookings.")
@json_option
@pass_app
def bookings_cmd(app: App, host: str | None, show_all: bool) -> int:
    """List bookings (current and future ones unless --all), times in your local zone."""
    from labctl.booking.store import open_store

    now = utcnow()
    with open_store(app.settings) as store:
        found = store.list_bookings(host=host, include_past=show_all, now=now)
    if not show_all:  # the store filters by the clock too; this keeps the contract explicit
        found = [b for b in found if b.state(now) in CURRENT_STATES]
    if not app.json_mode:
        _print_table(app, found, now, show_all)
    return app.finish({"bookings": [b.to_dict(now) for b in found]})


def _when(b: Booking, now: datetime) -> str:
    """The state's detail: how soon, how long ago, or who forced it and why."""
    state = b.state(now)
    if state is State.BOOKED:
        return f"starts in {human_duration(b.start - now)}"
    if state is State.ACTIVE:
        return f"ends in {human_duration(b.end - now)}"
    if state is State.RELEASED and b.forced_by:
        return f"by {b.forced_by}, was {b.previous_owner}'s: {b.forced_reason}"
    if state is State.RELEASED and b.released_at:
        return f"at {b.released_at.astimezone().strftime('%Y-%m-%d %H:%M')}"
    return f"{human_duration(now - b.end)} ago"


def _print_table(app: App, found: list[Booking], now: datetime, show_all: bool) -> None:
    from rich.table import Table

    if not found:
        app.info("no bookings" if show_all else "no current or future bookings (--all shows past ones)")
        return
    zone = now.astimezone().strftime("%Z")
    table = Table(title=f"Bookings (times in {zone})", title_justify="left")
    for col in ("id", "who", "hosts", "start", "end", "state", "purpose"):
        table.add_column(col, justify="right" if col == "id" else "left", no_wrap=col in ("id", "start"))
    for b in found:
        state = b.state(now)
        start = b.start.astimezone()
        end = b.end.astimezone()
        # the end's date only when it differs from the start's: a schedule reads by the day
        end_text = end.strftime("%H:%M") if end.date() == start.date() else end.strftime("%Y-%m-%d %H:%M")
        if b.margin:
            end_text += f" +{human_duration(b.margin)}"
        table.add_row(
            str(b.id),
            b.owner,
            ", ".join(b.hosts),
            start.strftime("%Y-%m-%d %H:%M"),
            end_text,
            f"[{_STATE_STYLE[state]}]{state.value}[/] [dim]{_when(b, now)}[/]",
            b.purpose or "",
        )
    app.out.print(table)


@click.command("extend")
@click.argument("booking_id", metavar="ID")
@click.option("--by", "by", required=True, help="How much longer, e.g. 2h.")
@json_option
@pass_app
def extend_cmd(app: App, booking_id: str, by: str) -> int:
    """Extend one of your bookings; refused (nothing changed) if the hosts are taken after it."""
    from labctl.booking.store import open_store

    bid = parse_booking_id(booking_id)
    delta = parse_positive_duration(by, key="by")
    with open_store(app.settings) as store:
        b = store.extend(bid, delta, actor=app.settings.owner)
    if not app.json_mode:
        app.out.print(f"extended {_summary(b)}", highlight=False)
    return app.finish({"booking_id": b.id, "booking": b.to_dict(utcnow())})


@click.command("release")
@click.argument("booking_id", metavar="ID")
@click.option("--force", is_flag=True, help="Release someone else's booking (needs --reason; recorded).")
@click.option("--reason", default=None, help="Why a booking is force-released (recorded with your name).")
@json_option
@pass_app
def release_cmd(app: App, booking_id: str, force: bool, reason: str | None) -> int:
    """Release a booking and free its hosts (only the owner, unless --force --reason)."""
    from labctl.booking.store import open_store

    bid = parse_booking_id(booking_id)
    if force and not (reason or "").strip():
        raise InputError("--force needs --reason TEXT (it is recorded with your name)", key="reason")
    if reason is not None and not force:
        raise InputError("--reason is only for --force", key="reason")
    with open_store(app.settings) as store:
        b = store.release(bid, actor=app.settings.owner, force=force, reason=reason)
    if not app.json_mode:
        how = f" (forced; was {b.previous_owner}'s)" if b.forced_by else ""
        app.out.print(f"released booking {b.id}: {', '.join(b.hosts)}{how}", highlight=False)
    return app.finish({"booking_id": b.id, "booking": b.to_dict(utcnow())})
