"""Profile validation and composition (no hosts)."""

from __future__ import annotations

from pathlib import Path

import pytest

from labctl.errors import InputError
from labctl.tuning.profiles import available_profiles, load_profile


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_every_shipped_profile_loads() -> None:
    names = available_profiles()
    assert {"low-noise", "io-uring", "numa-strict", "entropy-off", "entropy-rngd", "entropy-haveged"} <= set(
        names
    )
    for name in names:
        assert load_profile(name).knobs, name


def test_low_noise_values() -> None:
    p = load_profile("low-noise")
    assert p.knobs == {
        "kernel.numa_balancing": 0,
        "vm.zone_reclaim_mode": 0,
        "thp.enabled": "madvise",
        "thp.defrag": "madvise",
        "cpu.governor": "performance",
        "cpu.turbo": "off",
        "kernel.perf_event_paranoid": 1,
    }


def test_include_composes_and_later_values_win() -> None:
    p = load_profile("numa-strict")
    assert p.knobs["thp.enabled"] == "never" and p.knobs["thp.defrag"] == "never"
    assert p.knobs["cpu.governor"] == "performance"  # from the included low-noise
    assert p.sources["thp.enabled"].endswith("numa-strict.yaml")
    assert p.sources["cpu.governor"].endswith("low-noise.yaml")
    assert [Path(f).stem for f in p.files] == ["low-noise", "numa-strict"]


def test_entropy_variants() -> None:
    assert load_profile("entropy-rngd").knobs["service.rngd"] == "running"
    assert load_profile("entropy-rngd").knobs["service.haveged"] == "stopped"
    assert load_profile("entropy-haveged").knobs["service.haveged"] == "running"
    assert load_profile("entropy-off").knobs["kernel.random.write_wakeup_threshold"] == 1024


def test_user_profile_by_path_includes_a_shipped_one(tmp_path: Path) -> None:
    p = write(
        tmp_path, "mine.yaml", "include: [low-noise]\nknobs:\n  vm.zone_reclaim_mode: 1\n  cpu.turbo: on\n"
    )
    prof = load_profile(str(p))
    assert prof.names == ["mine"]
    assert prof.knobs["vm.zone_reclaim_mode"] == 1
    assert prof.knobs["cpu.turbo"] == "on"  # YAML 1.1 reads a bare `on` as true


def test_several_profiles_compose_in_order() -> None:
    p = load_profile(["numa-strict", "low-noise"])
    assert p.knobs["thp.enabled"] == "madvise"
    assert p.names == ["numa-strict", "low-noise"]


def test_apply_order_of_knobs_follows_the_catalog(tmp_path: Path) -> None:
    p = write(tmp_path, "o.yaml", "knobs:\n  kernel.perf_event_paranoid: 1\n  thp.enabled: never\n")
    assert list(load_profile(str(p)).knobs) == ["thp.enabled", "kernel.perf_event_paranoid"]


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ("knobs: {}\nfoo: 1\n", "foo", "unknown key"),
        ("knobs:\n  kernel.numa_balancin: 0\n", "knobs.kernel.numa_balancin", "unknown knob"),
        ("knobs:\n  thp.enabled: sometimes\n", "knobs.thp.enabled", "one of always, madvise, never"),
        ("knobs:\n  vm.zone_reclaim_mode: 9\n", "knobs.vm.zone_reclaim_mode", "0..7"),
        ("knobs:\n  kernel.numa_balancing: true\n", "knobs.kernel.numa_balancing", "integer"),
        ("knobs:\n  vm.dirty_bytes: 4096\n", "knobs.vm.dirty_bytes", "8192"),
        ("knobs:\n  vm.dirty_bytes: 1000000\n  vm.dirty_ratio: 10\n", "knobs.vm.dirty_ratio", "exclusive"),
        ("knobs:\n  vm.dirty: 10\n", "knobs.vm.dirty", "unknown knob"),
        ("knobs:\n  kernel.io_uring_group: 'Bad Group'\n", "knobs.kernel.io_uring_group", "group name"),
        ("knobs:\n  limits.memlock: -5\n", "knobs.limits.memlock", "unlimited"),
        ("include: low-noise\n", "include", "list"),
        ("- a\n- b\n", None, "mapping"),
        ("knobs: [\n", None, "not valid YAML"),
    ],
)
def test_bad_profiles_name_file_and_key(tmp_path: Path, text: str, key: str | None, words: str) -> None:
    p = write(tmp_path, "bad.yaml", text)
    with pytest.raises(InputError) as exc:
        load_profile(str(p))
    err = exc.value
    assert err.exit_code == 2
    assert err.details["file"] == str(p)
    if key:
        assert err.details["key"] == key
    assert words in err.message


def test_unknown_profile_lists_the_shipped_ones() -> None:
    with pytest.raises(InputError) as exc:
        load_profile("no-such-profile")
    assert "low-noise" in exc.value.message and exc.value.exit_code == 2


def test_include_of_unknown_profile_names_the_including_file(tmp_path: Path) -> None:
    p = write(tmp_path, "a.yaml", "include: [nope]\n")
    with pytest.raises(InputError) as exc:
        load_profile(str(p))
    assert exc.value.details == {"file": str(p), "key": "include"}
    assert "nope" in exc.value.message


def test_include_cycle(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "include: [b]\n")
    write(tmp_path, "b.yaml", "include: [a]\n")
    with pytest.raises(InputError) as exc:
        load_profile(str(tmp_path / "a.yaml"))
    assert "cycle" in exc.value.message


def test_include_prefers_a_sibling_file(tmp_path: Path) -> None:
    write(tmp_path, "low-noise.yaml", "knobs:\n  kernel.numa_balancing: 1\n")
    p = write(tmp_path, "top.yaml", "include: [low-noise]\n")
    assert load_profile(str(p)).knobs == {"kernel.numa_balancing": 1}


def test_value_of_a_pair_member_names_the_active_member(tmp_path: Path) -> None:
    base = write(tmp_path, "base.yaml", "knobs:\n  vm.dirty_ratio: 10\n")
    top = write(tmp_path, "top.yaml", f"include: [{base}]\nknobs:\n  vm.dirty_bytes: 268435456\n")
    assert load_profile(str(top)).knobs == {"vm.dirty": {"vm.dirty_bytes": 268435456}}
