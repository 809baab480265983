"""What every command shares: the context object, output, and host-command options.

This package is the only code that parses flags, prints, and maps errors to exit
codes. Everything it calls is the typed API a script or notebook would use.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

from labctl.config import Settings
from labctl.errors import InputError

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class App:
    """Per-invocation context: resolved settings and the two output streams."""

    settings: Settings
    json_mode: bool = False
    out: Console = field(default_factory=lambda: Console(soft_wrap=True))
    err: Console = field(default_factory=lambda: Console(stderr=True, soft_wrap=True))

    def finish(self, doc: dict[str, Any], ok: bool = True, code: int | None = None) -> int:
        """Print the one JSON document (in --json mode) and return the exit code."""
        if self.json_mode:
            doc = {"ok": ok, **doc}
            sys.stdout.write(json.dumps(doc, indent=1, default=str) + "\n")
            sys.stdout.flush()
        return code if code is not None else (0 if ok else 1)

    def info(self, text: str) -> None:
        """Progress and notes go to stderr, so stdout stays one JSON document."""
        self.err.print(text, highlight=False)


def json_option(f: F) -> F:
    """``--json`` on every command: sets the mode on the App before the command runs."""

    def cb(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
        if value:
            ctx.ensure_object(dict)["json"] = True
        return value

    return click.option(
        "--json",
        "json_out",
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=cb,
        help="Print one JSON document on stdout (logs go to stderr).",
    )(f)


def pass_app(f: F) -> F:
    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        app: App = ctx.find_root().meta["labctl.app"]()
        app.json_mode = app.json_mode or bool(ctx.find_root().ensure_object(dict).get("json"))
        return f(app, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def host_options(check: bool = True) -> Callable[[F], F]:
    """-i/--inventory, --limit, --booking, and --check for commands that touch hosts."""

    def deco(f: F) -> F:
        f = click.option(
            "--booking",
            "booking_id",
            default=None,
            help="Booking to act under (default: the caller's active booking).",
        )(f)
        f = click.option("--limit", "-l", default=None, help="Comma-separated hosts or groups.")(f)
        f = click.option(
            "-i",
            "--inventory",
            "inventory",
            type=click.Path(path_type=Path),
            default=None,
            help="Inventory file (default: the 'inventory' setting).",
        )(f)
        if check:
            f = click.option(
                "--check", is_flag=True, help="Dry run: show what would change, change nothing."
            )(f)
        return f

    return deco


def resolve_inventory(app: App, inventory: Path | None) -> Path:
    path = inventory or app.settings.inventory
    if path is None:
        raise InputError("no inventory given: pass -i FILE or set LABCTL_INVENTORY", key="inventory")
    return Path(path)


def hosts_table_doc(results: dict[str, Any]) -> dict[str, Any]:
    """The ``hosts`` key of the --json contract from engine HostResults."""
    return {
        n: {"ok": h.ok, "changed": h.changed, "failed": h.failed, "unreachable": h.unreachable, "msg": h.msg}
        for n, h in results.items()
    }


def print_host_results(app: App, title: str, results: dict[str, Any]) -> None:
    from rich.table import Table

    t = Table(title=title, title_justify="left")
    for col in ("host", "result", "changed", "message"):
        t.add_column(col)
    for n, h in results.items():
        status = "[green]ok[/]" if h.ok else ("[red]unreachable[/]" if h.unreachable else "[red]failed[/]")
        t.add_row(n, status, str(h.changed), h.msg)
    app.out.print(t)
