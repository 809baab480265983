"""Deploy: ship content-addressed artifacts to hosts and record what is where."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from labctl.config import Settings
from labctl.engine import EventSink, PlaybookResult, run_playbook
from labctl.gitinfo import revision
from labctl.inventory import Host, Inventory
from labctl.paths import project_root
from labctl.provision import remember_hosts
from labctl.state import StateStore
from labctl.workloads.build import Artifact, build_and_store


def build(settings: Settings, source_root: Path | None = None) -> dict[str, Artifact]:
    """Build the workloads from ``source_root`` (default: this checkout) into the store."""
    root = source_root or project_root()
    rev = revision(root)
    return build_and_store(settings.data_dir, root, rev.get("commit"), rev.get("dirty"))


def deployed_hashes(settings: Settings, host: str) -> dict[str, str]:
    doc = StateStore(settings.data_dir).get(host).get("deployed") or {}
    return {name: a.get("sha256", "") for name, a in (doc.get("artifacts") or {}).items()}


def needs_deploy(settings: Settings, hosts: list[Host], artifacts: dict[str, Artifact]) -> list[Host]:
    """Hosts whose recorded deployment differs from ``artifacts``."""
    want = {n: a.sha256 for n, a in artifacts.items()}
    return [h for h in hosts if any(deployed_hashes(settings, h.name).get(n) != d for n, d in want.items())]


def deploy(
    settings: Settings,
    inv: Inventory,
    hosts: list[Host],
    artifacts: dict[str, Artifact],
    *,
    check: bool = False,
    on_event: EventSink | None = None,
) -> PlaybookResult:
    """Copy ``artifacts`` to ``hosts`` with sha256 verification and record them in local state."""
    names = [h.name for h in hosts]
    extravars = {
        "workloads_artifacts": [
            {"name": a.name, "src": a.path, "sha256": a.sha256} for a in artifacts.values()
        ],
        "workloads_arch": platform.machine(),
    }
    if not check:
        remember_hosts(settings, hosts, inv.path)
    result = run_playbook(
        "deploy.yml",
        inv.path,
        data_dir=settings.data_dir,
        hosts=names,
        extravars=extravars,
        check=check,
        forks=settings.forks,
        on_event=on_event,
    )
    if check:
        return result
    store = StateStore(settings.data_dir)
    for name in names:
        info = result.facts.get(name, {}).get("labctl_deployed")
        if not isinstance(info, dict) or not result.hosts.get(name) or not result.hosts[name].ok:
            continue
        root = str(info["root"])

        def change(doc: dict[str, Any], root: str = root) -> None:
            doc["deployed"] = {
                "root": root,
                "artifacts": {
                    a.name: {"path": f"{root}/bin/{a.name}", "sha256": a.sha256} for a in artifacts.values()
                },
            }

        store.update(name, change)
    return result


def deployed_path(settings: Settings, host: str, name: str) -> str | None:
    doc = StateStore(settings.data_dir).get(host).get("deployed") or {}
    entry = (doc.get("artifacts") or {}).get(name)
    return str(entry["path"]) if entry else None
