"""``tune``: snapshot, then apply; ``show`` / ``verify``: read back and compare.

Ordering guarantee: the play that writes runs only after the snapshot of every
knob it touches is durably in local state. ansible-runner's events arrive
asynchronously, so this is done as separate playbook runs:

1. read   — ``playbooks/tune-read.yml``: one module call per host, changes nothing;
2. store  — the values read become the originals (first tune wins) in the StateStore
            (fsync + rename) before anything else happens;
3. apply  — ``playbooks/tune.yml`` with ``labctl_tune_phase=apply`` (skipped for a
            host where every knob already has its wanted value);
4. on a host that failed during apply, every knob is put back to the value read in
   step 1 (``playbooks/teardown.yml`` with only knobs); an unreachable host is left
   recorded for ``labctl teardown``.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from labctl.config import Settings
from labctl.engine import EventSink, HostResult, PlaybookResult, run_playbook
from labctl.inventory import Host, Inventory
from labctl.provision import remember_hosts
from labctl.state import StateStore
from labctl.tuning.catalog import CATALOG
from labctl.tuning.plan import apply_order, apply_specs, drifted, restore_specs
from labctl.tuning.profiles import Profile
from labctl.tuning.snapshot import knob_results, now_iso, record_applied, record_snapshot, revert_snapshot
from labctl.tuning.targets import Targets

TUNE_PLAYBOOK = "tune.yml"
READ_PLAYBOOK = "tune-read.yml"
TEARDOWN_PLAYBOOK = "teardown.yml"


@dataclass
class TuneReport:
    """Outcome of ``tune`` per host: the --json ``hosts`` entries plus per-knob detail."""

    profile: Profile
    check: bool
    hosts: dict[str, HostResult]
    knobs: dict[str, dict[str, dict[str, Any]]]
    runs: list[PlaybookResult] = field(default_factory=list)
    kernels: dict[str, str | None] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.hosts) and all(h.ok for h in self.hosts.values())

    @property
    def elapsed_s(self) -> float:
        return sum(r.elapsed_s for r in self.runs)


def _knob_row(r: Mapping[str, Any], wanted: Any) -> dict[str, Any]:
    if not r.get("available"):
        status = "not available"
    elif r.get("noop"):
        status = "no-op"
    else:
        status = r.get("status") or ("would change" if r.get("would_change") else "ok")
    row = {
        "status": status,
        "before": r.get("before", r.get("value")),
        "wanted": wanted,
        "available": bool(r.get("available")),
        "reason": r.get("reason") or "",
    }
    if "after" in r:
        row["after"] = r["after"]
    if r.get("error"):
        row["error"] = r["error"]
    return row


def tune(
    settings: Settings,
    inv: Inventory,
    hosts: list[Host],
    profile: Profile,
    *,
    check: bool = False,
    on_event: EventSink | None = None,
) -> TuneReport:
    """Apply ``profile`` to ``hosts`` after recording every original value (see module docstring)."""
    names = [h.name for h in hosts]
    specs = apply_specs(profile.knobs)
    flat = [s for group in specs.values() for s in group]
    read = run_playbook(
        READ_PLAYBOOK,
        inv.path,
        data_dir=settings.data_dir,
        hosts=names,
        extravars={"labctl_tune_knobs": flat},
        check=check,
        forks=settings.forks,
        on_event=on_event,
    )
    report = TuneReport(profile, check, {}, {}, [read])
    readings: dict[str, dict[str, dict[str, Any]]] = {}
    ready: list[Host] = []
    for h in hosts:
        res = read.hosts.get(h.name) or HostResult(ok=False, failed=True, msg="did not report")
        got = knob_results(read.returns.get(h.name, {}))
        readings[h.name] = got
        report.kernels[h.name] = read.returns.get(h.name, {}).get("kernel")
        errors = [str(r["error"]) for r in got.values() if r.get("error")]
        missing = [k for k in profile.knobs if k not in got]
        if res.ok and (errors or missing):
            res = HostResult(
                ok=False, failed=True, msg="; ".join(errors) or f"no reading for {', '.join(missing)}"
            )
        if res.ok:
            if check:
                res.msg = f"nothing written (would change {_would_change(got)})"
            ready.append(h)
        elif not res.unreachable:
            res.msg = f"{res.msg} (nothing was changed)"
        res.changed = _would_change(got) if check else 0
        report.hosts[h.name] = res
        report.knobs[h.name] = {k: _knob_row(got[k], profile.knobs[k]) for k in profile.knobs if k in got}
    if check or not ready:
        return report
    kernels = {h.name: read.returns.get(h.name, {}).get("kernel") for h in ready}
    previous = _snapshot(settings, inv, ready, profile, readings, kernels)
    store = StateStore(settings.data_dir)
    for h in ready:
        if _would_change(readings[h.name]) == 0:
            # already as wanted: the read phase was the verification, no apply play needed
            as_read = {
                k: {"before": r.get("value"), "after": r.get("value")} for k, r in readings[h.name].items()
            }
            store.update(
                h.name, functools.partial(record_applied, profile=profile, results=as_read, now=now_iso())
            )
    ready_names = [h.name for h in ready if _would_change(readings[h.name]) > 0]
    if not ready_names:
        return report
    apply = run_playbook(
        TUNE_PLAYBOOK,
        inv.path,
        data_dir=settings.data_dir,
        hosts=ready_names,
        extravars={
            "labctl_tune_phase": "apply",
            "labctl_tune_knobs": specs,
            "labctl_tune_pause": float(settings.test_pause_after_first_write),
        },
        forks=settings.forks,
        on_event=on_event,
    )
    report.runs.append(apply)
    _record_apply(settings, report, apply, ready_names, readings)
    failed = [n for n in ready_names if not report.hosts[n].ok and not report.hosts[n].unreachable]
    if failed:
        _roll_back(settings, inv, report, failed, readings, previous, on_event)
    return report


def _would_change(readings: Mapping[str, Mapping[str, Any]]) -> int:
    return sum(
        1 for r in readings.values() if r.get("would_change") and r.get("available") and not r.get("noop")
    )


def _snapshot(
    settings: Settings,
    inv: Inventory,
    hosts: list[Host],
    profile: Profile,
    readings: Mapping[str, Mapping[str, Mapping[str, Any]]],
    kernels: Mapping[str, str | None],
) -> dict[str, dict[str, Any]]:
    """Store the originals durably (before any write); return each host's previous tuning keys."""
    store = StateStore(settings.data_dir)
    remember_hosts(settings, hosts, inv.path)
    previous: dict[str, dict[str, Any]] = {}
    now = now_iso()
    for h in hosts:
        kernel = kernels.get(h.name)
        host_vars = {k: h.vars[k] for k in ("labctl_booking_required",) if k in h.vars}

        def change(
            doc: dict[str, Any],
            h: Host = h,
            kernel: str | None = kernel,
            host_vars: dict[str, Any] = host_vars,
        ) -> None:
            previous[h.name] = {
                "tuning": _deep(doc.get("tuning")),
                "owned_files": _deep(doc.get("owned_files")),
            }
            record_snapshot(doc, profile, readings[h.name], kernel, now, host_vars)

        store.update(h.name, change)
    return previous


