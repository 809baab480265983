"""Bad input exits 2 and a binary that is not the recorded one exits 1 — before anything runs.

These use fake run directories, so they are fast: every refusal happens before a
build, a worktree, or any host is touched.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from labctl.workloads.build import ArtifactStore
from tests.conftest import run_labctl
from tests.reproduce.fakes import ROOT, fake_binaries, fake_run, worktrees

INV = str(ROOT / "inventories/local.yml")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


def _reproduce(data_dir: Path, *args: str) -> Any:
    before = worktrees()
    res = run_labctl("reproduce", *args, "--json", env={"LABCTL_DATA_DIR": str(data_dir)}, timeout=120)
    assert worktrees() == before, "a refused reproduction left a git worktree behind"
    return res


def _runs(data_dir: Path) -> list[str]:
    d = data_dir / "runs"
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def _refused(res: Any, code: int, *needles: str) -> dict[str, Any]:
    assert res.code == code, (res.code, res.stdout, res.stderr)
    doc = res.json
    assert doc["ok"] is False
    for n in needles:
        assert n in doc["error"], doc["error"]
        assert n in res.stderr
    return dict(doc)


def test_unknown_run_id(data_dir: Path) -> None:
    _refused(_reproduce(data_dir, "20990101T000000Z-nothing-0000"), 2, "unknown run id")
    assert _runs(data_dir) == []


def test_unknown_run_id_without_inventory(data_dir: Path) -> None:
    _refused(_reproduce(data_dir, "no-such-run"), 2, "unknown run id 'no-such-run'")


def test_run_directory_without_manifest(data_dir: Path) -> None:
    d = fake_run(data_dir)
    (d / "manifest.json").unlink()
    _refused(_reproduce(data_dir, d.name, "-i", INV), 2, "no manifest.json")
    assert _runs(data_dir) == [d.name]


def test_corrupt_manifest(data_dir: Path) -> None:
    d = fake_run(data_dir)
    (d / "manifest.json").write_text('{"run_id": "x", "experi')
    _refused(_reproduce(data_dir, d.name, "-i", INV), 2, "manifest is corrupt")
    assert _runs(data_dir) == [d.name]


def test_manifest_with_an_invalid_spec(data_dir: Path) -> None:
    d = fake_run(data_dir)
    m = json.loads((d / "manifest.json").read_text())
    m["spec"]["baseline"] = "cobol"
    (d / "manifest.json").write_text(json.dumps(m))
    _refused(_reproduce(data_dir, d.name, "-i", INV), 2, "recorded spec is not valid")


def test_revision_that_no_longer_exists(data_dir: Path) -> None:
    gone = "0123456789abcdef0123456789abcdef01234567"
    d = fake_run(data_dir, commit=gone)
    doc = _refused(_reproduce(data_dir, d.name, "-i", INV), 2, f"revision {gone} no longer exists")
    assert doc["key"] == "git.commit"
    assert _runs(data_dir) == [d.name]


def test_manifest_without_a_revision(data_dir: Path) -> None:
    d = fake_run(data_dir, git={"commit": None, "dirty": None})
    _refused(_reproduce(data_dir, d.name, "-i", INV), 2, "records no git revision")


def test_run_without_results(data_dir: Path) -> None:
    d = fake_run(data_dir)
    (d / "results.json").unlink()
    _refused(_reproduce(data_dir, d.name, "-i", INV), 2, "nothing to compare with")


def test_tampered_stored_artifact_is_refused(data_dir: Path) -> None:
    hashes = fake_binaries(data_dir)
    d = fake_run(data_dir, artifacts=hashes)
    stored = ArtifactStore(data_dir).path_for(hashes["riskd-go"])
    stored.write_bytes(stored.read_bytes() + b"# changed after it was stored\n")
    from labctl.workloads.build import sha256_file

    actual = sha256_file(stored)
    doc = _refused(_reproduce(data_dir, d.name, "-i", INV), 1, "riskd-go", hashes["riskd-go"], actual)
    assert doc["kind"] == "ArtifactMismatch"
    assert doc["artifacts"] == [
        {
            "name": "riskd-go",
            "expected": hashes["riskd-go"],
            "actual": actual,
            "where": f"the stored file {stored}",
        }
    ]
    assert _runs(data_dir) == [d.name]
    assert not (data_dir / "state" / "hosts" / "localhost.json").exists()


def test_missing_artifact_with_other_toolchains_is_refused(data_dir: Path) -> None:
    hashes = fake_binaries(data_dir, ("riskd-rust", "riskd-cpp", "loadgen"))
    hashes["riskd-go"] = "f" * 64  # not in the store: would have to be rebuilt
    from labctl.workloads.build import toolchain_versions

    then = {**toolchain_versions(), "go": "go version go1.0 linux/amd64"}
    d = fake_run(data_dir, artifacts=hashes, toolchains=then)
    doc = _refused(
        _reproduce(data_dir, d.name, "-i", INV), 1, "toolchains differ", "go1.0", "hashes cannot match"
    )
    assert doc["kind"] == "ToolchainMismatch"
    assert set(doc["toolchains"]) == {"riskd-go"}
    assert _runs(data_dir) == [d.name]
