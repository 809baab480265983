"""The ``tuning`` key of a host's state document, and the other keys teardown clears.

Everything here is a pure transformation of a state document (a dict), applied
through :meth:`labctl.state.StateStore.update` so each change is durable before the
next step. The schema of ``doc["tuning"]``::

    {"profiles": ["low-noise"],             # profiles applied successfully, in order
     "pending": {"profiles": [...], "started_at": ...},   # while a tune is in flight
     "snapshot_at": ..., "tuned_at": ..., "kernel": "6.18.…",
     "host_vars": {"labctl_booking_required": ...},      # for the teardown gate
     "knobs": {KNOB_ID: {
         "original": VALUE | null,          # value before labctl's FIRST tune (null: absent)
         "original_detail": {...},          # what restoring needs (file content, unit, path)
         "available": bool, "noop": bool, "reason": str,
         "wanted": VALUE,                   # as the profile says
         "wanted_host": VALUE,              # resolved on the host (a group name -> gid)
         "tuned": VALUE | null,             # read back after the last successful apply
         "kind": ..., "spec": {...},        # how to reach it, even if the catalog changes
         "source": "profiles/low-noise.yaml", "recorded_at": ...}}}
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from typing import Any

from labctl.config import Settings
from labctl.state import StateStore
from labctl.tuning.catalog import CATALOG
from labctl.tuning.profiles import Profile

CLEARED_KEYS = ("tuning", "deployed", "processes", "owned_files")
"""Keys a full teardown removes; afterwards a document keeps only ``name`` and ``connection``."""


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def knob_results(returns: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per-knob results out of a host's ``labctl_return`` (keys ``knob:<id>``)."""
    return {k[5:]: dict(v) for k, v in returns.items() if k.startswith("knob:") and isinstance(v, Mapping)}


def record_snapshot(
    doc: dict[str, Any],
    profile: Profile,
    readings: Mapping[str, Mapping[str, Any]],
    kernel: str | None,
    now: str,
    host_vars: Mapping[str, Any] | None = None,
) -> None:
    """Record the values read before tuning. The FIRST original of a knob is never replaced."""
    tuning = doc.setdefault("tuning", {})
    tuning.setdefault("profiles", [])
    knobs = tuning.setdefault("knobs", {})
    tuning.setdefault("snapshot_at", now)
    for knob_id, r in readings.items():
        spec = CATALOG[knob_id].spec() if knob_id in CATALOG else {}
        rec = knobs.get(knob_id)
        fresh = rec is None or (not rec.get("available") and bool(r.get("available")))
        if fresh:
            rec = {
                "original": r.get("value") if r.get("available") else None,
                "original_detail": dict(r.get("detail") or {}),
                "recorded_at": now,
            }
            knobs[knob_id] = rec
            if spec.get("kind") == "limits_file" and r.get("available") and r.get("value") is None:
                # labctl creates this file: teardown deletes it even if the knob record were lost
                owned = doc.setdefault("owned_files", [])
                if spec["path"] not in owned:
                    owned.append(spec["path"])
        assert rec is not None
        wanted = profile.knobs[knob_id]
        if not fresh and rec.get("available") and not r.get("available"):
            # it existed when its original was recorded: keep it restorable (teardown reports it "gone")
            r = {**r, "available": True, "reason": f"not available at the last tune: {r.get('reason') or ''}"}
        rec.update(
            kind=spec.get("kind", rec.get("kind")),
            spec=spec or rec.get("spec", {}),
            available=bool(r.get("available")),
            noop=bool(r.get("noop")),
            reason=r.get("reason") or "",
            wanted=wanted,
            wanted_host=r.get("wanted", wanted),
            tuned=None,
            source=profile.sources.get(knob_id, ""),
        )
    tuning["pending"] = {"profiles": list(profile.names), "started_at": now}
    if kernel:
        tuning["kernel"] = kernel
    if host_vars:
        tuning["host_vars"] = dict(host_vars)


def record_applied(
    doc: dict[str, Any], profile: Profile, results: Mapping[str, Mapping[str, Any]], now: str
) -> None:
    """After a successful apply: what each knob reads now, and the profile as applied."""
    tuning = doc.setdefault("tuning", {})
    knobs = tuning.setdefault("knobs", {})
    for knob_id, res in results.items():
        rec = knobs.get(knob_id)
        if rec is None or not rec.get("available") or rec.get("noop"):
            continue
        rec["tuned"] = res.get("after", res.get("before"))
    profiles = tuning.setdefault("profiles", [])
    for name in profile.names:
        if name in profiles:
            profiles.remove(name)
        profiles.append(name)
    tuning.pop("pending", None)
    tuning["tuned_at"] = now