def _deep(value: Any) -> Any:
    return copy.deepcopy(value)


def _record_apply(
    settings: Settings,
    report: TuneReport,
    apply: PlaybookResult,
    names: list[str],
    readings: Mapping[str, Mapping[str, Mapping[str, Any]]],
) -> None:
    store = StateStore(settings.data_dir)
    profile = report.profile
    for name in names:
        res = apply.hosts.get(name) or HostResult(ok=False, failed=True, msg="did not report")
        results = knob_results(apply.returns.get(name, {}))
        rows = report.knobs[name]
        for knob_id, r in results.items():
            rows[knob_id] = _knob_row(r, profile.knobs.get(knob_id))
        res.changed = sum(1 for r in results.values() if r.get("status") == "changed")
        if res.ok:
            store.update(
                name, functools.partial(record_applied, profile=profile, results=results, now=now_iso())
            )
        elif res.unreachable:
            res.msg = (
                f"{res.msg}; the original values are recorded: run `labctl teardown` when {name} "
                "is reachable again"
            )
        report.hosts[name] = res


def _roll_back(
    settings: Settings,
    inv: Inventory,
    report: TuneReport,
    names: list[str],
    readings: Mapping[str, Mapping[str, Mapping[str, Any]]],
    previous: Mapping[str, Mapping[str, Any]],
    on_event: EventSink | None,
) -> None:
    """Put every knob of the failed hosts back to the value read before this command."""
    plans = {}
    for name in names:
        targets = {
            k: (_spec(k), r.get("value"), r.get("detail") or {})
            for k, r in readings[name].items()
            if r.get("available") and not r.get("noop")
        }
        plans[name] = {"knobs": restore_specs(targets)}
    result = run_playbook(
        TEARDOWN_PLAYBOOK,
        inv.path,
        data_dir=settings.data_dir,
        hosts=names,
        extravars={"labctl_teardown_plans": plans},
        forks=settings.forks,
        on_event=on_event,
    )
    report.runs.append(result)
    store = StateStore(settings.data_dir)
    for name in names:
        res = report.hosts[name]
        rb = result.hosts.get(name)
        restored = [
            k for k, r in knob_results(result.returns.get(name, {})).items() if r.get("status") == "restored"
        ]
        if rb is not None and rb.ok:
            store.update(name, functools.partial(revert_snapshot, previous=previous[name]))
            res.msg = f"{res.msg}; rolled back {len(restored)} knob(s) to the values before this command"
            res.changed = 0
        else:
            why = rb.msg if rb is not None else "did not report"
            res.msg = f"{res.msg}; ROLLBACK FAILED ({why}): originals kept for `labctl teardown`"


