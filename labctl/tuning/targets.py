"""Hosts for commands that must work from local state alone (teardown, tune --show/--verify).

The inventory is optional: without one, every host with a state document is a
target, reached through the ``connection`` variables recorded when it was first
touched. With one, its hosts (after ``--limit``) are the targets and its variables
win, since they describe the hosts as they are now; hosts named in ``--limit`` that
only the state knows still resolve from the state. Either way the play runs
against a temporary inventory written under the data directory.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from labctl.config import Settings
from labctl.errors import InputError
from labctl.inventory import Host, Inventory, load_inventory
from labctl.state import StateStore


@dataclass
class Targets:
    inventory: Inventory
    hosts: list[str]
    notes: list[str] = field(default_factory=list)
    missing_connection: list[str] = field(default_factory=list)

    def cleanup(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.inventory.path.unlink()


def _limit_names(limit: str | None) -> list[str]:
    return [n.strip() for n in (limit or "").split(",") if n.strip()]


def _state_vars(doc: dict[str, Any]) -> dict[str, Any]:
    out = dict(doc.get("connection") or {})
    out.update((doc.get("tuning") or {}).get("host_vars") or {})
    return out


def resolve_targets(settings: Settings, inventory: Path | None, limit: str | None) -> Targets:
    """Targets from the inventory (if given and present) and the state; raises InputError for unknown names."""
    store = StateStore(settings.data_dir)
    in_state = set(store.hosts())
    notes: list[str] = []
    inv: Inventory | None = None
    if inventory is not None:
        if Path(inventory).exists():
            inv = load_inventory(inventory)
        else:
            notes.append(
                f"inventory {inventory} does not exist; using the connections recorded in local state"
            )
    names: list[str] = []
    wanted = _limit_names(limit)
    if inv is not None:
        known = [n for n in wanted if n in inv.hosts or n in inv.groups]
        extra = [n for n in wanted if n not in known]
        unknown = [n for n in extra if n not in in_state]
        if unknown:
            raise InputError(
                f"unknown host or group {unknown[0]!r} in --limit (not in the inventory, "
                "nothing recorded in local state)",
                file=str(inv.path),
                host=unknown[0],
            )
        if not wanted or known:
            names = [h.name for h in inv.select(",".join(known) if wanted else None)]
        names += [n for n in extra if n not in names]
    else:
        unknown = [n for n in wanted if n not in in_state]
        if unknown:
            raise InputError(
                f"unknown host {unknown[0]!r} in --limit: nothing recorded in local state "
                f"(hosts in state: {', '.join(sorted(in_state)) or 'none'})",
                host=unknown[0],
            )
        names = wanted or sorted(in_state)
    hostvars: dict[str, dict[str, Any]] = {}
    missing: list[str] = []
    for name in names:
        if inv is not None and name in inv.hosts:
            hostvars[name] = dict(inv.hosts[name].vars)
        else:
            doc = store.get(name)
            hostvars[name] = _state_vars(doc)
            if not doc.get("connection"):
                missing.append(name)
    path = _write_inventory(settings, hostvars)
    hosts = {n: Host(n, v, ["all"]) for n, v in hostvars.items()}
    return Targets(Inventory(path=path, hosts=hosts, groups={"all": list(names)}), names, notes, missing)


def _write_inventory(settings: Settings, hostvars: dict[str, dict[str, Any]]) -> Path:
    d = Path(settings.data_dir) / "ansible" / "inventories"
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"state-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{time.time_ns() % 10**6:06d}.yml"
    doc = {"all": {"hosts": {n: v or None for n, v in hostvars.items()}}}
    path.write_text(
        "# Written by labctl from local state; removed after the run.\n---\n"
        + yaml.safe_dump(doc, sort_keys=True, default_flow_style=False)
    )
    path.chmod(0o600)
    return path
