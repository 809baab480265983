"""Inventories, loaded with Ansible's own parser (``ansible-inventory --list``).

labctl never parses inventory files by hand: whatever Ansible accepts (YAML, INI,
directories, group_vars) is what labctl sees. Problems are reported as
:class:`~labctl.errors.InputError` naming the file, before anything touches a host.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from labctl.errors import InputError


def ansible_bin(name: str) -> str:
    """Path of an Ansible executable, preferring the interpreter's own bin directory."""
    own = Path(sys.executable).parent / name
    if own.exists():
        return str(own)
    found = shutil.which(name)
    if not found:
        raise InputError(f"{name} not found; install labctl with its dependencies (make venv)")
    return found


def ansible_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for Ansible subprocesses: our bin directory first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra or {})
    return env


@dataclass
class Host:
    name: str
    vars: dict[str, Any] = field(default_factory=dict)
    groups: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return str(self.vars.get("ansible_host", self.name))

    @property
    def port(self) -> int:
        return int(self.vars.get("ansible_port", 22))

    @property
    def user(self) -> str | None:
        u = self.vars.get("ansible_user")
        return str(u) if u else None

    @property
    def is_local(self) -> bool:
        return self.vars.get("ansible_connection") == "local"

    @property
    def key_file(self) -> str | None:
        k = self.vars.get("ansible_ssh_private_key_file")
        return str(k) if k else None

    def connection(self) -> dict[str, Any]:
        """What is needed to reach this host again without the inventory (kept in local state)."""
        keep = (
            "ansible_host",
            "ansible_port",
            "ansible_user",
            "ansible_connection",
            "ansible_ssh_private_key_file",
            "ansible_ssh_common_args",
            "ansible_become",
            "ansible_python_interpreter",
            "labctl_known_hosts",
            "labctl_booking_required",  # teardown from state alone stays gated
        )
        return {k: self.vars[k] for k in keep if k in self.vars}


@dataclass
class Inventory:
    path: Path
    hosts: dict[str, Host]
    groups: dict[str, list[str]]

    def select(self, limit: str | None) -> list[Host]:
        """Hosts matched by a comma-separated list of host and group names (None: all)."""
        if not limit:
            return [self.hosts[n] for n in sorted(self.hosts)]
        chosen: list[str] = []
        for raw in limit.split(","):
            name = raw.strip()
            if not name:
                continue
            if name in self.hosts:
                names = [name]
            elif name in self.groups:
                names = self.groups[name]
            else:
                raise InputError(
                    f"unknown host or group {name!r} in --limit (inventory has: {', '.join(sorted(self.hosts))})",
                    file=str(self.path),
                    host=name,
                )
            chosen.extend(n for n in names if n not in chosen)
        return [self.hosts[n] for n in chosen]

    def var(self, host: str, key: str, default: Any = None) -> Any:
        return self.hosts[host].vars.get(key, default)


def load_inventory(path: str | Path) -> Inventory:
    """Parse an inventory with ``ansible-inventory --list``; raise InputError on any problem."""
    p = Path(path)
    if not p.exists():
        raise InputError("inventory file does not exist", file=str(p))
    if p.is_file() and not os.access(p, os.R_OK):
        raise InputError("inventory file is not readable", file=str(p))
    env = ansible_env(
        {
            "ANSIBLE_INVENTORY_UNPARSED_FAILED": "True",
            "ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED": "True",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_DEPRECATION_WARNINGS": "False",
        }
    )
    proc = subprocess.run(
        [ansible_bin("ansible-inventory"), "-i", str(p.resolve()), "--list"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    if proc.returncode != 0:
        msg = " ".join(line.strip() for line in proc.stderr.splitlines() if line.strip())[-600:]
        raise InputError(f"Ansible cannot parse this inventory: {msg}", file=str(p))
    try:
        data = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise InputError(f"ansible-inventory printed no JSON: {exc}", file=str(p)) from exc
    hostvars: dict[str, dict[str, Any]] = data.get("_meta", {}).get("hostvars", {})
    groups: dict[str, list[str]] = {}

    def walk(group: str, seen: set[str]) -> list[str]:
        if group in seen:
            return []
        seen.add(group)
        node = data.get(group, {})
        members = list(node.get("hosts", []))
        for child in node.get("children", []):
            members.extend(h for h in walk(child, seen) if h not in members)
        return members

    for g in data:
        if g != "_meta":
            groups[g] = walk(g, set())
    names = set(hostvars) | {h for members in groups.values() for h in members}
    if not names:
        raise InputError("inventory defines no hosts", file=str(p))
    hosts = {
        n: Host(n, dict(hostvars.get(n, {})), sorted(g for g, m in groups.items() if n in m)) for n in names
    }
    return Inventory(path=p.resolve(), hosts=hosts, groups=groups)
