"""Deciding what a reproduction runs and re-applies (no hosts touched, no runs made)."""

from __future__ import annotations

from pathlib import Path

import pytest

from labctl.config import Settings, load_settings
from labctl.errors import InputError
from labctl.experiment.reproduce import Reproduction, experiment_for, load_original
from labctl.inventory import Host, Inventory
from tests.reproduce.fakes import ROOT, fake_run, worktrees

LOCAL = Host("localhost", {"ansible_connection": "local"})


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("LABCTL_DATA_DIR", str(tmp_path / "data"))
    return load_settings({}, None)


def _inv() -> Inventory:
    return Inventory(path=ROOT / "inventories/local.yml", hosts={"localhost": LOCAL}, groups={})


def _tuning(profiles: list[str], host: str = "lab1") -> dict[str, object]:
    return {host: {"host": host, "profiles": profiles, "knobs": {}}}


def test_quick_forces_the_quick_section_only_on_a_full_run(settings: Settings) -> None:
    run = fake_run(settings.data_dir)
    original = load_original(settings, run.name)
    assert experiment_for(original, quick=True) is original.experiment  # already quick
    original.manifest["quick"] = False
    full = original.experiment.model_copy(update={"repetitions": 3})
    original.experiment = full
    assert experiment_for(original, quick=False).repetitions == 3
    assert experiment_for(original, quick=True).repetitions == 1


def test_no_recorded_tuning(settings: Settings) -> None:
    original = load_original(settings, fake_run(settings.data_dir, tuning=_tuning([])).name)
    with Reproduction(settings, original, log=lambda _s: None) as repro:
        repro.prepare_tuning(_inv(), [LOCAL])
        assert repro.tuning["status"] == "none" and repro.checkout is None


def test_no_tune_records_that_the_profile_was_not_reapplied(settings: Settings) -> None:
    original = load_original(settings, fake_run(settings.data_dir, tuning=_tuning(["low-noise"])).name)
    with Reproduction(settings, original, log=lambda _s: None) as repro:
        repro.prepare_tuning(_inv(), [LOCAL], enabled=False)
    assert repro.tuning["status"] == "not re-applied" and repro.tuning["reason"] == "--no-tune"
    assert any("not re-applied (--no-tune)" in w for w in repro.warnings)
    assert repro.manifest_extra(False)["reproduction"]["tuning"]["status"] == "not re-applied"


def test_the_recorded_profile_goes_to_the_reproduction_host(settings: Settings) -> None:
    original = load_original(settings, fake_run(settings.data_dir, tuning=_tuning(["low-noise"])).name)
    before = worktrees()
    with Reproduction(settings, original, log=lambda _s: None) as repro:
        repro.prepare_tuning(_inv(), [LOCAL])
        assert repro.checkout is not None and repro.checkout.is_dir()
    assert worktrees() == before
    assert repro.tuning["status"] == "pending"
    assert repro.tuning["plan"] == {"localhost": ["low-noise"]}
    [(hosts, profile)] = repro._profiles
    assert [h.name for h in hosts] == ["localhost"] and profile.names == ["low-noise"]
    assert profile.knobs.get("kernel.numa_balancing") == 0


def test_an_unknown_recorded_profile_is_bad_input(settings: Settings) -> None:
    original = load_original(settings, fake_run(settings.data_dir, tuning=_tuning(["no-such-profile"])).name)
    with Reproduction(settings, original, log=lambda _s: None) as repro, pytest.raises(InputError):
        repro.prepare_tuning(_inv(), [LOCAL])
