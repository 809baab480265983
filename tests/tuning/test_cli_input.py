"""Bad input exits 2 before any host is touched; state-only target resolution (no hosts needed)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from labctl.config import load_settings
from labctl.errors import InputError
from labctl.state import StateStore
from labctl.tuning.targets import resolve_targets
from tests.conftest import run_labctl
from tests.tuning.helpers import ROOT, real_snapshot

LOCAL = str(ROOT / "inventories" / "local.yml")


def data_dir() -> Path:
    return Path(os.environ["LABCTL_DATA_DIR"])


@pytest.mark.parametrize(
    ("profile_text", "words"),
    [
        (None, "unknown profile"),
        ("knobs:\n  kernel.numa_balancing: 7\n", "knobs.kernel.numa_balancing"),
        ("knobs:\n  kernel.no_such_knob: 1\n", "knobs.kernel.no_such_knob"),
        ("knobs:\n  thp.enabled: sometimes\n", "knobs.thp.enabled"),
        ("knobs:\n  vm.zone_reclaim_mode: 0\nextra: 1\n", "extra"),
    ],
)
def test_bad_profile_exits_2_and_writes_nothing(tmp_path: Path, profile_text: str | None, words: str) -> None:
    if profile_text is None:
        ref = "no-such-profile"
    else:
        (tmp_path / "p.yaml").write_text(profile_text)
        ref = str(tmp_path / "p.yaml")
    before = real_snapshot()
    res = run_labctl("tune", "-i", LOCAL, "--profile", ref, "--json")
    assert res.code == 2, res.stderr
    doc = json.loads(res.stdout)
    assert doc["ok"] is False and words in doc["error"]
    if profile_text is not None:
        assert doc["file"] == ref
    assert real_snapshot() == before
    assert StateStore(data_dir()).hosts() == []
    assert not (data_dir() / "ansible").exists()  # no playbook ever ran


def test_tune_needs_a_profile_and_show_takes_none() -> None:
    assert run_labctl("tune", "-i", LOCAL).code == 2
    assert run_labctl("tune", "--show", "--profile", "low-noise").code == 2


def test_unknown_limit_host_is_input_error() -> None:
    res = run_labctl("tune", "-i", LOCAL, "--profile", "low-noise", "--limit", "nosuchhost", "--json")
    assert res.code == 2 and "nosuchhost" in res.json["error"]
    res = run_labctl("teardown", "--limit", "nosuchhost", "--json")
    assert res.code == 2 and "nosuchhost" in res.json["error"]


def test_teardown_with_nothing_recorded_is_ok() -> None:
    res = run_labctl("teardown", "--json")
    assert res.code == 0 and res.json == {
        "ok": True,
        "check": False,
        "hosts": {},
        "notes": [],
        "elapsed_s": 0,
    }
    store = StateStore(data_dir())
    store.update("bare", lambda doc: doc.update(connection={"ansible_connection": "local"}))
    res = run_labctl("teardown", "--json")
    assert res.code == 0 and res.json["hosts"]["bare"]["ok"] and "nothing" in res.json["hosts"]["bare"]["msg"]
    assert not (data_dir() / "ansible" / "inventories").exists() or not any(
        (data_dir() / "ansible" / "inventories").iterdir()
    )


def test_targets_from_state_alone(tmp_path: Path) -> None:
    settings = load_settings({"data_dir": str(tmp_path)})
    store = StateStore(tmp_path)
    store.update("a", lambda d: d.update(connection={"ansible_host": "198.18.0.11", "ansible_user": "root"}))
    store.update(
        "b",
        lambda d: d.update(
            tuning={"knobs": {}, "host_vars": {"labctl_booking_required": True}},
            connection={"ansible_host": "198.18.0.12"},
        ),
    )
    store.update("c", lambda d: d.update(tuning={"knobs": {}}))
    t = resolve_targets(settings, None, None)
    try:
        assert t.hosts == ["a", "b", "c"] and t.missing_connection == ["c"]
        assert t.inventory.hosts["b"].vars == {"ansible_host": "198.18.0.12", "labctl_booking_required": True}
        assert t.inventory.path.is_file() and oct(t.inventory.path.stat().st_mode & 0o777) == "0o600"
    finally:
        t.cleanup()
    assert not t.inventory.path.exists()
    t = resolve_targets(settings, tmp_path / "gone.yml", "a")
    t.cleanup()
    assert t.hosts == ["a"] and "does not exist" in t.notes[0]
    t = resolve_targets(settings, Path(LOCAL), "localhost,b")
    t.cleanup()
    assert t.hosts == ["localhost", "b"]
    assert t.inventory.hosts["localhost"].vars["ansible_connection"] == "local"
    with pytest.raises(InputError):
        resolve_targets(settings, None, "zzz")


def test_teardown_of_a_gated_host_needs_a_booking() -> None:
    """The booking gate also covers teardown from state alone (the flag is kept in the tuning record)."""
    knob = {
        "available": True,
        "original": 0,
        "spec": {
            "id": "vm.zone_reclaim_mode",
            "kind": "sysctl",
            "group": "numa",
            "rank": 21,
            "name": "vm.zone_reclaim_mode",
        },
    }
    StateStore(data_dir()).update(
        "gated",
        lambda d: d.update(
            connection={"ansible_host": "198.18.0.99"},
            tuning={"knobs": {"vm.zone_reclaim_mode": knob}, "host_vars": {"labctl_booking_required": True}},
        ),
    )
    res = run_labctl("teardown", "--json")
    assert res.code == 3, res.stdout + res.stderr
    assert "gated" in res.json["error"]
    assert "tuning" in StateStore(data_dir()).get("gated")
