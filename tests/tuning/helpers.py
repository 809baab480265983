"""Shared helpers for the tuning tests: the host-side modules, a simulated kernel, real knob reads."""

from __future__ import annotations

import errno
import fnmatch
import importlib.util
import re
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def load_module(rel: str, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / rel)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


knobs_mod = load_module("roles/knobs/library/labctl_knobs.py", "labctl_knobs")
cleanup_mod = load_module("roles/teardown/library/labctl_cleanup.py", "labctl_cleanup")

NO_TURBO = "/sys/devices/system/cpu/intel_pstate/no_turbo"


class FakeKernel(knobs_mod.System):  # type: ignore[name-defined]
    """A kernel with the quirks labctl must respect.

    - writing any scaling_governor resets intel_pstate/no_turbo to 0 (turbo on);
    - vm.dirty_bytes / vm.dirty_ratio are exclusive: writing one zeroes the other,
      and writing 0 to dirty_bytes is EINVAL;
    - sysfs bracket files select the written word;
    - systemd units start and stop through ``systemctl``.
    """

    def __init__(
        self,
        files: dict[str, str],
        release: str = "6.18.0",
        *,
        units: dict[str, bool] | None = None,
        systemd: bool = True,
        groups: dict[str, int] | None = None,
        refuse: set[str] | None = None,
    ):
        self.files = dict(files)
        self.release = release
        self.units = dict(units or {})
        self.systemd = systemd
        self.groups = dict(groups or {})
        self.refuse = set(refuse or ())
        self.writes: list[tuple[str, str]] = []
        self.slept: list[float] = []
        self.dirs = {"/etc/security/limits.d"}

    # --- System interface
    def read(self, path: str) -> str | None:
        return self.files.get(path)

    def write(self, path: str, text: str) -> None:
        if path not in self.files:
            raise FileNotFoundError(errno.ENOENT, "No such file", path)
        value = text.strip()
        if path in self.refuse:
            raise PermissionError(errno.EACCES, "Permission denied", path)
        self.writes.append((path, value))
        if path.endswith("/dirty_bytes") or path.endswith("/dirty_background_bytes"):
            if value == "0":
                raise OSError(errno.EINVAL, "Invalid argument", path)
            self.files[path] = value + "\n"
            self.files[path.replace("_bytes", "_ratio")] = "0\n"
            return
        if path.endswith("/dirty_ratio") or path.endswith("/dirty_background_ratio"):
            self.files[path] = value + "\n"
            self.files[path.replace("_ratio", "_bytes")] = "0\n"
            return
        if path.endswith("/scaling_governor"):
            self.files[path] = value + "\n"
            if NO_TURBO in self.files:
                self.files[NO_TURBO] = "0\n"
            return
        old = self.files[path]
        if "[" in old:
            words = [w.strip("[]") for w in old.split()]
            if value not in words:
                raise OSError(errno.EINVAL, "Invalid argument", path)
            self.files[path] = " ".join(f"[{w}]" if w == value else w for w in words) + "\n"
            return
        self.files[path] = value + "\n"

    def write_file(self, path: str, text: str) -> None:
        self.writes.append((path, text))
        self.files[path] = text

    def remove(self, path: str) -> None:
        self.writes.append((path, "<removed>"))
        self.files.pop(path, None)

    def exists(self, path: str) -> bool:
        if path == "/run/systemd/system":
            return self.systemd
        return path in self.files or path in self.dirs or any(p.startswith(path + "/") for p in self.files)

    def writable(self, path: str) -> bool:
        return True

    def glob(self, pattern: str) -> list[str]:
        return [p for p in self.files if fnmatch.fnmatch(p, pattern)]

    def run(self, argv: list[str]) -> tuple[int, str, str]:
        assert argv[0] == "systemctl"
        unit = argv[2]
        if argv[1] == "show":
            if unit not in self.units:
                return 0, "LoadState=not-found\nActiveState=inactive\n", ""
            return 0, f"LoadState=loaded\nActiveState={'active' if self.units[unit] else 'inactive'}\n", ""
        self.writes.append((f"systemctl {argv[1]}", unit))
        self.units[unit] = argv[1] == "start"
        return 0, "", ""

    def kernel_release(self) -> str:
        return self.release

    def gid_of(self, name: str) -> int | None:
        return self.groups.get(name)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def sysctl(name: str) -> str:
    return "/proc/sys/" + name.replace(".", "/")


def machine(**overrides: str) -> FakeKernel:
    """A two-CPU host with intel_pstate, THP, the dirty pairs and io_uring sysctls."""
    files = {
        sysctl("kernel.numa_balancing"): "1\n",
        sysctl("vm.zone_reclaim_mode"): "1\n",
        sysctl("kernel.perf_event_paranoid"): "2\n",
        sysctl("kernel.io_uring_disabled"): "2\n",
        sysctl("kernel.io_uring_group"): "-1\n",
        sysctl("vm.dirty_bytes"): "0\n",
        sysctl("vm.dirty_ratio"): "20\n",
        sysctl("vm.dirty_background_bytes"): "67108864\n",
        sysctl("vm.dirty_background_ratio"): "0\n",
        sysctl("kernel.random.write_wakeup_threshold"): "896\n",
        sysctl("kernel.random.urandom_min_reseed_secs"): "60\n",
        "/sys/kernel/mm/transparent_hugepage/enabled": "[always] madvise never\n",
        "/sys/kernel/mm/transparent_hugepage/defrag": "always defer [defer+madvise] madvise never\n",
        NO_TURBO: "1\n",
    }
    for cpu in (0, 1):
        base = f"/sys/devices/system/cpu/cpu{cpu}/cpufreq"
        files[f"{base}/scaling_governor"] = ("powersave" if cpu == 0 else "schedutil") + "\n"
        files[f"{base}/scaling_available_governors"] = "performance powersave schedutil\n"
    files.update(overrides)
    return FakeKernel(files, units={"haveged.service": True, "rngd.service": False})


def read_real(path: str) -> str | None:
    """A file's content on this machine, None when absent."""
    try:
        return Path(path).read_text()
    except OSError:
        return None


def bracketed(text: str | None) -> str | None:
    m = re.search(r"\[([^\]]+)\]", text or "")
    return m.group(1) if m else None


def real_snapshot() -> dict[str, Any]:
    """Every catalog knob as this machine has it now (absent knobs omitted)."""
    from labctl.tuning.catalog import CATALOG

    out: dict[str, Any] = {}
    for knob in CATALOG.values():
        spec = knob.spec()
        kind = spec["kind"]
        if kind == "sysctl":
            text = read_real(sysctl(spec["name"]))
            if text is not None:
                out[knob.id] = " ".join(text.split())
        elif kind == "sysctl_pair":
            for m in spec["members"]:
                text = read_real(sysctl(m))
                if text is not None:
                    out[m] = text.strip()
        elif kind == "sysfs_bracket":
            text = read_real(spec["path"])
            if text is not None:
                out[knob.id] = bracketed(text)
        elif kind == "limits_file":
            out[knob.id] = read_real(spec["path"])
    for gov in sorted(Path("/sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq/scaling_governor")):
        out[str(gov)] = gov.read_text().strip()
    for path in ("/sys/devices/system/cpu/intel_pstate/no_turbo", "/sys/devices/system/cpu/cpufreq/boost"):
        text = read_real(path)
        if text is not None:
            out[path] = text.strip()
    return out
