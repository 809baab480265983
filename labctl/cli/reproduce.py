"""`labctl reproduce RUN_ID`: re-run a past run from its manifest and say whether it still holds.

Exit codes: 0 when the reproduction ran (whether or not the claims held — the output
says which), 1 when the run failed or the binaries are not the recorded ones (a
tampered artifact store, a rebuild with other bytes, other toolchains), 2 for a bad
run id, a missing or corrupt manifest or a revision the repository no longer has
(checked before anything is built or any host is touched), 3 booking refused, 130
interrupted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from labctl.cli.common import App, host_options, json_option, pass_app
from labctl.cli.targets import target_hosts
from labctl.experiment.reproduce import (
    Reproduction,
    ReproductionResult,
    experiment_for,
    load_original,
    source_notes,
    summary_line,
)
from labctl.progress import AnsibleProgress

VERDICT_STYLE = {"supported": "green", "refuted": "red", "inconclusive": "yellow"}


def _fmt(x: Any) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def _ci(ci: Any) -> str:
    return f" [{_fmt(ci[0])}, {_fmt(ci[1])}]" if isinstance(ci, list) and len(ci) == 2 else ""


def _verdict(v: str | None) -> str:
    if v is None:
        return "—"
    return f"[{VERDICT_STYLE.get(v, 'white')}]{v}[/]"


def _short(x: Any, limit: int = 80) -> str:
    text = json.dumps(x, sort_keys=True, default=str) if isinstance(x, dict | list) else str(x)
    return escape(text if len(text) <= limit else text[: limit - 1] + "…")


def _print(app: App, doc: dict[str, Any]) -> None:
    t = Table(title=f"claims: {doc['original_run_id']} (original) vs {doc['run_id']}", title_justify="left")
    for col in ("claim", "expectation", "original", "reproduction", "holds"):
        t.add_column(col, overflow="fold")
    for c in doc["claims"]:
        t.add_row(
            c["claim"],
            escape(c.get("expect") or ""),
            _verdict(c["original"]) + escape(f" {_fmt(c.get('original_value'))}{_ci(c.get('original_ci'))}"),
            _verdict(c["reproduced"])
            + escape(f" {_fmt(c.get('reproduced_value'))}{_ci(c.get('reproduced_ci'))}"),
            "[green]holds[/]" if c["holds"] else "[red]does not hold[/]",
        )
    app.out.print(t)
    t = Table(title="key figures (pooled, µs)", title_justify="left")
    for col in (
        "variant",
        "rate",
        "rps then/now",
        "metric",
        "original [95% CI]",
        "reproduction",
        "ratio",
        "in CI",
    ):
        t.add_column(col, justify="right" if col in ("ratio",) else "left")
    for f in doc["figures"]:
        inside = f.get("within_original_ci")
        t.add_row(
            f["variant"],
            f["rate"],
            "/".join(
                "—" if x is None else f"{x:.0f}" for x in (f.get("original_rps"), f.get("reproduced_rps"))
            ),
            f["metric"],
            _fmt(f.get("original")) + _ci(f.get("original_ci")),
            _fmt(f.get("reproduced")),
            f"{f['ratio']:.3f}" if f.get("ratio") is not None else "—",
            "—" if inside is None else ("[green]yes[/]" if inside else "[yellow]no[/]"),
        )
    app.out.print(t)
    env = doc["environment_diff"]
    if env:
        t = Table(title="environment differences (timestamps excluded)", title_justify="left")
        for col in ("aspect", "host", "what", "original", "reproduction"):
            t.add_column(col, overflow="fold")
        for d in env:
            t.add_row(
                d["aspect"],
                d.get("host", ""),
                escape(d.get("label") or d["key"]),
                _short(d.get("original")),
                _short(d.get("reproduced")),
            )
        app.out.print(t)
    else:
        app.out.print("environment: no differences (same hosts, facts, tuning, toolchains, binaries)")


def _code(res: ReproductionResult) -> int:
    o = res.report.outcome
    if o.status == "interrupted":
        return 130
    return 0 if o.status == "completed" and all(c.get("status") == "ok" for c in o.cells) else 1


@click.command("reproduce")
@click.argument("run_id")
@host_options(check=False)
@click.option("--quick", is_flag=True, help="Force a quick run (the recorded spec's quick section).")
@click.option("--no-tune", "no_tune", is_flag=True, help="Do not re-apply the recorded tuning profiles.")
@json_option
@pass_app
def reproduce_cmd(
    app: App,
    run_id: str,
    inventory: Path | None,
    limit: str | None,
    booking_id: str | None,
    quick: bool,
    no_tune: bool,
) -> int:
    """Re-run RUN_ID from its manifest and compare: do its claims still hold?

    Checks out the recorded revision in a temporary git worktree, reuses the recorded
    binaries from the artifact store by sha256 (or rebuilds them there and requires
    the same hashes), re-applies the recorded tuning, runs the recorded matrix, and
    prints every claim's verdict then and now, the key figures side by side and the
    environment differences. The new run records `reproduces: RUN_ID`.

    Exit 0 when the reproduction ran, whether or not the claims held; 1 when it failed
    or the binaries are not the recorded ones; 2 for a bad run id, manifest or revision.
    """
    # Input first: a bad run id, manifest or revision exits 2 before anything is built or touched.
    original = load_original(app.settings, run_id)
    exp = experiment_for(original, quick)
    inv, hosts = target_hosts(app, inventory, limit, booking_id, "reproduce")
    app.info(
        f"reproducing {original.run_id} ({original.experiment.name}, revision {original.commit[:12]}"
        + (", quick" if quick or original.quick else "")
        + f") on {', '.join(h.name for h in hosts)}"
    )
    with Reproduction(app.settings, original, log=app.info) as repro:
        for w in source_notes(original, repro.root):
            repro.note(w)
        repro.check_artifacts()
        repro.open_checkout()
        repro.prepare_tuning(inv, hosts, enabled=not no_tune)
        repro.build()
        if repro.tuning.get("status") == "pending":
            with AnsibleProgress(app.err, "tune", [h.name for h in hosts]) as progress:
                repro.apply_tuning(inv, on_event=progress)
        with AnsibleProgress(app.err, "deploy", [h.name for h in hosts]) as progress:
            report = repro.run(exp, inv, hosts, quick=quick, on_event=progress)
        res = repro.finish(report)
    doc = res.comparison
    code = _code(res)
    o = report.outcome
    line = summary_line(doc)
    if not app.json_mode:
        _print(app, doc)
        app.out.print(f"reproduction {o.run_id} of {original.run_id}: run {o.status}; {line}")
        if report.report_path:
            app.out.print(f"report: {report.report_path}")
        for w in res.warnings:
            app.err.print(f"[yellow]warning:[/] {escape(w)}")
    else:
        app.info(f"reproduction {o.run_id} of {original.run_id}: run {o.status}; {line}")
    failed = [c["cell_id"] for c in o.cells if c.get("status") != "ok"]
    if failed:
        app.info(f"{len(failed)} cell(s) failed: {', '.join(failed)}")
    return app.finish(
        {
            **doc,
            "run_dir": str(o.run_dir),
            "reproduction_json": str(res.path),
            "verdicts": report.verdicts,
            "points_shipped": report.points_shipped,
            "points_pending": report.points_pending,
            "report": str(report.report_path) if report.report_path else None,
            "failed_cells": failed,
        },
        ok=code == 0,
        code=code,
    )
