"""`labctl reproduce` of a real quick gc-tail-latency run on this machine (inventories/local.yml).

The original run is made once per module; the reproduction once; the tests read
both. About 3 minutes in all.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from labctl.workloads.build import ArtifactStore, sha256_file
from tests.conftest import CliResult, run_labctl
from tests.reproduce.fakes import ROOT, worktrees

pytestmark = pytest.mark.integration

INV = str(ROOT / "inventories/local.yml")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("reproduce-data")


def _labctl(data_dir: Path, *args: str) -> CliResult:
    return run_labctl(*args, env={"LABCTL_DATA_DIR": str(data_dir), "LABCTL_INFLUX_URL": ""}, timeout=900)


@pytest.fixture(scope="module")
def original(data_dir: Path) -> dict[str, Any]:
    res = _labctl(data_dir, "run", "experiments/gc-tail-latency.yaml", "-i", INV, "--quick", "--json")
    assert res.code == 0, res.stderr[-3000:]
    doc = res.json
    assert doc["verdicts"], "the quick run judged no claims"
    return dict(doc)


@pytest.fixture(scope="module")
def reproduction(data_dir: Path, original: dict[str, Any]) -> Iterator[tuple[CliResult, dict[str, Any]]]:
    before = worktrees()
    res = _labctl(data_dir, "reproduce", original["run_id"], "-i", INV, "--json")
    assert worktrees() == before, "the temporary worktree was not removed"
    assert res.code == 0, res.stdout[-2000:] + res.stderr[-3000:]
    yield res, res.json


def _manifest(run_dir: str | Path) -> dict[str, Any]:
    return dict(json.loads((Path(run_dir) / "manifest.json").read_text()))


def test_a_new_run_linked_to_the_original(
    original: dict[str, Any], reproduction: tuple[CliResult, dict[str, Any]]
) -> None:
    _res, doc = reproduction
    assert doc["ok"] is True
    assert doc["original_run_id"] == original["run_id"]
    assert doc["run_id"] != original["run_id"]
    new, old = _manifest(doc["run_dir"]), _manifest(original["run_dir"])
    assert new["reproduces"] == original["run_id"]
    assert new["status"] == "completed"
    assert new["git"]["commit"] == old["git"]["commit"]
    assert new["artifacts"] == old["artifacts"]
    assert new["spec"] == old["spec"] and new["quick"] is True
    assert new["reproduction"]["artifacts"] == dict.fromkeys(old["artifacts"], "store")


def test_every_claim_is_compared(
    original: dict[str, Any], reproduction: tuple[CliResult, dict[str, Any]]
) -> None:
    res, doc = reproduction
    then = {v["claim"]: v["verdict"] for v in original["verdicts"]}
    now = {v["claim"]: v["verdict"] for v in doc["verdicts"]}
    assert [c["claim"] for c in doc["claims"]] == list(then)
    for c in doc["claims"]:
        assert c["original"] == then[c["claim"]]
        assert c["reproduced"] == now[c["claim"]]
        assert c["holds"] is (then[c["claim"]] == now[c["claim"]])
    held = sum(c["holds"] for c in doc["claims"])
    assert f"{held} of {len(then)} claim verdicts held" in res.stderr or (
        held == len(then) and f"all {held} claim verdicts held" in res.stderr
    )


def test_key_figures_side_by_side(
    original: dict[str, Any], reproduction: tuple[CliResult, dict[str, Any]]
) -> None:
    _res, doc = reproduction
    results = json.loads((Path(original["run_dir"]) / "results.json").read_text())
    expected = {
        (v, r, m)
        for v in results["stats"]
        for r in results["stats"][v]
        for m in ("p50_us", "p99_us", "p999_us")
    }
    assert {(f["variant"], f["rate"], f["metric"]) for f in doc["figures"]} == expected
    for f in doc["figures"]:
        assert f["original"] == results["stats"][f["variant"]][f["rate"]]["pooled"][f["metric"]]["value"]
        assert f["reproduced"] is not None and f["ratio"] == pytest.approx(f["reproduced"] / f["original"])
        lo, hi = f["original_ci"]
        assert f["within_original_ci"] is (lo <= f["reproduced"] <= hi)


def test_environment_differs_only_in_timestamps(reproduction: tuple[CliResult, dict[str, Any]]) -> None:
    _res, doc = reproduction
    # Strict on purpose. On a machine that another process tunes meanwhile (the kernel is
    # shared), those changes show up here — correctly — and this test fails.
    assert doc["environment_diff"] == [], "environment differs between the runs: " + json.dumps(
        doc["environment_diff"], indent=1
    )


def test_saved_comparison_and_report_section(reproduction: tuple[CliResult, dict[str, Any]]) -> None:
    _res, doc = reproduction
    saved = json.loads(Path(doc["reproduction_json"]).read_text())
    assert Path(doc["reproduction_json"]).parent == Path(doc["run_dir"])
    for key in ("run_id", "original_run_id", "claims", "figures", "environment_diff", "summary"):
        assert saved[key] == doc[key]
    html = (Path(doc["run_dir"]) / "report.html").read_text()
    assert f"Reproduction of {doc['original_run_id']}" in html
    assert "claim verdicts held" in html and "Environment differences" in html


def test_runs_lists_which_run_reproduces_which(
    data_dir: Path, original: dict[str, Any], reproduction: tuple[CliResult, dict[str, Any]]
) -> None:
    _res, doc = reproduction
    res = _labctl(data_dir, "runs", "--json")
    assert res.code == 0, res.stderr
    rows = {r["run_id"]: r for r in res.json["runs"]}
    assert rows[doc["run_id"]]["reproduces"] == original["run_id"]
    assert rows[original["run_id"]]["reproduces"] is None
    table = run_labctl("runs", env={"LABCTL_DATA_DIR": str(data_dir), "COLUMNS": "300"})
    line = next(x for x in table.stdout.splitlines() if doc["run_id"] in x)
    assert original["run_id"] in line, table.stdout


def test_a_tampered_artifact_is_refused(
    data_dir: Path, original: dict[str, Any], reproduction: tuple[CliResult, dict[str, Any]]
) -> None:
    digest = _manifest(original["run_dir"])["artifacts"]["loadgen"]
    stored = ArtifactStore(data_dir).path_for(digest)
    content = stored.read_bytes()
    runs_before = sorted(p.name for p in (data_dir / "runs").iterdir())
    try:
        stored.write_bytes(content[:-16] + b"\0" * 16)
        actual = sha256_file(stored)
        res = _labctl(data_dir, "reproduce", original["run_id"], "-i", INV, "--json")
    finally:
        stored.write_bytes(content)
    assert res.code == 1, res.stderr
    assert res.json["kind"] == "ArtifactMismatch"
    for needle in ("loadgen", digest, actual):
        assert needle in res.json["error"] and needle in res.stderr
    assert sorted(p.name for p in (data_dir / "runs").iterdir()) == runs_before, "a refused reproduction ran"
