"""`labctl deploy`, `run`, `runs`, `report`, `compare`, `ship`, `up`, `reproduce`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from labctl.cli.common import App, host_options, hosts_table_doc, json_option, pass_app, print_host_results
from labctl.cli.targets import target_hosts
from labctl.experiment.runstore import RunStore
from labctl.progress import AnsibleProgress

VERDICT_STYLE = {"supported": "green", "refuted": "red", "inconclusive": "yellow"}


def _verdict_table(app: App, verdicts: list[dict[str, Any]]) -> None:
    t = Table(title="claims", title_justify="left")
    for col in ("claim", "expectation", "value [95% CI]", "verdict", "reason"):
        t.add_column(col, overflow="fold")
    for v in verdicts:
        ci = v.get("ci")
        val = v.get("value")
        shown = "—" if val is None else (f"{val:.3g}" + (f" [{ci[0]:.3g}, {ci[1]:.3g}]" if ci else ""))
        style = VERDICT_STYLE.get(v["verdict"], "white")
        t.add_row(
            v["claim"],
            escape(v.get("expect", "")),
            shown,
            f"[{style}]{v['verdict']}[/]",
            escape(v.get("reason", "")),
        )
    app.out.print(t)


def _cells_table(app: App, results: dict[str, Any]) -> None:
    t = Table(title="cells", title_justify="left")
    for col in (
        "variant",
        "rate",
        "rep",
        "req rps",
        "ach rps",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "max µs",
        "err",
        "gc max µs",
        "rss MiB",
        "status",
    ):
        t.add_column(col, justify="right" if col not in ("variant", "status") else "left")
    for c in results.get("cells", []):
        s = c.get("summary") or {}
        srv = c.get("server") or {}
        status = c.get("status", "?") + (" (saturated)" if c.get("saturated") else "")
        rss = srv.get("rss_hwm_bytes")
        t.add_row(
            c["variant"],
            c["rate"],
            str(c["rep"]),
            f"{c.get('rate_rps') or 0:.0f}",
            f"{s.get('achieved_rps', 0):.0f}",
            *(str(s.get(k, "—")) for k in ("p50_us", "p99_us", "p999_us", "max_us")),
            str(int(s.get("errors", 0)) + int(s.get("timeouts", 0))) if s else "—",
            str(srv.get("gc_pause_max_us", "—")),
            f"{rss / 2**20:.0f}" if rss else "—",
            status,
        )
    app.out.print(t)
    for c in results.get("cells", []):
        if c.get("error"):
            app.err.print(f"[red]cell {c['cell_id']} failed:[/] {c['error']}")


def _ratio_table(app: App, title: str, keys: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    """Ratios with their interval and p-value, one row per comparison; ``keys`` lead each row."""
    t = Table(title=title, title_justify="left")
    for col in (*keys, "ratio", "95% CI", "p", "verdict"):
        t.add_column(col)
    for r in rows:
        ci = r.get("ci")
        t.add_row(
            *(str(r[k]) for k in keys),
            f"{r['ratio']:.3f}" if r.get("ratio") is not None else "—",
            f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "—",
            f"{r['p_value']:.3g}" if r.get("p_value") is not None else "—",
            r.get("verdict", ""),
        )
    app.out.print(t)


def _comparison_table(app: App, results: dict[str, Any]) -> None:
    rows = results.get("comparisons") or []
    if rows:
        title = f"every variant against the baseline ({results.get('baseline')})"
        _ratio_table(app, title, ("rate", "metric", "variant"), rows)


@click.command("deploy")
@host_options()
@json_option
@pass_app
def deploy_cmd(
    app: App, inventory: Path | None, limit: str | None, booking_id: str | None, check: bool
) -> int:
    """Build riskd (Go, Rust, C++) and the load generator once, and ship them (sha256-verified).

    Re-deploying unchanged artifacts changes nothing.
    """
    from labctl.workloads.deploy import build, deploy

    inv, hosts = target_hosts(app, inventory, limit, booking_id, "deploy")
    app.info("building workloads (make workloads) …")
    artifacts = build(app.settings)
    with AnsibleProgress(
        app.err, "deploy" + (" --check" if check else ""), [h.name for h in hosts]
    ) as progress:
        result = deploy(app.settings, inv, hosts, artifacts, check=check, on_event=progress)
    if not app.json_mode:
        print_host_results(app, f"deploy: {result.elapsed_s:.1f}s", result.hosts)
        t = Table(title="artifacts", title_justify="left")
        t.add_column("name")
        t.add_column("sha256")
        t.add_column("size")
        for a in artifacts.values():
            t.add_row(a.name, a.sha256, f"{a.size / 2**20:.1f} MiB")
        app.out.print(t)
    return app.finish(
        {
            "hosts": hosts_table_doc(result.hosts),
            "check": check,
            "artifacts": {n: a.to_json() for n, a in artifacts.items()},
        },
        ok=result.ok,
    )


def _run_doc(report: Any) -> dict[str, Any]:
    o = report.outcome
    failed = [c["cell_id"] for c in o.cells if c.get("status") != "ok"]
    return {
        "run_id": o.run_id,
        "run_dir": str(o.run_dir),
        "status": o.status,
        "verdicts": report.verdicts,
        "points_shipped": report.points_shipped,
        "points_pending": report.points_pending,
        "report": str(report.report_path) if report.report_path else None,
        "cells": len(o.cells),
        "failed_cells": failed,
        "warnings": report.warnings,
    }


def _print_run(app: App, report: Any) -> None:
    from labctl.experiment.runstore import RunStore

    o = report.outcome
    results = RunStore(app.settings.data_dir).results(o.run_dir)
    _cells_table(app, results)
    _comparison_table(app, results)
    _verdict_table(app, report.verdicts)
    app.out.print(
        f"run {o.run_id}: {o.status}; points shipped {report.points_shipped}, pending {report.points_pending}"
    )
    if report.report_path:
        app.out.print(f"report: {report.report_path}")
    for w in report.warnings:
        app.err.print(f"[yellow]warning:[/] {w}")


def _run_code(report: Any) -> int:
    o = report.outcome
    if o.status == "interrupted":
        return 130
    return 0 if o.status == "completed" and all(c.get("status") == "ok" for c in o.cells) else 1


def _plan(app: App, exp: Any, hosts: list[Any]) -> int:
    """--check for run: the matrix, placement and time it would take; nothing is started."""
    from labctl.experiment.matrix import expand
    from labctl.experiment.runner import choose_host

    cells = expand(exp)
    load = exp.load
    per_cell = load.warmup + load.duration + 3  # start, readiness, stop
    capacity = (load.capacity.warmup + load.capacity.duration + 3) * len(exp.variants) if load.relative else 0
    server = choose_host(hosts, exp.placement.server, "server")
    client = choose_host(hosts, exp.placement.client, "client")
    doc = {
        "check": True,
        "experiment": exp.name,
        "cells": [
            {"cell_id": c.cell_id, "variant": c.variant.name, "rate": c.rate_label, "rep": c.rep}
            for c in cells
        ],
        "placement": {"server": server.name, "client": client.name},
        "capacity_first": load.relative,
        "estimated_s": round(capacity + per_cell * len(cells)),
        "claims": [{"claim": c.id, "expect": c.expect} for c in exp.claims],
    }
    if not app.json_mode:
        t = Table(
            title=f"{exp.name}: {len(cells)} cells (repetitions outermost, variants interleaved)",
            title_justify="left",
        )
        for col in ("cell", "variant", "rate", "rep"):
            t.add_column(col)
        for c in doc["cells"]:
            t.add_row(c["cell_id"], c["variant"], c["rate"], str(c["rep"]))
        app.out.print(t)
        app.out.print(
            f"server on {server.name}, load generator on {client.name}; "
            + ("capacities measured first; " if load.relative else "")
            + f"about {doc['estimated_s'] / 60:.1f} min. Nothing was started (--check)."
        )
    return app.finish(doc)


@click.command("run")
@click.argument("experiment", type=click.Path(path_type=Path))
@host_options()
@click.option("--quick", is_flag=True, help="A few seconds per cell, one repetition (demos, tests).")
@json_option
@pass_app
def run_cmd(
    app: App,
    experiment: Path,
    inventory: Path | None,
    limit: str | None,
    booking_id: str | None,
    check: bool,
    quick: bool,
) -> int:
    """Run EXPERIMENT (a YAML spec) on the inventory's hosts and report verdicts.

    Deploys what is missing first. Every point is spooled before it is shipped.
    --check prints the matrix, the placement and an estimate of the time, and starts nothing.
    """
    from labctl.experiment.service import run_experiment
    from labctl.experiment.spec import load_experiment

    exp = load_experiment(experiment, quick=quick)
    inv, hosts = target_hosts(app, inventory, limit, booking_id, "run")
    if check:
        return _plan(app, exp, hosts)
    with AnsibleProgress(app.err, "deploy", [h.name for h in hosts]) as progress:
        report = run_experiment(
            app.settings, exp, inv, hosts, spec_file=experiment, quick=quick, log=app.info, on_event=progress
        )
    if not app.json_mode:
        _print_run(app, report)
    else:
        for w in report.warnings:
            app.info(f"warning: {w}")
    code = _run_code(report)
    return app.finish(_run_doc(report), ok=code == 0, code=code)


@click.command("runs")
@json_option
@pass_app
def runs_cmd(app: App) -> int:
    """List past runs (newest last), and which runs reproduce which."""
    runs = RunStore(app.settings.data_dir).list()
    rows = [
        {
            "run_id": m["run_id"],
            "experiment": m["experiment"],
            "status": m.get("status"),
            "quick": m.get("quick"),
            "started_at": m.get("started_at"),
            "ended_at": m.get("ended_at"),
            "reproduces": m.get("reproduces"),
            "git": (m.get("git") or {}).get("commit"),
        }
        for m in runs
    ]
    if not app.json_mode:
        t = Table(title=f"runs in {RunStore(app.settings.data_dir).root}", title_justify="left")
        for col in ("run id", "experiment", "status", "started", "reproduces"):
            t.add_column(col)
        for r in rows:
            t.add_row(
                r["run_id"],
                r["experiment"],
                str(r["status"]) + (" (quick)" if r["quick"] else ""),
                str(r["started_at"]),
                r["reproduces"] or "",
            )
        app.out.print(t)
    return app.finish({"runs": rows})


@click.command("report")
@click.argument("run")
@click.option("--open", "open_browser", is_flag=True, help="Open report.html in a browser.")
@json_option
@pass_app
def report_cmd(app: App, run: str, open_browser: bool) -> int:
    """Recompute statistics and verdicts of RUN (id or directory) and rewrite its report.html."""
    from labctl.experiment.service import analyze_and_report

    store = RunStore(app.settings.data_dir)
    run_dir = store.dir(run)
    store.manifest(run_dir)
    verdicts, path = analyze_and_report(app.settings, run_dir)
    results = store.results(run_dir)
    if not app.json_mode:
        _cells_table(app, results)
        _comparison_table(app, results)
        _verdict_table(app, verdicts)
        app.out.print(f"report: {path}")
    if open_browser and path:
        import webbrowser

        webbrowser.open(path.as_uri())
    return app.finish(
        {
            "run_id": results.get("run_id"),
            "run_dir": str(run_dir),
            "verdicts": verdicts,
            "comparisons": results.get("comparisons", []),
            "stats": results.get("stats", {}),
            "report": str(path) if path else None,
        }
    )


@click.command("compare")
@click.argument("run")
@click.argument("other", required=False)
@json_option
@pass_app
def compare_cmd(app: App, run: str, other: str | None) -> int:
    """Every variant of RUN against its baseline; with OTHER, RUN against OTHER variant by variant."""
    from labctl.analysis import compare_runs

    store = RunStore(app.settings.data_dir)
    a = store.dir(run)
    if other is None:
        results = store.results(a)
        if not app.json_mode:
            _comparison_table(app, results)
            _verdict_table(app, results.get("verdicts", []))
        return app.finish(
            {
                "run_id": results.get("run_id"),
                "comparisons": results.get("comparisons", []),
                "verdicts": results.get("verdicts", []),
            }
        )
    b = store.dir(other)
    doc = compare_runs(store.results(a), store.results(b), noise_threshold=app.settings.noise_threshold)
    if not app.json_mode:
        _ratio_table(app, f"{other} against {run}", ("variant", "rate", "metric"), doc["rows"])
    return app.finish(doc)


@click.command("ship")
@click.argument("run", required=False)
@json_option
@pass_app
def ship_cmd(app: App, run: str | None) -> int:
    """Send a run's pending points to InfluxDB (all runs with pending points when RUN is omitted).

    Shipping twice creates no duplicates.
    """
    from labctl.errors import InputError
    from labctl.experiment.service import ship_counts

    if not app.settings.influx_url:
        raise InputError(
            "no InfluxDB configured: set LABCTL_INFLUX_URL (and LABCTL_INFLUX_API …)", key="influx_url"
        )
    store = RunStore(app.settings.data_dir)
    dirs = [store.dir(run)] if run else [store.dir(m["run_id"]) for m in store.list()]
    out = {}
    ok = True
    for d in dirs:
        shipped, pending, error = ship_counts(app.settings, d, send=True)
        out[d.name] = {"points_shipped": shipped, "points_pending": pending, "error": error}
        ok = ok and pending == 0
        if not app.json_mode:
            msg = f"{d.name}: {shipped} shipped, {pending} pending" + (f" ({error})" if error else "")
            app.out.print(msg)
    doc: dict[str, Any] = {
        "runs": out,
        "points_shipped": sum(v["points_shipped"] for v in out.values()),
        "points_pending": sum(v["points_pending"] for v in out.values()),
    }
    return app.finish(doc, ok=ok)


def _stage_doc(result: Any) -> dict[str, Any]:
    return {"ok": result.ok, "hosts": hosts_table_doc(result.hosts), "elapsed_s": round(result.elapsed_s, 2)}


@click.command("up")
@click.argument("experiment", type=click.Path(path_type=Path))
@host_options(check=False)
@click.option(
    "--profile", default=None, help="Tuning profile to apply before deploying (restored by --teardown)."
)
@click.option("--teardown", "do_teardown", is_flag=True, help="Finish with teardown (also after a failure).")
@click.option("--quick", is_flag=True, help="A few seconds per cell, one repetition (demos, tests).")
@json_option
@pass_app
def up_cmd(
    app: App,
    experiment: Path,
    inventory: Path | None,
    limit: str | None,
    booking_id: str | None,
    profile: str | None,
    do_teardown: bool,
    quick: bool,
) -> int:
    """provision -> tune (with --profile) -> deploy -> run -> report, and teardown with --teardown.

    Every input (spec, profile, inventory, booking) is checked before any host is touched.
    """
    from labctl.experiment.service import run_experiment
    from labctl.experiment.spec import load_experiment
    from labctl.provision import provision
    from labctl.tuning.profiles import load_profile
    from labctl.tuning.targets import resolve_targets
    from labctl.tuning.teardown import teardown
    from labctl.tuning.tune import tune

    exp = load_experiment(experiment, quick=quick)
    prof = load_profile(profile) if profile else None
    inv, hosts = target_hosts(app, inventory, limit, booking_id, "run")
    names = [h.name for h in hosts]
    stages: dict[str, Any] = {}
    report = None
    code = 1
    try:
        with AnsibleProgress(app.err, "provision", names) as progress:
            prov = provision(app.settings, inv, hosts, on_event=progress)
        stages["provision"] = _stage_doc(prov)
        if not prov.ok:
            app.info("provision failed: " + "; ".join(f"{n}: {m}" for n, m in prov.failures().items()))
            return app.finish({"stages": stages, "hosts": stages["provision"]["hosts"]}, ok=False)
        if prof is not None:
            with AnsibleProgress(app.err, f"tune {profile}", names) as progress:
                tuned = tune(app.settings, inv, hosts, prof, on_event=progress)
            stages["tune"] = _stage_doc(tuned)
            if not tuned.ok:
                app.info("tune failed; see `labctl tune --show`")
                return app.finish({"stages": stages, "hosts": stages["tune"]["hosts"]}, ok=False)
        with AnsibleProgress(app.err, "deploy", names) as progress:
            report = run_experiment(
                app.settings,
                exp,
                inv,
                hosts,
                spec_file=experiment,
                quick=quick,
                log=app.info,
                on_event=progress,
            )
        if report.deploy is not None:
            stages["deploy"] = _stage_doc(report.deploy)
        stages["run"] = {
            "ok": _run_code(report) == 0,
            "run_id": report.outcome.run_id,
            "status": report.outcome.status,
        }
        code = _run_code(report)
    finally:
        if do_teardown:
            with AnsibleProgress(app.err, "teardown", names) as progress:
                td = teardown(
                    app.settings, resolve_targets(app.settings, inv.path, ",".join(names)), on_event=progress
                )
            stages["teardown"] = _stage_doc(td)
            if not td.ok:
                code = code or 1
                app.info(
                    "teardown failed: " + "; ".join(f"{n}: {h.msg}" for n, h in td.hosts.items() if not h.ok)
                )
    assert report is not None
    if not app.json_mode:
        _print_run(app, report)
        app.out.print(
            "stages: " + ", ".join(f"{k} {'ok' if v.get('ok') else 'FAILED'}" for k, v in stages.items())
        )
    hosts_doc = {
        n: {
            "ok": all(s.get("hosts", {}).get(n, {}).get("ok", True) for s in stages.values()),
            "changed": sum(s.get("hosts", {}).get(n, {}).get("changed", 0) for s in stages.values()),
            "failed": any(s.get("hosts", {}).get(n, {}).get("failed", False) for s in stages.values()),
            "unreachable": any(
                s.get("hosts", {}).get(n, {}).get("unreachable", False) for s in stages.values()
            ),
            "msg": "; ".join(m for s in stages.values() if (m := s.get("hosts", {}).get(n, {}).get("msg"))),
        }
        for n in names
    }
    return app.finish({**_run_doc(report), "stages": stages, "hosts": hosts_doc}, ok=code == 0, code=code)