def revert_snapshot(doc: dict[str, Any], previous: Mapping[str, Any]) -> None:
    """After a verified rollback: the document as it was before this tune (``previous`` = old keys)."""
    for key in ("tuning", "owned_files"):
        if previous.get(key) is None:
            doc.pop(key, None)
        else:
            doc[key] = copy.deepcopy(previous[key])


def restore_targets(doc: Mapping[str, Any]) -> dict[str, tuple[dict[str, Any], Any, Any]]:
    """What teardown writes back: ``{id: (spec, original, original_detail)}`` for knobs that can change."""
    knobs = (doc.get("tuning") or {}).get("knobs") or {}
    out = {}
    for knob_id, rec in knobs.items():
        if not rec.get("available") or rec.get("noop"):
            continue
        spec = rec.get("spec") or (CATALOG[knob_id].spec() if knob_id in CATALOG else None)
        if not spec:
            continue
        out[knob_id] = (dict(spec), rec.get("original"), rec.get("original_detail") or {})
    return out


def record_teardown(doc: dict[str, Any], returns: Mapping[str, Any], plan: Mapping[str, Any]) -> list[str]:
    """Drop from ``doc`` what teardown verifiably restored or removed; return what is left (problems)."""
    left: list[str] = []
    results = knob_results(returns)
    tuning = doc.get("tuning") or {}
    knobs = tuning.get("knobs") or {}
    for knob_id in list(knobs):
        rec = knobs[knob_id]
        if not rec.get("available") or rec.get("noop"):
            del knobs[knob_id]
            continue
        status = (results.get(knob_id) or {}).get("status")
        if status in ("ok", "restored", "gone"):
            del knobs[knob_id]
        else:
            left.append(f"knob {knob_id} ({status or 'not reached'})")
    if "tuning" in doc and not knobs:
        doc.pop("tuning")
    procs = []
    for p in doc.get("processes") or []:
        status = (returns.get(f"process:{p.get('pid')}") or {}).get("status")
        if status not in ("stopped", "killed", "gone", "not ours"):
            procs.append(p)
            left.append(f"process {p.get('pid')} ({status or 'not reached'})")
    _set_or_drop(doc, "processes", procs)
    deployed = doc.get("deployed")
    if deployed is not None:
        status = (returns.get("deployed") or {}).get("status")
        if status in ("removed", "absent") or not plan.get("deployed_root"):
            doc.pop("deployed")
        else:
            left.append(f"deployed root {deployed.get('root')} ({status or 'not reached'})")
    files = []
    for path in doc.get("owned_files") or []:
        status = (returns.get(f"file:{path}") or {}).get("status")
        if status not in ("removed", "absent"):
            files.append(path)
            left.append(f"file {path} ({status or 'not reached'})")
    _set_or_drop(doc, "owned_files", files)
    if not left:
        for key in list(doc):
            if key not in ("name", "connection"):
                doc.pop(key)
    return left


def _set_or_drop(doc: dict[str, Any], key: str, value: list[Any]) -> None:
    if value:
        doc[key] = value
    else:
        doc.pop(key, None)


def has_anything(doc: Mapping[str, Any]) -> bool:
    """Whether teardown has work on this host."""
    return any(doc.get(k) for k in CLEARED_KEYS)


def snapshot_for_manifest(settings: Settings, host: str) -> dict[str, Any]:
    """The tuning of ``host`` for a run manifest: profiles, and per knob original / wanted / current.

    ``current`` is the value read back when the profile was applied (``None`` if the
    last tune did not complete). Knobs the host lacks are included with
    ``available: false`` and the reason, so a manifest says what was *not* tuned too.
    """
    doc = StateStore(settings.data_dir).get(host)
    tuning = doc.get("tuning") or {}
    knobs = {
        knob_id: {
            "original": rec.get("original"),
            "wanted": rec.get("wanted"),
            "current": rec.get("tuned"),
            "available": bool(rec.get("available")),
            "noop": bool(rec.get("noop")),
            "reason": rec.get("reason") or "",
            "kind": rec.get("kind"),
        }
        for knob_id, rec in sorted((tuning.get("knobs") or {}).items())
    }
    return {
        "host": host,
        "profiles": list(tuning.get("profiles") or []),
        "pending": tuning.get("pending"),
        "snapshot_at": tuning.get("snapshot_at"),
        "tuned_at": tuning.get("tuned_at"),
        "kernel": tuning.get("kernel"),
        "knobs": knobs,
    }
