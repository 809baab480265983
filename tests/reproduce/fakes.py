"""Fake run directories for the fast tests: a manifest as `labctl run` writes it, no cells."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from labctl.experiment.spec import load_experiment
from labctl.workloads.build import WORKLOAD_BINARIES, ArtifactStore, toolchain_versions

ROOT = Path(__file__).resolve().parents[2]


def head() -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()


def worktrees() -> list[str]:
    """The repository's worktrees (a reproduction must leave none behind)."""
    out = subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "list", "--porcelain"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("worktree ")]


def fake_binaries(data_dir: Path, names: tuple[str, ...] = WORKLOAD_BINARIES) -> dict[str, str]:
    """Store small stand-in files as artifacts; return their sha256 by name."""
    store = ArtifactStore(data_dir)
    src = data_dir / "fake-bin"
    src.mkdir(parents=True, exist_ok=True)
    out = {}
    for n in names:
        p = src / n
        p.write_bytes(f"#!/bin/sh\necho {n}\n".encode())
        out[n] = store.put(n, p, {"source_rev": head(), "toolchains": toolchain_versions()}).sha256
    return out


def fake_run(
    data_dir: Path,
    run_id: str = "20260101T000000Z-gc-tail-latency-0f0f",
    *,
    artifacts: dict[str, str] | None = None,
    commit: str | None = None,
    toolchains: dict[str, Any] | None = None,
    **overrides: Any,
) -> Path:
    """A run directory with a plausible manifest and results.json; returns the directory."""
    exp = load_experiment(ROOT / "experiments/gc-tail-latency.yaml", quick=True)
    tools = toolchains or toolchain_versions()
    arts = artifacts or {n: f"{i:064x}" for i, n in enumerate(WORKLOAD_BINARIES, 1)}
    manifest: dict[str, Any] = {
        "run_id": run_id,
        "experiment": exp.name,
        "spec": exp.model_dump(mode="json"),
        "spec_file": "experiments/gc-tail-latency.yaml",
        "quick": True,
        "git": {"commit": commit or head(), "dirty": False},
        "artifacts": arts,
        "build": {n: {"sha256": d, "toolchains": tools} for n, d in arts.items()},
        "toolchains": tools,
        "hosts": {},
        "tuning": {},
        "status": "completed",
        **overrides,
    }
    d = data_dir / "runs" / run_id
    d.mkdir(parents=True)
    (d / "manifest.json").write_text(json.dumps(manifest))
    (d / "results.json").write_text(json.dumps({"run_id": run_id, "cells": [], "stats": {}, "verdicts": []}))
    return d
