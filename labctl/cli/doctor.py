"""`labctl doctor`: check that hosts are reachable and fit for experiments (read-only, no booking needed)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from labctl.cli.common import App, json_option, pass_app, resolve_inventory
from labctl.doctor import Check, HostReport, run_doctor
from labctl.inventory import load_inventory

_STYLE = {"ok": "green", "warn": "yellow", "fail": "red", "info": "default"}
_URING = {0: "enabled", 1: "group only", 2: "disabled", None: "n/a (<6.6)"}


def _brief(key: str, c: Check) -> str:
    """A few words for the table; the full text is in the warnings below it and in --json."""
    d = c.data
    if key in ("reachable", "ssh"):
        return "ok" if c.status == "ok" else str(d.get("reason", c.summary))
    if key == "python3":
        return str(d.get("version", "missing"))
    if key == "privileges":
        return "root" if d.get("root") else ("sudo" if d.get("sudo") else "none")
    if key == "topology":
        brief = (
            f"{d['sockets']}s x {d['cores_per_socket']}c x {d['threads_per_core']}t, {d['numa_nodes']} NUMA"
        )
        return brief + (" (!)" if d.get("mismatch") else "")
    if key == "io_uring":
        return _URING.get(d.get("io_uring_disabled"), "?")
    if key == "perf":
        if not d.get("path"):
            return "missing"
        if not d.get("software_events"):
            return "broken"
        hw = d.get("hardware_events") or {}
        return "sw+hw" if hw and all(hw.values()) else "sw only"
    if key == "toolchains":
        tools = d.get("tools", {})
        return " ".join(
            f"{t}:{'.'.join(str(v.get('version') or '?').split('.')[:2])}" for t, v in tools.items()
        )
    return c.summary


def _cell(report: HostReport, key: str) -> str:
    c = report.checks.get(key)
    if c is None:
        return "[dim]-[/]"
    return f"[{_STYLE[c.status]}]{_brief(key, c)}[/]"


_COLUMNS = ("ssh", "python3", "privileges", "kernel", "topology", "io_uring", "perf", "toolchains")


def _print_table(app: App, reports: dict[str, HostReport]) -> None:
    t = Table(title="labctl doctor", title_justify="left")
    t.add_column("host")
    t.add_column("result")
    for col in _COLUMNS:
        t.add_column(col)
    for name, r in reports.items():
        result = "[green]ok[/]" if r.ok else ("[red]unreachable[/]" if r.unreachable else "[red]failed[/]")
        ssh = "reachable" if "ssh" not in r.checks or r.checks["reachable"].status != "ok" else "ssh"
        t.add_row(name, result, *[_cell(r, ssh if k == "ssh" else k) for k in _COLUMNS])
    app.out.print(t)
    for name, r in reports.items():
        for w in r.warnings:
            app.out.print(f"[yellow]warning[/] {name}: {w}", highlight=False)


@click.command("doctor")
@click.option(
    "-i",
    "--inventory",
    "inventory",
    type=click.Path(path_type=Path),
    default=None,
    help="Inventory file (default: the 'inventory' setting).",
)
@click.option("--limit", "-l", default=None, help="Comma-separated hosts or groups.")
@click.option(
    "--timeout",
    type=click.FloatRange(0.1, 300),
    default=10.0,
    show_default=True,
    help="Seconds to wait for TCP connect, SSH handshake and login.",
)
@json_option
@pass_app
def doctor_cmd(app: App, inventory: Path | None, limit: str | None, timeout: float) -> int:
    """Check each host: reachable, SSH login with a known host key, Python 3, root or
    passwordless sudo, kernel, sockets/cores/NUMA nodes, io_uring, perf, toolchains.

    Read-only: needs no booking. Exit 1 if any host fails; warnings do not fail.
    """
    inv = load_inventory(resolve_inventory(app, inventory))
    hosts = inv.select(limit)  # an unknown host is input error (exit 2) before any connection
    if not app.json_mode:
        app.info(f"doctor: checking {len(hosts)} host(s): {', '.join(h.name for h in hosts)}")
    reports = run_doctor(hosts, timeout=timeout, workers=app.settings.forks)
    failed = {n: r.msg for n, r in reports.items() if not r.ok}
    if not app.json_mode:
        _print_table(app, reports)
    for name, msg in failed.items():
        kind = "unreachable" if reports[name].unreachable else "failed"
        app.info(f"doctor: {name} {kind}: {msg}")
    doc = {
        "inventory": str(inv.path),
        "hosts": {n: r.to_json() for n, r in reports.items()},
        "failed_hosts": sorted(failed),
    }
    return app.finish(doc, ok=not failed)
