"""The knobs labctl knows how to tune: kind, where they live, allowed values, order.

A profile may only name knobs from this catalog, so every value that reaches a host
has been checked here first (an unknown knob or a value outside the allowed set is
an :class:`~labctl.errors.InputError`, exit 2, before anything runs).

Each knob has a *kind*; the Ansible module ``roles/knobs/library/labctl_knobs.py``
implements read / write / verify / restore once per kind:

- ``sysctl``: a file under ``/proc/sys`` (written directly, never via sysctl.conf).
- ``sysfs_bracket``: a sysfs file whose selected value is the one in ``[brackets]`` (THP).
- ``cpufreq_governor``: ``scaling_governor`` of every CPU, recorded per CPU.
- ``cpu_turbo``: intel_pstate ``no_turbo`` or cpufreq ``boost`` (whichever the host has).
- ``service``: a systemd unit's running state (start/stop only; never enable/disable).
- ``sysctl_pair``: the exclusive ``vm.dirty_*_bytes`` / ``vm.dirty_*_ratio`` pairs:
  writing one zeroes the other, so the pair is one knob whose value names the active
  member, and restore writes only the member that was active.
- ``limits_file``: a labctl-owned ``/etc/security/limits.d`` file (absent = original).

``rank`` is the apply order; :mod:`labctl.tuning.plan` derives the restore order from
it and from :data:`CONSTRAINTS`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

GROUPS = ("entropy", "numa", "io_uring", "cpu", "net")
"""Knob groups in apply order; each is applied by the role ``tune_<group>``."""

Validator = Callable[[Any], Any]


class KnobValueError(ValueError):
    """A value outside a knob's allowed set."""


def _int_range(lo: int, hi: int) -> Validator:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise KnobValueError(f"must be an integer in {lo}..{hi}, got {value!r}")
        try:
            n = int(value)
        except ValueError:
            raise KnobValueError(f"must be an integer in {lo}..{hi}, got {value!r}") from None
        if not lo <= n <= hi:
            raise KnobValueError(f"must be an integer in {lo}..{hi}, got {n}")
        return n

    check.__doc__ = f"integer {lo}..{hi}"
    return check


def _choices(*allowed: str) -> Validator:
    def check(value: Any) -> str:
        # YAML 1.1 reads a bare on/off/yes/no as a boolean
        if isinstance(value, bool) and {"on", "off"} <= set(allowed):
            value = "on" if value else "off"
        if not isinstance(value, str) or value not in allowed:
            raise KnobValueError(f"must be one of {', '.join(allowed)}; got {value!r}")
        return value

    check.__doc__ = "one of " + ", ".join(allowed)
    return check


_GROUP_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


def _gid_or_group(value: Any) -> int | str:
    """A numeric gid (-1: none) or a group name, resolved to its gid on each host."""
    if isinstance(value, bool):
        raise KnobValueError(f"must be a gid (-1 for none) or a group name, got {value!r}")
    if isinstance(value, int) or (isinstance(value, str) and re.fullmatch(r"-?\d+", value)):
        n = int(value)
        if n < -1 or n > 2**32 - 2:
            raise KnobValueError(f"gid must be -1 (none) or 0..4294967294, got {n}")
        return n
    if isinstance(value, str) and _GROUP_NAME.match(value):
        return value
    raise KnobValueError(f"must be a gid (-1 for none) or a group name, got {value!r}")


def _memlock(value: Any) -> int | str:
    if value == "unlimited":
        return "unlimited"
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    raise KnobValueError(f"must be 'unlimited' or a positive number of KiB, got {value!r}")


@dataclass(frozen=True)
class KnobDef:
    """One tunable: how a profile names it, what it accepts, how the module reaches it."""

    id: str
    kind: str
    group: str
    rank: int
    help: str
    validate: Validator
    params: dict[str, Any] = field(default_factory=dict)
    noop_since: str | None = None
    """Kernel release from which writes are accepted but ignored: read, reported, never written."""

    def spec(self) -> dict[str, Any]:
        """What the host-side module needs to read/write this knob (no controller state)."""
        out: dict[str, Any] = {"id": self.id, "kind": self.kind, "group": self.group, "rank": self.rank}
        out.update(self.params)
        if self.noop_since:
            out["noop_since"] = self.noop_since
        return out


def _sysctl(name: str, group: str, rank: int, help: str, validate: Validator, **extra: Any) -> KnobDef:
    noop = extra.pop("noop_since", None)
    return KnobDef(name, "sysctl", group, rank, help, validate, {"name": name, **extra}, noop)


def _service(id: str, units: list[str], rank: int, group: str, help: str) -> KnobDef:
    return KnobDef(id, "service", group, rank, help, _choices("running", "stopped"), {"units": units})


_THP = "/sys/kernel/mm/transparent_hugepage"
_DIRTY_BYTES_MIN = 8192  # the kernel refuses fewer than two pages (EINVAL)

