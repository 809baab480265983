"""Bit-reproducible workload builds, and `reproduce`'s rebuild from a recorded revision.

Slow (Rust with fat LTO): marked integration. The Cargo home and the Go module cache
are shared between the builds, which does not affect their output.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from labctl.config import Settings, load_settings
from labctl.experiment.reproduce import ArtifactMismatch, Reproduction, load_original, make_binaries
from labctl.workloads.build import WORKLOAD_BINARIES, sha256_file
from tests.reproduce.fakes import ROOT, fake_binaries, fake_run, head, worktrees

pytestmark = pytest.mark.integration


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True, timeout=600
    ).stdout


def _checkout(dest: Path, *, with_uncommitted: bool) -> None:
    """``git worktree add`` of HEAD at ``dest``; optionally with this tree's uncommitted workload sources.

    With ``with_uncommitted`` the working tree's modified and untracked (not ignored)
    files under workloads/ and the Makefile are copied over, so the test builds what
    `make workloads` here builds; when the tree is clean that is exactly HEAD.
    """
    _git("worktree", "add", "--detach", "--quiet", str(dest), "HEAD")
    if not with_uncommitted:
        return
    paths = ("workloads", "Makefile")
    for rel in _git("ls-files", "-z", "--modified", "--others", "--exclude-standard", "--", *paths).split(
        "\0"
    ):
        if rel and (ROOT / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, dest / rel)
    for rel in _git("ls-files", "-z", "--deleted", "--", *paths).split("\0"):
        if rel:
            (dest / rel).unlink(missing_ok=True)


def _remove(dest: Path) -> None:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(dest)], check=False)


def _make_all(src: Path) -> tuple[dict[str, str], float]:
    started = time.monotonic()
    bins = make_binaries(src, list(WORKLOAD_BINARIES), log_file=src / "build" / "make.log")
    return {n: sha256_file(p) for n, p in bins.items()}, time.monotonic() - started


@pytest.fixture(scope="module")
def two_builds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], dict[str, str]]]:
    """All four binaries built from two checkouts at different paths (different lengths, too)."""
    base = tmp_path_factory.mktemp("repro-builds").resolve()
    a = base / "a"
    b = base / "second-checkout" / "of" / "labctl"
    b.parent.mkdir(parents=True)
    try:
        _checkout(a, with_uncommitted=True)
        _checkout(b, with_uncommitted=True)
        ha, ta = _make_all(a)
        hb, tb = _make_all(b)
        print(f"\nbuild times: {a}: {ta:.0f}s, {b}: {tb:.0f}s")
        yield ha, hb
    finally:
        _remove(a)
        _remove(b)


def test_all_workload_binaries_are_bit_identical_from_two_checkout_paths(
    two_builds: tuple[dict[str, str], dict[str, str]],
) -> None:
    ha, hb = two_builds
    assert set(ha) == set(WORKLOAD_BINARIES)
    differ = {n: (ha[n], hb[n]) for n in WORKLOAD_BINARIES if ha[n] != hb[n]}
    assert not differ, f"not reproducible (sha256 from path a, path b): {differ}"


@pytest.fixture
def head_build(tmp_path: Path) -> Iterator[dict[str, str]]:
    """riskd-go and riskd-cpp (the fast ones) built from a clean checkout of HEAD."""
    dest = tmp_path / "clean-head"
    _checkout(dest, with_uncommitted=False)
    try:
        bins = make_binaries(dest, ["riskd-go", "riskd-cpp"])
        yield {n: sha256_file(p) for n, p in bins.items()}
    finally:
        _remove(dest)


def _settings(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("LABCTL_DATA_DIR", str(data_dir))
    return load_settings({}, None)


def test_reproduce_rebuilds_missing_binaries_from_the_recorded_revision(
    tmp_path: Path, head_build: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    hashes = {**fake_binaries(data, ("riskd-rust", "loadgen")), **head_build}
    run = fake_run(data, artifacts=hashes, commit=head())
    settings = _settings(data, monkeypatch)
    before = worktrees()
    logs: list[str] = []
    with Reproduction(settings, load_original(settings, run.name), log=logs.append) as repro:
        repro.check_artifacts()
        assert sorted(repro.missing) == ["riskd-cpp", "riskd-go"]
        repro.build()
        checkout = repro.checkout
        assert checkout is not None and str(checkout) in worktrees()
    assert worktrees() == before and not checkout.exists(), "the temporary worktree was not removed"
    assert repro.sources == {
        "riskd-rust": "store",
        "loadgen": "store",
        "riskd-go": "rebuilt",
        "riskd-cpp": "rebuilt",
    }
    for name in ("riskd-go", "riskd-cpp"):
        a = repro.artifacts[name]
        assert a.sha256 == hashes[name] and sha256_file(Path(a.path)) == hashes[name]
    assert any("bit-identical" in line for line in logs), logs


def test_a_rebuild_with_other_bytes_is_refused(
    tmp_path: Path, head_build: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    wrong = "e" * 64
    hashes = {**fake_binaries(data, ("riskd-rust", "loadgen", "riskd-cpp")), "riskd-go": wrong}
    run = fake_run(data, artifacts=hashes, commit=head())
    settings = _settings(data, monkeypatch)
    with Reproduction(settings, load_original(settings, run.name), log=lambda _s: None) as repro:
        repro.check_artifacts()
        with pytest.raises(ArtifactMismatch) as info:
            repro.build()
    msg = str(info.value)
    assert "riskd-go" in msg and wrong in msg and head_build["riskd-go"] in msg
    assert info.value.mismatches[0]["actual"] == head_build["riskd-go"]
    assert "riskd-go" not in repro.artifacts
