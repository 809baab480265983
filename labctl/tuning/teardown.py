"""``teardown``: stop labctl's processes, restore every recorded knob, remove what was deployed.

Works from local state alone (after a crash, a ``kill -9``, a controller restart or
a changed inventory): each host's plan is built from its state document, and the
play runs against a temporary inventory of the recorded connections. Only what
was verifiably restored or removed is dropped from the state; anything else stays
recorded so a later teardown can finish the job.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from labctl.config import Settings
from labctl.engine import EventSink, HostResult, PlaybookResult, run_playbook
from labctl.state import StateStore
from labctl.tuning.plan import restore_specs
from labctl.tuning.snapshot import has_anything, knob_results, record_teardown, restore_targets
from labctl.tuning.targets import Targets

TEARDOWN_PLAYBOOK = "teardown.yml"
DEFAULT_GRACE_S = 10.0


@dataclass
class TeardownReport:
    check: bool
    hosts: dict[str, HostResult]
    detail: dict[str, dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    runs: list[PlaybookResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(h.ok for h in self.hosts.values())

    @property
    def elapsed_s(self) -> float:
        return sum(r.elapsed_s for r in self.runs)


def host_plan(doc: Mapping[str, Any], grace_s: float = DEFAULT_GRACE_S) -> dict[str, Any]:
    """What teardown does on one host, from its state document alone."""
    deployed = doc.get("deployed") or {}
    return {
        "processes": [
            {"pid": int(p["pid"]), "argv0": str(p.get("argv0") or ""), "run_id": str(p.get("run_id") or "")}
            for p in doc.get("processes") or []
            if isinstance(p, Mapping) and "pid" in p
        ],
        "grace": grace_s,
        "knobs": restore_specs(restore_targets(doc)),
        "deployed_root": deployed.get("root") or "",
        "artifacts": dict(deployed.get("artifacts") or {}),
        "owned_files": [str(p) for p in doc.get("owned_files") or []],
    }


def plan_is_empty(plan: Mapping[str, Any]) -> bool:
    return not (
        plan["processes"]
        or plan["knobs"]
        or plan["deployed_root"]
        or plan["artifacts"]
        or plan["owned_files"]
    )


def teardown(
    settings: Settings,
    targets: Targets,
    *,
    check: bool = False,
    on_event: EventSink | None = None,
    grace_s: float = DEFAULT_GRACE_S,
) -> TeardownReport:
    """Tear down ``targets``; state is updated only for what was verified (never in ``check`` mode)."""
    store = StateStore(settings.data_dir)
    report = TeardownReport(check, {}, {}, list(targets.notes))
    plans: dict[str, dict[str, Any]] = {}
    for name in targets.hosts:
        doc = store.get(name)
        if not has_anything(doc):
            report.hosts[name] = HostResult(msg="nothing recorded: nothing to do")
            report.detail[name] = {}
            continue
        if name in targets.missing_connection:
            report.hosts[name] = HostResult(
                ok=False, failed=True, msg="no connection details recorded for this host; pass -i INVENTORY"
            )
            report.detail[name] = {}
            continue
        plans[name] = host_plan(doc, grace_s)
    work = {n: p for n, p in plans.items() if not plan_is_empty(p)}
    for name in set(plans) - set(work):
        # only knobs that were never available, or no-ops: nothing to touch, just forget them
        if not check:
            store_result(store, name, {}, plans[name])
        report.hosts[name] = HostResult(msg="nothing to restore")
        report.detail[name] = {}
    if not work:
        return report
    names = sorted(work)
    result = run_playbook(
        TEARDOWN_PLAYBOOK,
        targets.inventory.path,
        data_dir=settings.data_dir,
        hosts=names,
        extravars={"labctl_teardown_plans": work},
        check=check,
        forks=settings.forks,
        on_event=on_event,
    )
    report.runs.append(result)
    for name in names:
        res = result.hosts.get(name) or HostResult(ok=False, failed=True, msg="did not report")
        returns = result.returns.get(name, {})
        report.detail[name] = _detail(returns, work[name])
        res.changed = _count_changes(report.detail[name])
        if res.unreachable:
            res.msg = (
                f"{res.msg}; nothing changed in local state: run teardown again when the host is reachable"
            )
        elif not check:
            left = store_result(store, name, returns, work[name])
            if left and res.ok:
                res.ok, res.failed = False, True
            if left:
                res.msg = (res.msg + "; " if res.msg else "") + "still recorded: " + ", ".join(left)
            elif res.ok:
                res.msg = "restored and verified"
        report.hosts[name] = res
    return report


def store_result(
    store: StateStore, name: str, returns: Mapping[str, Any], plan: Mapping[str, Any]
) -> list[str]:
    left: list[str] = []

    def change(doc: dict[str, Any]) -> None:
        left.extend(record_teardown(doc, returns, plan))

    store.update(name, change)
    return left


def _detail(returns: Mapping[str, Any], plan: Mapping[str, Any]) -> dict[str, Any]:
    knobs = knob_results(returns)
    rows: dict[str, dict[str, Any]] = {}
    for s in plan["knobs"]:
        r = knobs.get(s["id"]) or {}
        rows[s["id"]] = {
            "status": r.get("status", "not reached"),
            "original": s.get("target"),
            "before": r.get("before"),
        }
        if "after" in r:
            rows[s["id"]]["after"] = r["after"]
    out: dict[str, Any] = {
        "knobs": rows,
        "processes": {
            str(p["pid"]): (returns.get(f"process:{p['pid']}") or {}).get("status", "not reached")
            for p in plan["processes"]
        },
        "files": {
            path: (returns.get(f"file:{path}") or {}).get("status", "not reached")
            for path in plan["owned_files"]
        },
    }
    if plan["deployed_root"]:
        out["deployed"] = {
            "root": plan["deployed_root"],
            "status": (returns.get("deployed") or {}).get("status", "not reached"),
        }
    return out


_CHANGING = {"restored", "would restore", "stopped", "killed", "would stop", "removed", "would remove"}


def _count_changes(detail: Mapping[str, Any]) -> int:
    n = sum(1 for k in detail.get("knobs", {}).values() if k["status"] in _CHANGING)
    n += sum(1 for s in detail.get("processes", {}).values() if s in _CHANGING)
    n += sum(1 for s in detail.get("files", {}).values() if s in _CHANGING)
    n += int((detail.get("deployed") or {}).get("status") in _CHANGING)
    return n
