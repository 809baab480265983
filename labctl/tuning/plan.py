"""Pure planning: apply and restore order, module specs, value comparison, drift.

Order rules (also in docs/tuning.md):

- Apply: by group (``entropy, numa, io_uring, cpu, net``, one role each), then by rank.
- Restore: the reverse of the apply order (last written, first restored), so a knob
  is put back in the context it was changed in.
- :data:`~labctl.tuning.catalog.CONSTRAINTS` ("writing A perturbs B") hold in both
  directions: A is written before B when applying *and* when restoring, because
  restoring A would otherwise undo the restored B (governor before turbo).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from labctl.tuning.catalog import CATALOG, CONSTRAINTS, GROUPS, Constraint


def _group_index(group: str) -> int:
    return GROUPS.index(group) if group in GROUPS else len(GROUPS)


def _respect(preferred: list[str], constraints: Iterable[Constraint]) -> list[str]:
    """Stable topological order: ``preferred`` order, except every constraint's ``first`` precedes ``then``."""
    present = set(preferred)
    before: dict[str, set[str]] = {k: set() for k in preferred}
    for c in constraints:
        if c.first in present and c.then in present:
            before[c.then].add(c.first)
    out: list[str] = []
    placed: set[str] = set()
    remaining = list(preferred)
    while remaining:
        for k in remaining:
            if before[k] <= placed:
                out.append(k)
                placed.add(k)
                remaining.remove(k)
                break
        else:  # a cycle cannot come from the catalog; keep the preferred order rather than loop
            out.extend(remaining)
            break
    return out


def _rank_key(knob_id: str, specs: Mapping[str, Mapping[str, Any]] | None) -> tuple[int, int, str]:
    spec = (specs or {}).get(knob_id) or (CATALOG[knob_id].spec() if knob_id in CATALOG else {})
    return _group_index(str(spec.get("group", ""))), int(spec.get("rank", 1000)), knob_id


def apply_order(ids: Iterable[str], specs: Mapping[str, Mapping[str, Any]] | None = None) -> list[str]:
    """The order knobs are written in when tuning."""
    preferred = sorted(set(ids), key=lambda k: _rank_key(k, specs))
    return _respect(preferred, CONSTRAINTS)


def restore_order(ids: Iterable[str], specs: Mapping[str, Mapping[str, Any]] | None = None) -> list[str]:
    """The order knobs are written in when restoring: reverse of apply, constraints kept."""
    preferred = sorted(set(ids), key=lambda k: _rank_key(k, specs), reverse=True)
    return _respect(preferred, CONSTRAINTS)


def apply_specs(knobs: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Module specs with ``wanted`` values, per group, in apply order (one list per tune_<group> role)."""
    out: dict[str, list[dict[str, Any]]] = {g: [] for g in GROUPS}
    for knob_id in apply_order(knobs):
        spec = CATALOG[knob_id].spec()
        spec["wanted"] = knobs[knob_id]
        out[spec["group"]].append(spec)
    return out


def restore_specs(targets: Mapping[str, tuple[dict[str, Any], Any, Any]]) -> list[dict[str, Any]]:
    """Module specs for restoring: ``{id: (spec, target value, target detail)}`` in restore order."""
    specs = {k: v[0] for k, v in targets.items()}
    out = []
    for knob_id in restore_order(targets, specs):
        spec, target, detail = targets[knob_id]
        out.append({**spec, "target": target, "target_detail": detail or {}})
    return out


def values_equal(kind: str, current: Any, wanted: Any) -> bool:
    """Whether ``current`` (as read from a host) satisfies ``wanted``."""
    if kind == "cpufreq_governor" and isinstance(current, Mapping) and isinstance(wanted, str):
        return bool(current) and all(v == wanted for v in current.values())
    return bool(current == wanted)


def drifted(record: Mapping[str, Any], current: Any) -> bool | None:
    """Whether a tuned knob no longer has the value it was tuned to (None: not applicable)."""
    if not record.get("available") or record.get("noop"):
        return None
    if record.get("tuned") is not None:
        return not values_equal(str(record.get("kind", "")), current, record["tuned"])
    target = record.get("wanted_host", record.get("wanted"))
    return not values_equal(str(record.get("kind", "")), current, target)


def describe_value(value: Any) -> str:
    """Short text for tables: per-CPU maps collapse when uniform, None reads 'absent'."""
    if value is None:
        return "absent"
    if isinstance(value, Mapping):
        vals = list(value.values())
        if (
            vals
            and all(not isinstance(v, Mapping) for v in vals)
            and len(set(map(str, vals))) == 1
            and all(str(k).startswith("cpu") for k in value)
        ):
            return f"{vals[0]} (x{len(vals)} cpus)"
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)
