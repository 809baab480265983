"""Build the workloads with `make workloads` and keep them in a content-addressed store.

The store lives in ``<data_dir>/artifacts``: each binary under its sha256, plus an
index of what was built from which source revision with which toolchains and flags.
A run's manifest records the hashes; `labctl reproduce` looks binaries up by hash.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from labctl.errors import EnvironmentProblem
from labctl.state import atomic_write_json, read_json

WORKLOAD_BINARIES = ("riskd-go", "riskd-rust", "riskd-cpp", "loadgen")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class Artifact:
    name: str
    sha256: str
    path: str  # in the store
    size: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _version(argv: list[str]) -> str | None:
    exe = shutil.which(
        argv[0],
        path=os.pathsep.join(
            [os.environ.get("PATH", ""), "/usr/local/go/bin", str(Path.home() / ".cargo/bin")]
        ),
    )
    if not exe:
        return None
    try:
        out = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    first = (out.stdout or out.stderr).strip().splitlines()
    return first[0] if first else None


def toolchain_versions() -> dict[str, str | None]:
    """Exact toolchain versions on the controller (recorded in manifests)."""
    return {
        "go": _version(["go", "version"]),
        "rustc": _version(["rustc", "--version"]),
        "cargo": _version(["cargo", "--version"]),
        "g++": _version(["g++", "--version"]),
        "arch": platform.machine(),
    }


def build_flags(source_root: Path) -> dict[str, str]:
    out = subprocess.run(
        ["make", "-s", "-C", str(source_root), "build-flags"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    flags = {}
    for line in out.stdout.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            flags[k] = v.replace(str(source_root), "<src>")
    return flags


def build_workloads(source_root: Path, log: Path | None = None) -> dict[str, Path]:
    """Run ``make workloads`` in ``source_root``; return the built binaries by name."""
    started = time.monotonic()
    proc = subprocess.run(
        ["make", "-C", str(source_root), "workloads"],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise EnvironmentProblem(
            f"building the workloads failed ({time.monotonic() - started:.0f}s): " + " | ".join(tail)
        )
    out = {}
    for name in WORKLOAD_BINARIES:
        p = source_root / "build" / "bin" / name
        if not p.is_file():
            raise EnvironmentProblem(f"make workloads did not produce {p}")
        out[name] = p
    return out


class ArtifactStore:
    """Binaries by sha256 under ``<data_dir>/artifacts``."""

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir) / "artifacts"
        (self.root / "sha256").mkdir(parents=True, exist_ok=True)
        self.index_path = self.root / "index.json"

    def path_for(self, digest: str) -> Path:
        return self.root / "sha256" / digest

    def has(self, digest: str) -> bool:
        p = self.path_for(digest)
        return p.is_file() and sha256_file(p) == digest

    def put(self, name: str, path: Path, meta: dict[str, Any]) -> Artifact:
        digest = sha256_file(path)
        dest = self.path_for(digest)
        if not dest.is_file():
            tmp = dest.with_suffix(".tmp")
            shutil.copy2(path, tmp)
            os.chmod(tmp, 0o755)
            os.replace(tmp, dest)
        index = read_json(self.index_path, {})
        entries = index.setdefault(name, [])
        if not any(e["sha256"] == digest for e in entries):
            entries.append(
                {"sha256": digest, "stored_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **meta}
            )
            atomic_write_json(self.index_path, index)
        return Artifact(name, digest, str(dest), dest.stat().st_size)

    def lookup(self, name: str, digest: str) -> Artifact | None:
        if not self.has(digest):
            return None
        p = self.path_for(digest)
        return Artifact(name, digest, str(p), p.stat().st_size)


def build_and_store(
    data_dir: Path, source_root: Path, source_rev: str | None, source_dirty: bool | None = None
) -> dict[str, Artifact]:
    """Build in ``source_root`` and put every binary into the store."""
    bins = build_workloads(source_root, log=Path(data_dir) / "artifacts" / "last-build.log")
    store = ArtifactStore(data_dir)
    meta = {
        "source_rev": source_rev,
        "source_dirty": source_dirty,
        "toolchains": toolchain_versions(),
        "flags": build_flags(source_root),
    }
    return {name: store.put(name, p, meta) for name, p in bins.items()}
