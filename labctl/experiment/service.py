"""The typed API behind `labctl deploy`, `run`, `up`: what a script or notebook calls."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labctl.config import Settings
from labctl.engine import EventSink, PlaybookResult
from labctl.errors import HostError
from labctl.experiment.runner import ExperimentRun, RunOutcome
from labctl.experiment.runstore import RunStore, write_results
from labctl.experiment.spec import Experiment
from labctl.inventory import Host, Inventory
from labctl.workloads.build import Artifact
from labctl.workloads.deploy import build, deploy, needs_deploy

Log = Callable[[str], None]


@dataclass
class RunReport:
    outcome: RunOutcome
    verdicts: list[dict[str, Any]]
    points_shipped: int
    points_pending: int
    report_path: Path | None
    deploy: PlaybookResult | None = None
    warnings: list[str] = field(default_factory=list)


def ensure_deployed(
    settings: Settings,
    inv: Inventory,
    hosts: list[Host],
    *,
    log: Log,
    on_event: EventSink | None = None,
    artifacts: dict[str, Artifact] | None = None,
) -> tuple[dict[str, Artifact], PlaybookResult | None]:
    """Build (unless given) and deploy to the hosts that lack these exact artifacts."""
    if artifacts is None:
        log("building workloads (make workloads)")
        artifacts = build(settings)
    todo = needs_deploy(settings, hosts, artifacts)
    if not todo:
        return artifacts, None
    log(f"deploying to {', '.join(h.name for h in todo)}")
    result = deploy(settings, inv, todo, artifacts, on_event=on_event)
    if not result.ok:
        raise HostError(
            "deploy failed: " + "; ".join(f"{n}: {m}" for n, m in result.failures().items()),
            hosts=result.failures(),
        )
    return artifacts, result


def analyze_and_report(settings: Settings, run_dir: Path) -> tuple[list[dict[str, Any]], Path | None]:
    """Statistics and verdicts into results.json, then report.html. Returns the verdicts."""
    from labctl.analysis import analyze
    from labctl.report import render_report

    store = RunStore(settings.data_dir)
    results = store.results(run_dir)
    results.update(
        analyze(run_dir, results, store.manifest(run_dir), noise_threshold=settings.noise_threshold)
    )
    write_results(run_dir, results)
    path = render_report(run_dir)
    return list(results.get("verdicts", [])), path


def ship_counts(settings: Settings, run_dir: Path, send: bool) -> tuple[int, int, str | None]:
    """(shipped, pending, error) — optionally sending what is pending first."""
    from labctl.metrics.ship import ship
    from labctl.metrics.spool import Spool

    error = None
    if send:
        res = ship(run_dir, settings)
        error = res.error
    _total, acked, pending = Spool(run_dir).counts()
    return acked, pending, error


def run_experiment(
    settings: Settings,
    exp: Experiment,
    inv: Inventory,
    hosts: list[Host],
    *,
    spec_file: Path,
    quick: bool,
    log: Log,
    on_event: EventSink | None = None,
    reproduces: str | None = None,
    artifacts: dict[str, Artifact] | None = None,
    extra_manifest: dict[str, Any] | None = None,
) -> RunReport:
    """Deploy if needed, run the matrix, analyse, render the report, account for points."""
    artifacts, deployed = ensure_deployed(
        settings, inv, hosts, log=log, on_event=on_event, artifacts=artifacts
    )
    run = ExperimentRun(
        settings,
        exp,
        inv,
        hosts,
        artifacts,
        spec_file=spec_file,
        quick=quick,
        log=log,
        reproduces=reproduces,
        extra_manifest=extra_manifest,
    )
    outcome = run.execute()
    verdicts, report = analyze_and_report(settings, outcome.run_dir)
    shipped, pending, _ = ship_counts(settings, outcome.run_dir, send=False)
    warnings = list(outcome.warnings)
    if pending and settings.influx_url:
        warnings.append(
            f"{pending} points pending: InfluxDB was down or failing; they are kept in the "
            f"run's spool and `labctl ship {outcome.run_id}` sends them"
        )
    return RunReport(outcome, verdicts, shipped, pending, report, deployed, warnings)