def _spec(knob_id: str) -> dict[str, Any]:
    return CATALOG[knob_id].spec()


# ------------------------------------------------------------------ show / verify


@dataclass
class ShowReport:
    hosts: dict[str, HostResult]
    knobs: dict[str, dict[str, dict[str, Any]]]
    profiles: dict[str, list[str]]
    notes: list[str]
    runs: list[PlaybookResult] = field(default_factory=list)

    @property
    def drifted(self) -> dict[str, list[str]]:
        return {
            h: [k for k, row in rows.items() if row.get("drifted")]
            for h, rows in self.knobs.items()
            if any(row.get("drifted") for row in rows.values())
        }

    @property
    def ok(self) -> bool:
        return all(h.ok for h in self.hosts.values())


def show(settings: Settings, targets: Targets, *, on_event: EventSink | None = None) -> ShowReport:
    """Per host, per recorded knob: original, current (read now), wanted, and whether it drifted.

    ``targets`` come from :func:`labctl.tuning.targets.resolve_targets` (state alone suffices).
    """
    store = StateStore(settings.data_dir)
    docs = {n: store.get(n) for n in targets.hosts}
    tuned = {n: (d.get("tuning") or {}) for n, d in docs.items() if (d.get("tuning") or {}).get("knobs")}
    report = ShowReport({}, {}, {}, list(targets.notes))
    for n in targets.hosts:
        if n not in tuned:
            report.hosts[n] = HostResult(msg="nothing tuned")
            report.knobs[n] = {}
            report.profiles[n] = []
    if not tuned:
        return report
    union: dict[str, dict[str, Any]] = {}
    for t in tuned.values():
        for knob_id, rec in t["knobs"].items():
            union.setdefault(knob_id, dict(rec.get("spec") or _spec(knob_id)))
    names = sorted(tuned)
    read = run_playbook(
        READ_PLAYBOOK,
        targets.inventory.path,
        data_dir=settings.data_dir,
        hosts=names,
        extravars={"labctl_tune_knobs": list(union.values())},
        forks=settings.forks,
        on_event=on_event,
    )
    report.runs.append(read)
    for n in names:
        res = read.hosts.get(n) or HostResult(ok=False, failed=True, msg="did not report")
        current = knob_results(read.returns.get(n, {}))
        rows = {}
        recs = tuned[n]["knobs"]
        for knob_id in apply_order(recs, {k: r.get("spec") or {} for k, r in recs.items()}):
            rec = recs[knob_id]
            cur = current.get(knob_id)
            value = cur.get("value") if cur and cur.get("available") else None
            rows[knob_id] = {
                "original": rec.get("original"),
                "current": value,
                "wanted": rec.get("wanted"),
                "tuned": rec.get("tuned"),
                "available": bool(rec.get("available")),
                "noop": bool(rec.get("noop")),
                "reason": rec.get("reason") or "",
                "drifted": drifted(rec, value) if cur is not None else None,
            }
        pending = tuned[n].get("pending")
        if pending and res.ok:
            res.msg = f"tune of {', '.join(pending.get('profiles') or [])} did not complete"
        report.hosts[n] = res
        report.knobs[n] = rows
        report.profiles[n] = list(tuned[n].get("profiles") or [])
    return report
