"""The host-side module (roles/knobs/library/labctl_knobs.py) against a simulated kernel.

The fake kernel has the quirks that break naive restores: a governor write resets
intel_pstate no_turbo, the dirty bytes/ratio pairs are exclusive and dirty_bytes=0
is EINVAL. Starting values are deliberately not the kernel defaults, so a restore
cannot pass by writing defaults.
"""

from __future__ import annotations

from typing import Any

from labctl.tuning.catalog import CATALOG
from labctl.tuning.plan import apply_specs, restore_specs
from tests.tuning.helpers import NO_TURBO, FakeKernel, knobs_mod, machine, sysctl

K = knobs_mod


def flat(wanted: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for group in apply_specs(wanted).values() for s in group]


def restore_from(readings: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    targets = {
        k: (CATALOG[k].spec(), r["value"], r["detail"])
        for k, r in readings.items()
        if r["available"] and not r["noop"]
    }
    return restore_specs(targets)


LOW_NOISE_PLUS = {
    "kernel.numa_balancing": 0,
    "vm.zone_reclaim_mode": 0,
    "thp.enabled": "madvise",
    "thp.defrag": "madvise",
    "cpu.governor": "performance",
    "cpu.turbo": "off",
    "kernel.perf_event_paranoid": 1,
    "vm.dirty": {"vm.dirty_bytes": 268435456},
    "vm.dirty_background": {"vm.dirty_background_ratio": 5},
    "kernel.io_uring_disabled": 0,
    "service.haveged": "stopped",
    "service.rngd": "running",
}


def test_pure_parsers() -> None:
    assert K.kernel_version("6.18.44-fc-v669") == (6, 18, 44)
    assert K.kernel_version("5.18") == (5, 18) and K.kernel_version("5.4.0") < (5, 18)
    assert (
        K.normalise("0\n") == 0
        and K.normalise("-1\n") == -1
        and K.normalise("4096\t131072 6291456\n") == "4096 131072 6291456"
    )
    assert K.parse_bracketed("always [madvise] never\n") == ("madvise", ["always", "madvise", "never"])
    assert K.parse_limits("# c\n* soft memlock unlimited\n", "memlock") == "unlimited"
    assert K.parse_limits("* soft nofile 1024\n", "memlock") is None


def test_read_reports_values_and_absent_knobs() -> None:
    k = machine()
    del k.files[NO_TURBO]
    res = K.do_read(
        k,
        flat(
            {
                "cpu.turbo": "off",
                "cpu.governor": "performance",
                "vm.dirty": {"vm.dirty_ratio": 10},
                "net.core.somaxconn": 8192,
            }
        ),
    )
    assert res["cpu.turbo"]["available"] is False and "no_turbo" in res["cpu.turbo"]["reason"]
    assert res["net.core.somaxconn"]["available"] is False
    assert res["cpu.governor"]["value"] == {"cpu0": "powersave", "cpu1": "schedutil"}
    assert res["cpu.governor"]["would_change"] is True and res["cpu.governor"]["error"] is None
    assert res["vm.dirty"]["value"] == {"vm.dirty_ratio": 20}
    assert k.writes == []


def test_read_flags_values_the_host_cannot_take() -> None:
    k = machine()
    res = K.do_read(k, flat({"cpu.governor": "ondemand", "kernel.io_uring_group": "bench"}))
    assert "not offered" in res["cpu.governor"]["error"]
    assert "does not exist" in res["kernel.io_uring_group"]["error"]
    k.groups["bench"] = 1234
    res = K.do_read(k, flat({"kernel.io_uring_group": "bench"}))
    assert res["kernel.io_uring_group"]["wanted"] == 1234 and res["kernel.io_uring_group"]["error"] is None


def test_apply_then_restore_puts_back_exactly_what_was_there() -> None:
    k = machine()
    before = dict(k.files)
    units = dict(k.units)
    specs = flat(LOW_NOISE_PLUS)
    readings = K.do_read(k, specs)
    results, error = K.do_apply(k, specs)
    assert error is None, error
    assert k.files[NO_TURBO] == "1\n"  # turbo off, although the governor write reset it
    assert k.files[sysctl("vm.dirty_bytes")] == "268435456\n" and k.files[sysctl("vm.dirty_ratio")] == "0\n"
    assert k.units == {"haveged.service": False, "rngd.service": True}
    assert all(r["status"] in ("changed", "ok") for r in results.values())
    assert results["cpu.governor"]["after"] == {"cpu0": "performance", "cpu1": "performance"}

    k.writes.clear()
    restored, problems = K.do_restore(k, restore_from(readings))
    assert problems == []
    assert k.files == before
    assert k.units == units
    # the inactive member of a pair is never written (dirty_bytes=0 would be EINVAL)
    written = [p for p, _ in k.writes]
    assert sysctl("vm.dirty_bytes") not in written and sysctl("vm.dirty_background_ratio") not in written
    assert sysctl("vm.dirty_ratio") in written and sysctl("vm.dirty_background_bytes") in written
    # governor restored per CPU, before turbo
    assert written.index("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor") < written.index(NO_TURBO)
    assert all(r["status"] in ("restored", "ok") for r in restored.values())


def test_second_apply_changes_nothing() -> None:
    k = machine()
    specs = flat(LOW_NOISE_PLUS)
    K.do_apply(k, specs)
    k.writes.clear()
    results, error = K.do_apply(k, specs)
    assert error is None and k.writes == []
    assert {r["status"] for r in results.values()} == {"ok"}


def test_check_mode_writes_nothing() -> None:
    k = machine()
    results, error = K.do_apply(k, flat(LOW_NOISE_PLUS), check=True)
    assert error is None and k.writes == []
    assert results["vm.zone_reclaim_mode"]["status"] == "changed"
    _, problems = K.do_restore(k, restore_from(K.do_read(machine(), flat(LOW_NOISE_PLUS))), check=True)
    assert k.writes == [] and problems == []


def test_restore_order_matters_and_a_naive_reverse_would_fail() -> None:
    """With turbo restored before the governor, the governor write would undo no_turbo=1."""
    k = machine()
    specs = flat({"cpu.governor": "performance", "cpu.turbo": "on"})
    readings = K.do_read(k, specs)
    K.do_apply(k, specs)
    naive = list(reversed(restore_from(readings)))  # turbo first
    assert [s["id"] for s in naive] == ["cpu.turbo", "cpu.governor"]
    k2 = machine()
    K.do_apply(k2, specs)
    k2.writes.clear()
    for spec in naive:  # what a plain reverse would do, without the read-back retry
        K.write_knob(k2, spec, spec["target"], spec["target_detail"])
    assert k2.files[NO_TURBO] == "0\n"  # wrong: turbo is back on
    _, problems = K.do_restore(k, restore_from(readings))
    assert problems == [] and k.files[NO_TURBO] == "1\n"


def test_legacy_random_sysctls_are_noops_on_new_kernels_and_written_on_old_ones() -> None:
    wanted = {"kernel.random.write_wakeup_threshold": 1024, "kernel.random.urandom_min_reseed_secs": 30}
    k = machine()
    results, error = K.do_apply(k, flat(wanted))
    assert error is None and k.writes == []
    assert {r["status"] for r in results.values()} == {"no-op"}
    assert "5.18" in results["kernel.random.write_wakeup_threshold"]["reason"]
    old = machine()
    old.release = "5.4.0-150-generic"
    results, error = K.do_apply(old, flat(wanted))
    assert error is None and {r["status"] for r in results.values()} == {"changed"}


def test_services_without_systemd_are_not_available() -> None:
    k = machine()
    k.systemd = False
    results, error = K.do_apply(k, flat({"service.rngd": "running"}))
    assert error is None and results["service.rngd"]["status"] == "not available"
    assert "systemd is not running" in results["service.rngd"]["reason"]
    k.systemd = True
    k.units = {}
    results, _ = K.do_apply(k, flat({"service.rngd": "running"}))
    assert results["service.rngd"]["status"] == "not available"


def test_limits_file_is_created_and_removed() -> None:
    k = machine()
    spec = flat({"limits.memlock": "unlimited"})
    readings = K.do_read(k, spec)
    assert readings["limits.memlock"]["value"] is None
    K.do_apply(k, spec)
    text = k.files[CATALOG["limits.memlock"].spec()["path"]]
    assert "* hard memlock unlimited" in text and "root soft memlock unlimited" in text
    _, problems = K.do_restore(k, restore_from(readings))
    assert problems == [] and CATALOG["limits.memlock"].spec()["path"] not in k.files


def test_limits_file_that_existed_is_restored_verbatim() -> None:
    path = CATALOG["limits.memlock"].spec()["path"]
    k = machine(**{path: "# someone's\n@bench hard memlock 65536\n"})
    spec = flat({"limits.memlock": "unlimited"})
    readings = K.do_read(k, spec)
    assert readings["limits.memlock"]["value"] == 65536
    K.do_apply(k, spec)
    K.do_restore(k, restore_from(readings))
    assert k.files[path] == "# someone's\n@bench hard memlock 65536\n"


def test_failed_write_stops_and_names_the_knob() -> None:
    k = machine()
    k.refuse.add(sysctl("kernel.perf_event_paranoid"))
    results, error = K.do_apply(k, flat({"vm.zone_reclaim_mode": 0, "kernel.perf_event_paranoid": 1}))
    assert error is not None and "kernel.perf_event_paranoid" in error and "Permission denied" in error
    assert results["vm.zone_reclaim_mode"]["status"] == "changed"


def test_value_that_does_not_stick_is_an_error() -> None:
    class Stubborn(FakeKernel):
        def write(self, path: str, text: str) -> None:
            if path.endswith("transparent_hugepage/enabled"):
                return  # a boot parameter wins
            super().write(path, text)

    k = machine()
    s = Stubborn(k.files)
    _, error = K.do_apply(s, flat({"thp.enabled": "never"}))
    assert error is not None and "reads back" in error


def test_restore_reports_problems_instead_of_raising() -> None:
    k = machine()
    specs = flat({"vm.zone_reclaim_mode": 0, "kernel.perf_event_paranoid": 1})
    readings = K.do_read(k, specs)
    K.do_apply(k, specs)
    k.refuse.add(sysctl("vm.zone_reclaim_mode"))
    results, problems = K.do_restore(k, restore_from(readings))
    assert len(problems) == 1 and "vm.zone_reclaim_mode" in problems[0]
    assert results["kernel.perf_event_paranoid"]["status"] == "restored"
    assert k.files[sysctl("kernel.perf_event_paranoid")] == "2\n"


def test_pause_after_first_write_only() -> None:
    k = machine()
    K.do_apply(k, flat(LOW_NOISE_PLUS), pause=7.5)
    assert k.slept == [7.5]