CATALOG: dict[str, KnobDef] = {
    k.id: k
    for k in (
        # entropy
        _service(
            "service.rngd",
            ["rngd.service", "rng-tools.service", "rng-tools-debian.service"],
            10,
            "entropy",
            "rngd (rng-tools) feeding the kernel's entropy pool",
        ),
        _service("service.haveged", ["haveged.service"], 11, "entropy", "haveged entropy daemon"),
        _sysctl(
            "kernel.random.write_wakeup_threshold",
            "entropy",
            12,
            "legacy entropy wake-up threshold",
            _int_range(0, 1 << 20),
            noop_since="5.18",
        ),
        _sysctl(
            "kernel.random.urandom_min_reseed_secs",
            "entropy",
            13,
            "legacy urandom reseed interval",
            _int_range(0, 2**31 - 1),
            noop_since="5.18",
        ),
        # numa / memory
        _sysctl(
            "kernel.numa_balancing",
            "numa",
            20,
            "automatic NUMA page migration (2 = tiering)",
            _int_range(0, 3),
        ),
        _sysctl(
            "vm.zone_reclaim_mode", "numa", 21, "reclaim on the local node first (bitmask)", _int_range(0, 7)
        ),
        KnobDef(
            "thp.enabled",
            "sysfs_bracket",
            "numa",
            22,
            "transparent huge pages",
            _choices("always", "madvise", "never"),
            {"path": f"{_THP}/enabled"},
        ),
        KnobDef(
            "thp.defrag",
            "sysfs_bracket",
            "numa",
            23,
            "THP defragmentation on fault",
            _choices("always", "defer", "defer+madvise", "madvise", "never"),
            {"path": f"{_THP}/defrag"},
        ),
        _sysctl("vm.swappiness", "numa", 24, "swap tendency", _int_range(0, 200)),
        KnobDef(
            "vm.dirty",
            "sysctl_pair",
            "numa",
            25,
            "dirty page limit (vm.dirty_bytes | vm.dirty_ratio)",
            lambda v: v,
            {"members": ["vm.dirty_bytes", "vm.dirty_ratio"]},
        ),
        KnobDef(
            "vm.dirty_background",
            "sysctl_pair",
            "numa",
            26,
            "background writeback threshold (vm.dirty_background_bytes | vm.dirty_background_ratio)",
            lambda v: v,
            {"members": ["vm.dirty_background_bytes", "vm.dirty_background_ratio"]},
        ),
        # io_uring
        _sysctl(
            "kernel.io_uring_group",
            "io_uring",
            30,
            "group allowed io_uring when io_uring_disabled=1",
            _gid_or_group,
            resolve="group",
        ),
        _sysctl(
            "kernel.io_uring_disabled",
            "io_uring",
            31,
            "0 allowed, 1 privileged or group, 2 nobody",
            _int_range(0, 2),
        ),
        KnobDef(
            "limits.memlock",
            "limits_file",
            "io_uring",
            32,
            "RLIMIT_MEMLOCK for new sessions (labctl-owned limits.d file; KiB or 'unlimited')",
            _memlock,
            {
                "path": "/etc/security/limits.d/90-labctl-memlock.conf",
                "item": "memlock",
                "domains": ["*", "root"],
            },
        ),
        # cpu / noise
        KnobDef(
            "cpu.governor",
            "cpufreq_governor",
            "cpu",
            40,
            "cpufreq scaling governor of every CPU",
            _choices("performance", "powersave", "schedutil", "ondemand", "conservative", "userspace"),
        ),
        KnobDef(
            "cpu.turbo",
            "cpu_turbo",
            "cpu",
            41,
            "turbo / boost (intel_pstate no_turbo or cpufreq boost)",
            _choices("on", "off"),
        ),
        _sysctl(
            "kernel.perf_event_paranoid",
            "cpu",
            42,
            "perf access (-1 everything, 2 user only)",
            _int_range(-1, 4),
        ),
        _sysctl("kernel.randomize_va_space", "cpu", 43, "ASLR (keep 2)", _int_range(0, 2)),
        _sysctl(
            "kernel.nmi_watchdog", "cpu", 44, "NMI watchdog (periodic perf interrupts)", _int_range(0, 1)
        ),
        _service("service.irqbalance", ["irqbalance.service"], 45, "cpu", "irqbalance daemon"),
        # net
        _sysctl(
            "net.core.somaxconn",
            "net",
            50,
            "accept backlog cap (per network namespace)",
            _int_range(1, 2**31 - 1),
        ),
        _sysctl(
            "net.ipv4.tcp_migrate_req",
            "net",
            51,
            "migrate pending connections between SO_REUSEPORT listeners",
            _int_range(0, 1),
        ),
    )
}

# profile key -> (pair knob id, validator); writing a member makes it the active one
PAIR_MEMBERS: dict[str, tuple[str, Validator]] = {
    "vm.dirty_bytes": ("vm.dirty", _int_range(_DIRTY_BYTES_MIN, 2**63 - 1)),
    "vm.dirty_ratio": ("vm.dirty", _int_range(1, 100)),
    "vm.dirty_background_bytes": ("vm.dirty_background", _int_range(1, 2**63 - 1)),
    "vm.dirty_background_ratio": ("vm.dirty_background", _int_range(1, 100)),
}


@dataclass(frozen=True)
class Constraint:
    """``first`` must be written before ``then``: writing ``first`` perturbs ``then``.

    Such a constraint holds when applying *and* when restoring: e.g. changing the
    cpufreq governor resets intel_pstate's no_turbo, so the governor always goes first
    and turbo is written afterwards in both directions.
    """

    first: str
    then: str
    why: str


CONSTRAINTS: tuple[Constraint, ...] = (
    Constraint("cpu.governor", "cpu.turbo", "changing the governor resets intel_pstate no_turbo"),
)


def knob_for_key(key: str, value: Any) -> tuple[str, Any]:
    """Map a profile key and value to ``(knob id, normalised value)``.

    Raises KeyError for an unknown key, :class:`KnobValueError` for a bad value.
    """
    if key in PAIR_MEMBERS:
        knob_id, check = PAIR_MEMBERS[key]
        return knob_id, {key: check(value)}
    knob = CATALOG.get(key)
    if knob is None or knob.kind == "sysctl_pair":
        raise KeyError(key)
    return knob.id, knob.validate(value)


def profile_keys() -> list[str]:
    """Every key a profile may use."""
    return sorted([k for k, d in CATALOG.items() if d.kind != "sysctl_pair"] + list(PAIR_MEMBERS))
