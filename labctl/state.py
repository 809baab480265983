"""Local state that survives the process: written after every change, read by teardown.

Layout under ``<data_dir>/state/``: one JSON document per host (``hosts/<name>.json``)
holding what labctl did there — the tuning snapshot (original values), what was
deployed, which processes it started — plus the connection details needed to reach
the host again without the inventory. Writes are atomic (temporary file, fsync,
rename) and serialised by an ``flock`` on the host's lock file, so a ``kill -9`` at
any moment leaves either the old or the new document, never half of one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def atomic_write_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` atomically and durably."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default


class StateStore:
    """Per-host state documents in ``<data_dir>/state``."""

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir) / "state"
        (self.root / "hosts").mkdir(parents=True, exist_ok=True)

    def _path(self, host: str) -> Path:
        return self.root / "hosts" / f"{_SAFE.sub('_', host)}.json"

    @contextlib.contextmanager
    def _locked(self, host: str) -> Iterator[None]:
        lock = self._path(host).with_suffix(".lock")
        with open(lock, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def hosts(self) -> list[str]:
        return sorted(read_json(p, {}).get("name", p.stem) for p in (self.root / "hosts").glob("*.json"))

    def get(self, host: str) -> dict[str, Any]:
        doc = read_json(self._path(host), None)
        return doc if doc is not None else {"name": host}

    def update(self, host: str, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Apply ``change`` to the host's document under the lock and persist it before returning."""
        with self._locked(host):
            doc = self.get(host)
            change(doc)
            doc["name"] = host
            atomic_write_json(self._path(host), doc)
            return doc

    def forget(self, host: str) -> None:
        with self._locked(host), contextlib.suppress(FileNotFoundError):
            self._path(host).unlink()

    def facts_path(self, host: str) -> Path:
        return self.root.parent / "facts" / f"{_SAFE.sub('_', host)}.json"

    def save_facts(self, host: str, facts: dict[str, Any]) -> None:
        atomic_write_json(self.facts_path(host), facts)

    def facts(self, host: str) -> dict[str, Any] | None:
        data = read_json(self.facts_path(host), None)
        return data if isinstance(data, dict) else None

    def all_facts(self) -> dict[str, dict[str, Any]]:
        d = self.root.parent / "facts"
        if not d.is_dir():
            return {}
        return {p.stem: read_json(p, {}) for p in sorted(d.glob("*.json"))}
