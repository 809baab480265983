"""Provision: bring hosts to a known state and record their topology on the controller."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from labctl.config import Settings
from labctl.engine import EventSink, PlaybookResult, run_playbook
from labctl.inventory import Host, Inventory
from labctl.state import StateStore


def remember_hosts(settings: Settings, hosts: list[Host], inventory: Path) -> None:
    """Keep how to reach each host in local state, so teardown works without the inventory."""
    store = StateStore(settings.data_dir)
    for h in hosts:

        def change(doc: dict[str, Any], h: Host = h) -> None:
            doc["connection"] = h.connection()
            doc["inventory"] = str(inventory)

        store.update(h.name, change)


def provision(
    settings: Settings,
    inv: Inventory,
    hosts: list[Host],
    *,
    check: bool = False,
    on_event: EventSink | None = None,
) -> PlaybookResult:
    """Run playbooks/provision.yml on ``hosts`` and store each host's facts (unless ``check``)."""
    names = [h.name for h in hosts]
    result = run_playbook(
        "provision.yml",
        inv.path,
        data_dir=settings.data_dir,
        hosts=names,
        check=check,
        forks=settings.forks,
        on_event=on_event,
    )
    if check:
        return result
    store = StateStore(settings.data_dir)
    remember_hosts(settings, hosts, inv.path)
    for name, facts in result.facts.items():
        host_facts = facts.get("labctl_host_facts")
        if isinstance(host_facts, dict):
            store.save_facts(
                name,
                {
                    **host_facts,
                    "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "inventory": str(inv.path),
                },
            )
    return result


def facts_summary(f: dict[str, Any]) -> dict[str, Any]:
    """The few facts a person scans first."""
    nodes = f.get("numa_nodes") or []
    return {
        "cpu": f.get("cpu_model"),
        "sockets": f.get("sockets"),
        "cores/socket": f.get("cores_per_socket"),
        "threads/core": f.get("threads_per_core"),
        "numa": "; ".join(
            f"n{n['id']}: cpus {len(n['cpus'])}, {round((n.get('mem_bytes') or 0) / 2**30, 1)} GiB"
            for n in nodes
        )
        or "none reported",
        "kernel": f.get("kernel"),
        "thp": f.get("thp_enabled"),
        "governor": f.get("governor") or "n/a (no cpufreq)",
        "io_uring_disabled": f.get("io_uring_disabled") if f.get("io_uring_disabled") is not None else "n/a",
        "toolchains": ", ".join(
            f"{k} {v.get('version')}" for k, v in sorted((f.get("toolchains") or {}).items())
        ),
    }
