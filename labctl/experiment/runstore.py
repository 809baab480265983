"""The run store: ``<data_dir>/runs/<run_id>/`` holds everything a run produced.

``manifest.json`` (what ran, from which source, on what, with which tuning),
``results.json`` (per-cell figures, statistics, verdicts), raw files per cell, the
spooled line protocol and ``report.html``. A run can be reported, compared and
re-shipped from its directory alone.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from pathlib import Path
from typing import Any

from labctl.errors import InputError
from labctl.state import atomic_write_json, read_json

_RUN_ID = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[a-z0-9_.+-]+-[0-9a-f]{4}$")


def new_run_id(experiment: str) -> str:
    return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{experiment}-{secrets.token_hex(2)}"


class RunStore:
    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir) / "runs"
        self.root.mkdir(parents=True, exist_ok=True)

    def create(self, experiment: str) -> tuple[str, Path]:
        for _ in range(10):
            rid = new_run_id(experiment)
            d = self.root / rid
            try:
                d.mkdir()
                return rid, d
            except FileExistsError:
                continue
        raise RuntimeError("could not allocate a run id")

    def dir(self, run_id_or_path: str) -> Path:
        """The directory of a run, given its id (or a path to a run directory)."""
        p = Path(run_id_or_path)
        if p.is_dir() and (p / "manifest.json").exists():
            return p.resolve()
        if not _RUN_ID.match(run_id_or_path) and "/" in run_id_or_path:
            raise InputError("not a run directory", file=run_id_or_path)
        d = self.root / run_id_or_path
        if not d.is_dir():
            raise InputError(f"unknown run id {run_id_or_path!r} (see `labctl runs`)", key="run_id")
        return d

    def manifest(self, run_dir: Path) -> dict[str, Any]:
        path = run_dir / "manifest.json"
        if not path.is_file():
            raise InputError("run directory has no manifest.json", file=str(path))
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"manifest is corrupt: {exc}", file=str(path)) from None
        if not isinstance(data, dict) or "run_id" not in data or "experiment" not in data:
            raise InputError("manifest lacks run_id/experiment", file=str(path))
        return data

    def results(self, run_dir: Path) -> dict[str, Any]:
        data = read_json(run_dir / "results.json", None)
        if not isinstance(data, dict):
            raise InputError("run has no readable results.json", file=str(run_dir / "results.json"))
        return data

    def list(self) -> list[dict[str, Any]]:
        out = []
        for d in sorted(self.root.iterdir()):
            m = read_json(d / "manifest.json", None) if d.is_dir() else None
            if isinstance(m, dict):
                out.append(m)
        return out


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    atomic_write_json(run_dir / "manifest.json", manifest)


def write_results(run_dir: Path, results: dict[str, Any]) -> None:
    atomic_write_json(run_dir / "results.json", results)
