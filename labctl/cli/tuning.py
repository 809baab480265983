"""`labctl tune` (apply a profile / --show / --verify) and `labctl teardown`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.table import Table

from labctl.cli.common import App, host_options, hosts_table_doc, json_option, pass_app, print_host_results
from labctl.cli.targets import target_hosts
from labctl.errors import InputError
from labctl.progress import AnsibleProgress
from labctl.state import StateStore
from labctl.tuning.plan import describe_value
from labctl.tuning.profiles import available_profiles, load_profile
from labctl.tuning.snapshot import has_anything
from labctl.tuning.targets import resolve_targets
from labctl.tuning.teardown import TeardownReport, teardown
from labctl.tuning.tune import ShowReport, TuneReport, show, tune


@click.command("tune")
@host_options()
@click.option(
    "--profile",
    "-p",
    "profiles",
    multiple=True,
    metavar="NAME|FILE",
    help="Profile from profiles/ or a YAML file; repeat to compose (later wins).",
)
@click.option("--show", is_flag=True, help="Per host and knob: original, current, wanted, drifted.")
@click.option("--verify", is_flag=True, help="Read every tuned knob back; exit 1 if any drifted.")
@json_option
@pass_app
def tune_cmd(
    app: App,
    inventory: Path | None,
    limit: str | None,
    booking_id: str | None,
    check: bool,
    profiles: tuple[str, ...],
    show: bool,
    verify: bool,
) -> int:
    """Apply a tuning profile after recording every original value.

    The originals are stored locally before the first write, so `labctl teardown`
    restores them exactly, even after a crash. Knobs a host lacks are reported as
    not available. A second run with the same profile changes nothing.
    """
    if show or verify:
        if profiles or check:
            raise InputError(
                "--show and --verify read what is recorded; they take no --profile or --check",
                key="--profile" if profiles else "--check",
            )
        return _show(app, inventory, limit, verify)
    if not profiles:
        raise InputError(
            f"--profile is required (shipped: {', '.join(available_profiles())}), or use --show / --verify",
            key="--profile",
        )
    profile = load_profile(list(profiles))  # validated before any host is touched
    inv, hosts = target_hosts(app, inventory, limit, booking_id, "tune")
    title = f"tune {'+'.join(profile.names)}" + (" --check" if check else "")
    with AnsibleProgress(app.err, title, [h.name for h in hosts]) as progress:
        report = tune(app.settings, inv, hosts, profile, check=check, on_event=progress)
    if not app.json_mode:
        _print_tune(app, report)
    for name, h in report.hosts.items():
        if not h.ok:
            app.info(f"tune failed on {name}: {h.msg}")
    return app.finish(_tune_doc(report), ok=report.ok)


def _tune_doc(report: TuneReport) -> dict[str, Any]:
    hosts = hosts_table_doc(report.hosts)
    for name, entry in hosts.items():
        entry["kernel"] = report.kernels.get(name)
        entry["knobs"] = report.knobs.get(name, {})
        entry["not_available"] = sorted(
            k for k, r in entry["knobs"].items() if r["status"] == "not available"
        )
    return {
        "profile": report.profile.names,
        "profile_files": report.profile.files,
        "wanted": report.profile.knobs,
        "check": report.check,
        "hosts": hosts,
        "elapsed_s": round(report.elapsed_s, 2),
        "artifacts": [str(r.artifacts) for r in report.runs],
    }


def _print_tune(app: App, report: TuneReport) -> None:
    for name, rows in report.knobs.items():
        t = Table(
            title=f"{name}: {'+'.join(report.profile.names)}"
            + (" (check: nothing written)" if report.check else ""),
            title_justify="left",
        )
        for col in ("knob", "before", "wanted", "after", "status"):
            t.add_column(col)
        for knob_id, r in rows.items():
            status = r["status"] + (f" ({r['reason']})" if r["reason"] and r["status"] != "changed" else "")
            t.add_row(
                knob_id,
                describe_value(r.get("before")) if r["available"] else "n/a",
                describe_value(r.get("wanted")),
                describe_value(r["after"]) if "after" in r else "",
                status,
            )
        app.out.print(t)
    print_host_results(app, f"tune: {report.elapsed_s:.1f}s", report.hosts)


def _show(app: App, inventory: Path | None, limit: str | None, verify: bool) -> int:
    targets = resolve_targets(app.settings, inventory, limit)
    try:
        with AnsibleProgress(
            app.err, "tune --verify" if verify else "tune --show", targets.hosts
        ) as progress:
            report = show(app.settings, targets, on_event=progress)
    finally:
        targets.cleanup()
    if not app.json_mode:
        _print_show(app, report)
    for note in report.notes:
        app.info(note)
    drift = report.drifted
    for name, knobs in drift.items():
        app.info(f"{name}: drifted since tuning: {', '.join(knobs)}")
    ok = report.ok and (not verify or not drift)
    hosts = hosts_table_doc(report.hosts)
    for name, entry in hosts.items():
        entry["profiles"] = report.profiles.get(name, [])
        entry["knobs"] = report.knobs.get(name, {})
    doc = {"hosts": hosts, "drifted": drift, "notes": report.notes}
    return app.finish(doc, ok=ok)


def _print_show(app: App, report: ShowReport) -> None:
    if not report.hosts:
        app.info("nothing tuned: no host has a recorded tuning")
    for name, rows in report.knobs.items():
        if not rows:
            app.out.print(f"{name}: nothing tuned", highlight=False)
            continue
        profiles = ", ".join(report.profiles.get(name, [])) or "none"
        t = Table(title=f"{name}: profiles {profiles}", title_justify="left")
        for col in ("knob", "original", "current", "wanted", "state"):
            t.add_column(col)
        for knob_id, r in rows.items():
            if not r["available"]:
                state = f"not available ({r['reason']})"
            elif r["noop"]:
                state = f"no-op ({r['reason']})"
            elif r["drifted"] is None:
                state = "unknown (host not read)"
            else:
                state = "[red]DRIFTED[/]" if r["drifted"] else "as tuned"
            t.add_row(
                knob_id,
                describe_value(r["original"]) if r["available"] else "n/a",
                describe_value(r["current"]) if r["available"] else "n/a",
                describe_value(r["wanted"]),
                state,
            )
        app.out.print(t)
        host = report.hosts.get(name)
        if host is not None and host.msg:
            app.out.print(f"  {host.msg}", highlight=False)


@click.command("teardown")
@host_options()
@click.option(
    "--grace",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds between SIGTERM and SIGKILL for labctl's processes.",
)
@json_option
@pass_app
def teardown_cmd(
    app: App, inventory: Path | None, limit: str | None, booking_id: str | None, check: bool, grace: float
) -> int:
    """Stop labctl's processes, restore every tuned knob, remove deployed files.

    Works from local state alone: without -i it tears down every host recorded
    there, reaching it with the connection recorded when it was first touched.
    """
    from labctl.booking.gate import require_booking

    targets = resolve_targets(app.settings, inventory, limit)
    try:
        store = StateStore(app.settings.data_dir)
        busy = [n for n in targets.hosts if has_anything(store.get(n))]
        if busy:
            require_booking(app.settings, targets.inventory, busy, booking_id=booking_id, command="teardown")
        for note in targets.notes:
            app.info(note)
        title = "teardown" + (" --check" if check else "")
        with AnsibleProgress(app.err, title, busy) as progress:
            report = teardown(app.settings, targets, check=check, on_event=progress, grace_s=grace)
    finally:
        targets.cleanup()
    if not app.json_mode:
        _print_teardown(app, report)
    for name, h in report.hosts.items():
        if not h.ok:
            app.info(f"teardown failed on {name}: {h.msg}")
    hosts = hosts_table_doc(report.hosts)
    for name, entry in hosts.items():
        entry.update(report.detail.get(name, {}))
    doc = {"check": check, "hosts": hosts, "notes": report.notes, "elapsed_s": round(report.elapsed_s, 2)}
    return app.finish(doc, ok=report.ok)


def _print_teardown(app: App, report: TeardownReport) -> None:
    if not report.hosts:
        app.info("nothing to tear down: no host recorded in local state")
        return
    for name, detail in report.detail.items():
        knobs = detail.get("knobs") or {}
        if not knobs:
            continue
        t = Table(
            title=f"{name}: knobs" + (" (check: nothing written)" if report.check else ""),
            title_justify="left",
        )
        for col in ("knob", "original", "before", "after", "status"):
            t.add_column(col)
        for knob_id, r in knobs.items():
            t.add_row(
                knob_id,
                describe_value(r["original"]),
                describe_value(r["before"]),
                describe_value(r["after"]) if "after" in r else "",
                r["status"],
            )
        app.out.print(t)
    print_host_results(app, f"teardown: {report.elapsed_s:.1f}s", report.hosts)
