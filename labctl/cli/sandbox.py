"""`labctl sandbox up|down|status|stop-host|start-host`: sandbox hosts on this machine."""

from __future__ import annotations

import click
from rich.table import Table

from labctl.cli.common import App, json_option, pass_app
from labctl.sandbox import Sandbox


def _sandbox(app: App) -> Sandbox:
    return Sandbox(app.settings.data_dir, on_step=lambda msg: app.info(f"sandbox: {msg}"))


@click.group("sandbox")
def sandbox_cmd() -> None:
    """Create or remove sandbox hosts: network namespaces with their own sshd (needs root).

    The hosts (sbx-1, sbx-2, …) get addresses in 198.18.0.0/15, a fresh key pair and a
    known_hosts file, and are listed in <data_dir>/sandbox/inventory.yml.
    """


@sandbox_cmd.command("up")
@click.option(
    "--hosts",
    "n",
    type=click.IntRange(1, 200),
    default=3,
    show_default=True,
    help="Number of hosts; a different number adds or removes hosts.",
)
@json_option
@pass_app
def up_cmd(app: App, n: int) -> int:
    """Create (or complete) the sandbox; running it again changes nothing."""
    res = _sandbox(app).up(n)
    if not app.json_mode:
        what = "created/updated" if res.changed else "already up, nothing changed"
        app.out.print(f"sandbox {what}: {len(res.hosts)} host(s) in {res.subnet}", highlight=False)
        for name, addr in res.addresses.items():
            app.out.print(f"  {name}  {addr}", highlight=False)
        app.out.print(f"inventory: {res.inventory}", highlight=False)
    doc = {
        "inventory": str(res.inventory),
        "hosts": res.hosts,
        "addresses": res.addresses,
        "known_hosts": str(res.known_hosts),
        "subnet": res.subnet,
        "changed": res.changed,
        "changes": res.changes,
    }
    return app.finish(doc)


@sandbox_cmd.command("down")
@json_option
@pass_app
def down_cmd(app: App) -> int:
    """Remove every host, link, sshd process and file of the sandbox."""
    res = _sandbox(app).down()
    if not app.json_mode:
        app.out.print(
            "sandbox removed" if res.removed else "no sandbox here, nothing to remove", highlight=False
        )
    return app.finish({"removed": res.removed, "changed": bool(res.removed)})


@sandbox_cmd.command("status")
@json_option
@pass_app
def status_cmd(app: App) -> int:
    """Show each sandbox host: namespace, sshd pid, port 22 answering. Exit 1 if any is down."""
    sb = _sandbox(app)
    hosts = sb.status()
    if not app.json_mode:
        if not hosts:
            app.info(f"no sandbox in {sb.paths.root}")
        t = Table(title=f"sandbox {sb.paths.root}", title_justify="left")
        for col in ("host", "address", "netns", "sshd pid", "port 22"):
            t.add_column(col)
        for h in hosts:
            t.add_row(
                h.name,
                h.address,
                "yes" if h.netns else "[red]missing[/]",
                str(h.sshd_pid or "[red]-[/]"),
                "[green]open[/]" if h.reachable else "[red]closed[/]",
            )
        if hosts:
            app.out.print(t)
    doc = {
        "inventory": str(sb.paths.inventory) if hosts else None,
        "hosts": {
            h.name: {
                "address": h.address,
                "netns": h.netns,
                "sshd_pid": h.sshd_pid,
                "reachable": h.reachable,
                "ok": h.ok,
            }
            for h in hosts
        },
    }
    return app.finish(doc, ok=all(h.ok for h in hosts))


@sandbox_cmd.command("stop-host")
@click.argument("name")
@click.option(
    "--all",
    "everything",
    is_flag=True,
    help="Kill every process in the host (a crash), not only the listening sshd.",
)
@json_option
@pass_app
def stop_host_cmd(app: App, name: str, everything: bool) -> int:
    """Stop one host's sshd: new connections to it are refused (for fault tests)."""
    stopped = _sandbox(app).stop_host(name, everything=everything)
    if not app.json_mode:
        app.out.print(f"{name}: {'stopped' if stopped else 'was not running'}", highlight=False)
    return app.finish({"host": name, "changed": stopped})


@sandbox_cmd.command("start-host")
@click.argument("name")
@json_option
@pass_app
def start_host_cmd(app: App, name: str) -> int:
    """Start one host's sshd again."""
    started = _sandbox(app).start_host(name)
    if not app.json_mode:
        app.out.print(f"{name}: {'started' if started else 'already running'}", highlight=False)
    return app.finish({"host": name, "changed": started})
