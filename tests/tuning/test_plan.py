"""Restore planning: order constraints, drift detection (no hosts)."""

from __future__ import annotations

from labctl.tuning.plan import apply_order, apply_specs, describe_value, drifted, restore_order, values_equal


def test_apply_order_is_by_group_then_rank() -> None:
    ids = [
        "kernel.perf_event_paranoid",
        "cpu.turbo",
        "thp.enabled",
        "service.rngd",
        "cpu.governor",
        "net.core.somaxconn",
        "kernel.io_uring_disabled",
    ]
    assert apply_order(ids) == [
        "service.rngd",
        "thp.enabled",
        "kernel.io_uring_disabled",
        "cpu.governor",
        "cpu.turbo",
        "kernel.perf_event_paranoid",
        "net.core.somaxconn",
    ]


def test_restore_is_reverse_but_governor_stays_before_turbo() -> None:
    ids = ["thp.enabled", "cpu.governor", "cpu.turbo", "kernel.perf_event_paranoid", "vm.zone_reclaim_mode"]
    order = restore_order(ids)
    assert order.index("cpu.governor") < order.index("cpu.turbo")
    # everything else is last-written-first-restored
    rest = [k for k in order if k not in ("cpu.governor", "cpu.turbo")]
    assert rest == ["kernel.perf_event_paranoid", "thp.enabled", "vm.zone_reclaim_mode"]
    assert order == [
        "kernel.perf_event_paranoid",
        "cpu.governor",
        "cpu.turbo",
        "thp.enabled",
        "vm.zone_reclaim_mode",
    ]


def test_apply_specs_are_grouped_for_the_roles() -> None:
    specs = apply_specs({"cpu.turbo": "off", "cpu.governor": "performance", "thp.enabled": "never"})
    assert [s["id"] for s in specs["cpu"]] == ["cpu.governor", "cpu.turbo"]
    assert specs["numa"][0] == {
        "id": "thp.enabled",
        "kind": "sysfs_bracket",
        "group": "numa",
        "rank": 22,
        "path": "/sys/kernel/mm/transparent_hugepage/enabled",
        "wanted": "never",
    }
    assert specs["entropy"] == [] and specs["net"] == []


def test_values_equal_for_per_cpu_governors() -> None:
    assert values_equal("cpufreq_governor", {"cpu0": "performance", "cpu1": "performance"}, "performance")
    assert not values_equal("cpufreq_governor", {"cpu0": "performance", "cpu1": "powersave"}, "performance")
    assert not values_equal("cpufreq_governor", {}, "performance")
    assert values_equal("sysctl", 0, 0) and not values_equal("sysctl", 1, 0)


def test_drift_against_the_value_read_back_after_tuning() -> None:
    rec = {"available": True, "kind": "sysctl", "wanted": "bench", "wanted_host": 1001, "tuned": 1001}
    assert drifted(rec, 1001) is False
    assert drifted(rec, -1) is True
    pending = {"available": True, "kind": "cpufreq_governor", "wanted": "performance", "tuned": None}
    assert drifted(pending, {"cpu0": "performance"}) is False
    assert drifted(pending, {"cpu0": "powersave"}) is True
    assert drifted({"available": False}, None) is None
    assert drifted({"available": True, "noop": True, "wanted": 1}, 2) is None


def test_describe_value() -> None:
    assert describe_value({"cpu0": "performance", "cpu1": "performance"}) == "performance (x2 cpus)"
    assert describe_value({"cpu0": "a", "cpu1": "b"}) == "cpu0=a, cpu1=b"
    assert describe_value({"vm.dirty_ratio": 20}) == "vm.dirty_ratio=20"
    assert describe_value(None) == "absent"
