"""Run playbooks through ansible-runner and return typed, structured results.

Outcomes come from ansible-runner's status, rc, stats and events — never from
Ansible's stdout text, which is kept only in the artifacts directory for people to
read. Events drive the live progress display and carry facts back to labctl.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from labctl.errors import InputError
from labctl.inventory import ansible_env
from labctl.paths import project_root

EventSink = Callable[[dict[str, Any]], None]


@dataclass
class HostResult:
    """Per-host outcome in the shape of the ``--json`` contract."""

    ok: bool = True
    changed: int = 0
    failed: bool = False
    unreachable: bool = False
    msg: str = ""
    failed_task: str | None = None
    tasks_ok: int = 0
    skipped: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class PlaybookResult:
    playbook: str
    status: str
    rc: int
    hosts: dict[str, HostResult]
    artifacts: Path
    facts: dict[str, dict[str, Any]] = field(default_factory=dict)
    returns: dict[str, dict[str, Any]] = field(default_factory=dict)
    elapsed_s: float = 0.0
    check: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "successful" and all(h.ok for h in self.hosts.values())

    @property
    def changed(self) -> int:
        return sum(h.changed for h in self.hosts.values())

    def failures(self) -> dict[str, str]:
        """Host → reason for every host that did not succeed (never an empty reason)."""
        default = f"playbook {self.status} (rc {self.rc}); Ansible's output: {self.artifacts}"
        return {n: h.msg or default for n, h in self.hosts.items() if not h.ok}


def _event_msg(res: Mapping[str, Any]) -> str:
    for key in ("msg", "stderr", "reason", "module_stderr", "stdout"):
        val = res.get(key)
        if val:
            text = val if isinstance(val, str) else json.dumps(val)
            return " ".join(text.split())[:500]
    return "failed"


class ResultBuilder:
    """Fold ansible-runner events and stats into a :class:`PlaybookResult` (pure logic, unit-tested)."""

    def __init__(self) -> None:
        self.hosts: dict[str, HostResult] = {}
        self.facts: dict[str, dict[str, Any]] = {}
        self.returns: dict[str, dict[str, Any]] = {}

    def host(self, name: str) -> HostResult:
        return self.hosts.setdefault(name, HostResult())

    def feed(self, event: Mapping[str, Any]) -> None:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        name = data.get("host")
        if not name:
            return
        res = data.get("res") or {}
        task = data.get("task") or ""
        if kind == "runner_on_ok":
            facts = res.get("ansible_facts") or {}
            for key, value in facts.items():
                if key.startswith("labctl_"):
                    self.facts.setdefault(name, {})[key] = value
            ret = res.get("labctl_return")
            if isinstance(ret, Mapping):
                self.returns.setdefault(name, {}).update(ret)
        elif kind == "runner_on_failed" and not data.get("ignore_errors"):
            h = self.host(name)
            h.failed, h.ok = True, False
            h.failed_task = task
            h.msg = f"task '{task}' failed: {_event_msg(res)}"
        elif kind == "runner_on_unreachable":
            h = self.host(name)
            h.unreachable, h.ok = True, False
            h.failed_task = task
            h.msg = f"unreachable: {_event_msg(res)}"

    def apply_stats(self, stats: Mapping[str, Mapping[str, int]] | None) -> None:
        if not stats:
            return
        for name in set().union(*(v.keys() for v in stats.values() if isinstance(v, Mapping))):
            h = self.host(name)
            h.changed = int(stats.get("changed", {}).get(name, 0))
            h.tasks_ok = int(stats.get("ok", {}).get(name, 0))
            h.skipped = int(stats.get("skipped", {}).get(name, 0))
            if stats.get("failures", {}).get(name):
                h.failed, h.ok = True, False
                h.msg = h.msg or "a task failed"
            if stats.get("dark", {}).get(name):
                h.unreachable, h.ok = True, False
                h.msg = h.msg or "unreachable"

    def build(
        self,
        playbook: str,
        status: str,
        rc: int,
        artifacts: Path,
        elapsed: float,
        check: bool,
        expected: list[str],
    ) -> PlaybookResult:
        for name in expected:
            if name not in self.hosts:
                h = self.host(name)
                if status != "successful":
                    h.ok, h.failed = False, True
                    h.msg = f"playbook ended '{status}' before this host reported"
        return PlaybookResult(
            playbook,
            status,
            rc,
            dict(sorted(self.hosts.items())),
            artifacts,
            self.facts,
            self.returns,
            elapsed,
            check,
        )


def run_playbook(
    playbook: str,
    inventory: Path,
    *,
    data_dir: Path,
    hosts: list[str],
    limit: str | None = None,
    extravars: Mapping[str, Any] | None = None,
    check: bool = False,
    forks: int = 16,
    on_event: EventSink | None = None,
    cancel: threading.Event | None = None,
) -> PlaybookResult:
    """Run ``playbooks/<playbook>`` and return the typed outcome.

    ``hosts`` are the names expected to report (used to mark hosts that never did); the
    play is limited to them unless ``limit`` says otherwise.
    Ansible's own output goes to ``<data_dir>/ansible/<ident>/artifacts``.
    """
    import ansible_runner  # imported lazily: it is slow to import

    root = project_root()
    pb = root / "playbooks" / playbook
    if not pb.is_file():
        raise InputError("no such playbook", file=str(pb))
    ident = time.strftime("%Y%m%dT%H%M%S") + f"-{Path(playbook).stem}-{int(time.time_ns() % 1e6):06d}"
    private = Path(data_dir) / "ansible" / ident
    private.mkdir(parents=True, exist_ok=True)
    cache = Path(data_dir) / "ansible" / "factcache"
    envvars = {
        "ANSIBLE_ROLES_PATH": str(root / "roles"),
        # ansible-runner turns host-key checking off unless told otherwise; labctl keeps it on.
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=120s -o ServerAliveInterval=15",
        "ANSIBLE_GATHERING": "smart",
        "ANSIBLE_CACHE_PLUGIN": "jsonfile",
        "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(cache),
        "ANSIBLE_CACHE_PLUGIN_TIMEOUT": "3600",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
        "ANSIBLE_LOCALHOST_WARNING": "False",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
        "ANSIBLE_TIMEOUT": "10",
        "ANSIBLE_PYTHON_INTERPRETER": "auto_silent",
    }
    builder = ResultBuilder()

    def handler(event: dict[str, Any]) -> bool:
        builder.feed(event)
        if on_event is not None:
            on_event(event)
        return True

    # ansible-runner looks ansible-playbook up on the PATH it passes to the play:
    # the interpreter's own bin first (without changing this process's environment).
    envvars["PATH"] = ansible_env()["PATH"]
    started = time.monotonic()
    runner = ansible_runner.run(
        private_data_dir=str(private),
        project_dir=str(root),
        playbook=str(pb),
        inventory=str(Path(inventory).resolve()),
        limit=limit or ",".join(hosts),
        extravars=dict(extravars or {}),
        cmdline="--check --diff" if check else None,
        envvars=envvars,
        forks=forks,
        quiet=True,
        event_handler=handler,
        cancel_callback=(lambda: cancel.is_set()) if cancel is not None else None,
        settings={"suppress_ansible_output": True},
    )
    if runner.status == "canceled":
        # Ctrl-C reached ansible-runner first: surface it as the interrupt it is.
        raise KeyboardInterrupt
    builder.apply_stats(runner.stats)
    return builder.build(
        playbook,
        runner.status,
        int(runner.rc or 0),
        private / "artifacts",
        time.monotonic() - started,
        check,
        hosts,
    )
