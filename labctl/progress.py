"""Live progress for Ansible plays on stderr, driven by ansible-runner events.

On a terminal: a small table (host, current task, ok/changed/failed) redrawn in
place. Elsewhere (CI logs, --json): one line per task start and per failure.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table


@dataclass
class _Row:
    task: str = "waiting"
    ok: int = 0
    changed: int = 0
    failed: bool = False
    unreachable: bool = False


class AnsibleProgress:
    """Callable event sink; use as a context manager around the play."""

    def __init__(self, console: Console, title: str, hosts: list[str]) -> None:
        self.console = console
        self.title = title
        self.rows = {h: _Row() for h in hosts}
        self.live: Live | None = None
        self.started = time.monotonic()
        self.current_task = ""

    def __enter__(self) -> AnsibleProgress:
        if self.console.is_terminal:
            self.live = Live(self._table(), console=self.console, refresh_per_second=8, transient=True)
            self.live.__enter__()
        else:
            self.console.print(f"[{self.title}] {len(self.rows)} host(s)", highlight=False)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(None, None, None)

    def _table(self) -> Table:
        t = Table(
            title=f"{self.title} — {time.monotonic() - self.started:.0f}s",
            title_justify="left",
            box=None,
            pad_edge=False,
        )
        for col in ("host", "task", "ok", "changed", "state"):
            t.add_column(col)
        for name, r in self.rows.items():
            state = "[red]unreachable" if r.unreachable else "[red]failed" if r.failed else "[green]running"
            t.add_row(name, r.task, str(r.ok), str(r.changed), state)
        return t

    def __call__(self, event: Mapping[str, Any]) -> None:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        host = data.get("host")
        if kind == "playbook_on_task_start":
            self.current_task = data.get("task", "")
            if self.live is None:
                self.console.print(f"[{self.title}] {self.current_task}", highlight=False)
            return
        if not host:
            return
        r = self.rows.setdefault(host, _Row())
        if kind == "runner_on_start":
            r.task = data.get("task", r.task)
        elif kind == "runner_on_ok":
            r.ok += 1
            r.changed += int(bool((data.get("res") or {}).get("changed")))
        elif kind == "runner_on_failed" and not data.get("ignore_errors"):
            r.failed = True
            if self.live is None:
                self.console.print(f"[{self.title}] {host}: FAILED in {data.get('task')}", highlight=False)
        elif kind == "runner_on_unreachable":
            r.unreachable = True
            if self.live is None:
                self.console.print(f"[{self.title}] {host}: UNREACHABLE", highlight=False)
        if self.live is not None:
            self.live.update(self._table())
