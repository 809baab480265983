"""The tuning state: first originals win, teardown bookkeeping, the manifest view (no hosts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from labctl.config import load_settings
from labctl.state import StateStore
from labctl.tuning.profiles import load_profile
from labctl.tuning.snapshot import (
    record_applied,
    record_snapshot,
    record_teardown,
    restore_targets,
    revert_snapshot,
    snapshot_for_manifest,
)
from labctl.tuning.teardown import host_plan, plan_is_empty

LIMITS = "/etc/security/limits.d/90-labctl-memlock.conf"


def reading(value: Any, available: bool = True, **extra: Any) -> dict[str, Any]:
    return {"available": available, "value": value, "detail": {}, "reason": "", "noop": False, **extra}


def test_second_tune_keeps_the_first_originals() -> None:
    doc: dict[str, Any] = {"name": "h", "connection": {"ansible_host": "10.0.0.1"}}
    low = load_profile("low-noise")
    record_snapshot(
        doc,
        low,
        {
            "thp.enabled": reading("always"),
            "vm.zone_reclaim_mode": reading(1),
            "cpu.governor": reading(None, available=False),
        },
        "6.18",
        "t1",
    )
    assert doc["tuning"]["pending"]["profiles"] == ["low-noise"]
    record_applied(
        doc, low, {"thp.enabled": {"after": "madvise"}, "vm.zone_reclaim_mode": {"after": 0}}, "t2"
    )
    assert "pending" not in doc["tuning"] and doc["tuning"]["profiles"] == ["low-noise"]
    strict = load_profile("numa-strict")
    record_snapshot(
        doc,
        strict,
        {
            "thp.enabled": reading("madvise"),
            "vm.zone_reclaim_mode": reading(0),
            "cpu.governor": reading({"cpu0": "powersave"}),
        },
        "6.18",
        "t3",
    )
    knobs = doc["tuning"]["knobs"]
    assert knobs["thp.enabled"]["original"] == "always"  # not the tuned madvise
    assert knobs["thp.enabled"]["wanted"] == "never"
    assert knobs["vm.zone_reclaim_mode"]["original"] == 1
    # a knob that was missing at the first tune but exists now gets its first real original
    assert knobs["cpu.governor"]["original"] == {"cpu0": "powersave"} and knobs["cpu.governor"]["available"]
    record_applied(doc, strict, {"thp.enabled": {"after": "never"}}, "t4")
    assert doc["tuning"]["profiles"] == ["low-noise", "numa-strict"]


def test_limits_file_is_recorded_as_owned_only_when_labctl_creates_it() -> None:
    prof = load_profile("io-uring")
    doc: dict[str, Any] = {}
    record_snapshot(
        doc, prof, {"limits.memlock": reading(None), "kernel.io_uring_disabled": reading(2)}, None, "t"
    )
    assert doc["owned_files"] == [LIMITS]
    doc2: dict[str, Any] = {}
    record_snapshot(doc2, prof, {"limits.memlock": reading(65536)}, None, "t")
    assert "owned_files" not in doc2


def test_revert_restores_the_previous_document() -> None:
    doc: dict[str, Any] = {"name": "h", "connection": {}, "owned_files": ["/etc/x-labctl"]}
    previous = {"tuning": None, "owned_files": ["/etc/x-labctl"]}
    record_snapshot(doc, load_profile("io-uring"), {"limits.memlock": reading(None)}, None, "t")
    revert_snapshot(doc, previous)
    assert doc == {"name": "h", "connection": {}, "owned_files": ["/etc/x-labctl"]}


def full_doc() -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": "h",
        "connection": {"ansible_host": "198.18.0.2"},
        "inventory": "x.yml",
        "deployed": {
            "root": "/var/lib/labctl",
            "artifacts": {"riskd-go": {"path": "/var/lib/labctl/bin/riskd-go", "sha256": "ab"}},
        },
        "processes": [{"pid": 4242, "argv0": "/var/lib/labctl/bin/riskd-go", "run_id": "r1"}],
        "owned_files": ["/etc/sysctl.d/99-labctl.conf"],
    }
    record_snapshot(
        doc,
        load_profile("low-noise"),
        {
            "thp.enabled": reading("always"),
            "vm.zone_reclaim_mode": reading(1),
            "cpu.turbo": reading(None, available=False),
        },
        "6.18",
        "t",
    )
    return doc


def test_host_plan_from_state_alone() -> None:
    plan = host_plan(full_doc(), grace_s=3)
    assert [k["id"] for k in plan["knobs"]] == ["thp.enabled", "vm.zone_reclaim_mode"]  # restore order
    assert plan["knobs"][0]["target"] == "always" and plan["knobs"][1]["target"] == 1
    assert plan["processes"] == [{"pid": 4242, "argv0": "/var/lib/labctl/bin/riskd-go", "run_id": "r1"}]
    assert plan["deployed_root"] == "/var/lib/labctl" and plan["grace"] == 3
    assert plan["owned_files"] == ["/etc/sysctl.d/99-labctl.conf"]
    assert plan_is_empty(host_plan({"name": "h", "connection": {}}))
    assert "cpu.turbo" not in restore_targets(full_doc())


def test_full_teardown_keeps_only_the_connection() -> None:
    doc = full_doc()
    returns = {
        "knob:thp.enabled": {"status": "restored"},
        "knob:vm.zone_reclaim_mode": {"status": "ok"},
        "process:4242": {"status": "stopped"},
        "deployed": {"status": "removed"},
        "file:/etc/sysctl.d/99-labctl.conf": {"status": "absent"},
    }
    left = record_teardown(doc, returns, host_plan(doc))
    assert left == []
    assert doc == {"name": "h", "connection": {"ansible_host": "198.18.0.2"}}


def test_partial_teardown_keeps_what_was_not_verified() -> None:
    doc = full_doc()
    returns = {
        "knob:thp.enabled": {"status": "restored"},
        "knob:vm.zone_reclaim_mode": {"status": "error"},
        "process:4242": {"status": "still running"},
        "deployed": {"status": "refused"},
    }
    left = record_teardown(doc, returns, host_plan(doc))
    assert list(doc["tuning"]["knobs"]) == ["vm.zone_reclaim_mode"]
    assert doc["processes"][0]["pid"] == 4242 and doc["deployed"]["root"] == "/var/lib/labctl"
    assert doc["owned_files"] == ["/etc/sysctl.d/99-labctl.conf"]  # not reached
    assert len(left) == 4


def test_snapshot_for_manifest(tmp_path: Path) -> None:
    settings = load_settings({"data_dir": str(tmp_path)})
    store = StateStore(tmp_path)
    prof = load_profile("low-noise")

    def change(doc: dict[str, Any]) -> None:
        record_snapshot(
            doc,
            prof,
            {
                "thp.enabled": reading("always"),
                "cpu.turbo": reading(None, available=False, reason="no turbo"),
            },
            "6.18.1",
            "t1",
        )
        record_applied(doc, prof, {"thp.enabled": {"after": "madvise"}}, "t2")

    store.update("h1", change)
    snap = snapshot_for_manifest(settings, "h1")
    assert snap["profiles"] == ["low-noise"] and snap["kernel"] == "6.18.1" and snap["pending"] is None
    assert snap["knobs"]["thp.enabled"] == {
        "original": "always",
        "wanted": "madvise",
        "current": "madvise",
        "available": True,
        "noop": False,
        "reason": "",
        "kind": "sysfs_bracket",
    }
    assert (
        snap["knobs"]["cpu.turbo"]["available"] is False
        and snap["knobs"]["cpu.turbo"]["reason"] == "no turbo"
    )
    assert snapshot_for_manifest(settings, "nobody")["knobs"] == {}


def test_knob_that_vanished_after_its_original_was_recorded_stays_restorable() -> None:
    doc: dict[str, Any] = {}
    low = load_profile("low-noise")
    record_snapshot(doc, low, {"cpu.governor": reading({"cpu0": "powersave"})}, None, "t1")
    record_snapshot(
        doc, low, {"cpu.governor": reading(None, available=False, reason="no cpufreq")}, None, "t2"
    )
    rec = doc["tuning"]["knobs"]["cpu.governor"]
    assert rec["available"] and rec["original"] == {"cpu0": "powersave"} and "no cpufreq" in rec["reason"]
    assert "cpu.governor" in restore_targets(doc)
