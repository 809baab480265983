"""`labctl provision` and `labctl hosts`."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from labctl.cli.common import App, host_options, hosts_table_doc, json_option, pass_app, print_host_results
from labctl.cli.targets import target_hosts
from labctl.progress import AnsibleProgress
from labctl.provision import facts_summary, provision
from labctl.state import StateStore


@click.command("provision")
@host_options()
@json_option
@pass_app
def provision_cmd(
    app: App, inventory: Path | None, limit: str | None, booking_id: str | None, check: bool
) -> int:
    """Install base packages and toolchains, and record each host's topology.

    A second run changes nothing. --check shows what would change.
    """
    inv, hosts = target_hosts(app, inventory, limit, booking_id, "provision")
    with AnsibleProgress(
        app.err, "provision" + (" --check" if check else ""), [h.name for h in hosts]
    ) as progress:
        result = provision(app.settings, inv, hosts, check=check, on_event=progress)
    store = StateStore(app.settings.data_dir)
    facts = {h.name: store.facts(h.name) for h in hosts}
    if not app.json_mode:
        print_host_results(
            app, f"provision: {result.elapsed_s:.1f}s, artifacts in {result.artifacts}", result.hosts
        )
        if not check:
            _print_facts(app, {n: f for n, f in facts.items() if f})
    doc = {
        "hosts": hosts_table_doc(result.hosts),
        "check": check,
        "elapsed_s": round(result.elapsed_s, 2),
        "artifacts": str(result.artifacts),
        "facts": facts if not check else {},
    }
    failures = result.failures()
    if failures:
        app.info("provision failed on: " + "; ".join(f"{n}: {m}" for n, m in failures.items()))
    return app.finish(doc, ok=result.ok)


def _print_facts(app: App, facts: dict[str, dict]) -> None:
    if not facts:
        return
    t = Table(title="host facts", title_justify="left")
    t.add_column("fact")
    for name in facts:
        t.add_column(name)
    rows = {name: facts_summary(f) for name, f in facts.items()}
    for key in next(iter(rows.values())):
        t.add_row(key, *[str(rows[n].get(key)) for n in facts])
    app.out.print(t)


@click.command("hosts")
@click.argument("names", nargs=-1)
@json_option
@pass_app
def hosts_cmd(app: App, names: tuple[str, ...]) -> int:
    """Show the facts recorded by `labctl provision` (all hosts, or NAMES)."""
    store = StateStore(app.settings.data_dir)
    facts = store.all_facts()
    if names:
        facts = {n: f for n, f in facts.items() if n in names}
    if not app.json_mode:
        if facts:
            _print_facts(app, facts)
        else:
            app.info("no host facts recorded yet: run `labctl provision -i INVENTORY`")
    return app.finish({"facts": facts})
