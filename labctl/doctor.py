"""``labctl doctor``: is each host reachable, and fit for experiments? Read-only.

Per host, in parallel threads: TCP reachability and SSH login (paramiko, host keys
checked, every failure named precisely — timeout, refused, no route, unknown host
key, host-key mismatch, authentication), then one probe script that reads the
Python version, privileges (root or passwordless sudo), kernel, topology (sockets,
cores, NUMA nodes), io_uring availability, perf availability and toolchains. The
raw probe output is parsed here with the same functions the ``labctl_facts`` Ansible
module uses, so doctor and provision agree on what a host looks like.

A host *fails* when it cannot be reached or logged into, has no usable Python 3,
or gives neither root nor passwordless sudo. Everything else is a warning.
"""

from __future__ import annotations

import importlib.util
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import cache
from types import ModuleType
from typing import Any, Literal

import paramiko

from labctl.errors import EnvironmentProblem
from labctl.inventory import Host
from labctl.paths import project_root
from labctl.remote import (
    DEFAULT_CONNECT_TIMEOUT,
    ConnectError,
    LocalRunner,
    RemoteError,
    Runner,
    SshRunner,
    fingerprint,
)

Status = Literal["ok", "warn", "fail", "info"]
MIN_PYTHON = (3, 8)  # the oldest target Python ansible-core 2.19 supports
PROBE_TIMEOUT = 90.0
IO_URING_ABSENT = "not present (kernel < 6.6: io_uring allowed unless compiled out)"
IO_URING_MEANING = {0: "enabled for all", 1: "restricted to the io_uring_group", 2: "disabled"}
TOOLS = ("go", "rustc", "cargo", "g++")

# One read-only script per host; sections are separated by marker lines. It takes the
# Python interpreter to check as $1 (quoted by the runner). No input is interpolated.
PROBE_SCRIPT = r"""
sec() { printf '\n@@labctl-doctor %s@@\n' "$1"; }
PATH="$PATH:/usr/local/go/bin:$HOME/.cargo/bin:/root/.cargo/bin:$HOME/go/bin:/usr/local/bin:/usr/sbin:/sbin"
export LC_ALL=C
sec uid; id -u
sec user; id -un
sec sudo
if [ "$(id -u)" = 0 ]; then echo root
elif command -v sudo >/dev/null 2>&1; then sudo -n true 2>&1 && echo ok || echo "rc=$?"
else echo "no sudo"
fi
sec python; command -v "$1" 2>&1 && "$1" --version 2>&1
sec kernel; uname -r
sec cpuinfo; grep -E '^(processor|physical id|core id|model name)[[:space:]]*:|^$' /proc/cpuinfo
sec nodes
for d in /sys/devices/system/node/node[0-9]*; do [ -d "$d" ] && echo "${d##*/node} $(cat "$d/cpulist")"; done
sec io_uring; cat /proc/sys/kernel/io_uring_disabled 2>/dev/null || echo absent
sec perf_paranoid; cat /proc/sys/kernel/perf_event_paranoid 2>/dev/null
sec perf_path; command -v perf
sec perf_sw
if command -v perf >/dev/null 2>&1; then perf stat -x, -e task-clock true 2>&1; echo "rc=$?"; fi
sec perf_hw
if command -v perf >/dev/null 2>&1; then perf stat -x, -e cycles,instructions true 2>&1; echo "rc=$?"; fi
for t in go rustc cargo g++; do
  sec "tool $t"
  p=$(command -v "$t") || continue
  echo "$p"
  case $t in go) "$p" version 2>&1 | head -1 ;; *) "$p" --version 2>&1 | head -1 ;; esac
done
sec end
"""
_SECTION = re.compile(r"^@@labctl-doctor (.+)@@$")


@dataclass
class Check:
    """One check's outcome: ``status`` ok/warn/fail/info, a one-line ``summary``, and details."""

    status: Status
    summary: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class HostReport:
    """Everything doctor learned about one host, in the ``hosts`` shape of the --json contract."""

    name: str
    ok: bool = False
    failed: bool = False
    unreachable: bool = False
    msg: str = ""
    checks: dict[str, Check] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The host's entry in ``labctl doctor --json``."""
        return {
            "ok": self.ok,
            "changed": 0,
            "failed": self.failed,
            "unreachable": self.unreachable,
            "msg": self.msg,
            "checks": {k: asdict(c) for k, c in self.checks.items()},
            "warnings": self.warnings,
            "elapsed_s": round(self.elapsed_s, 2),
        }


@cache
def facts_module() -> ModuleType:
    """The ``labctl_facts`` Ansible module, imported for its pure parse functions."""
    path = project_root() / "roles" / "host_facts" / "library" / "labctl_facts.py"
    spec = importlib.util.spec_from_file_location("labctl_facts_module", path)
    if spec is None or spec.loader is None or not path.is_file():
        raise EnvironmentProblem(f"cannot load {path} (set LABCTL_PROJECT_DIR to the labctl checkout)")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- parsing (pure)


def parse_sections(text: str) -> dict[str, str]:
    """Split probe output into ``{section: body}``."""
    out: dict[str, str] = {}
    name: str | None = None
    lines: list[str] = []
    for line in text.splitlines():
        m = _SECTION.match(line)
        if m:
            if name is not None:
                out[name] = "\n".join(lines).strip("\n")
            name, lines = m.group(1), []
        elif name is not None:
            lines.append(line)
    if name is not None:
        out[name] = "\n".join(lines).strip("\n")
    return out


def python_interpreter(host: Host) -> str:
    """The interpreter Ansible will use on ``host`` (templated values fall back to python3)."""
    value = host.vars.get("ansible_python_interpreter")
    if isinstance(value, str) and value and "{{" not in value and not value.startswith("auto"):
        return value
    return "python3"


def check_python(body: str, interpreter: str) -> Check:
    """Python 3 present and recent enough for Ansible."""
    m = re.search(r"Python (\d+)\.(\d+)\.(\d+)", body)
    if not m:
        return Check(
            "fail", f"no usable Python 3 at {interpreter!r} (Ansible needs one)", {"interpreter": interpreter}
        )
    version = tuple(int(g) for g in m.groups())
    data = {"interpreter": body.splitlines()[0].strip(), "version": ".".join(m.groups())}
    if version[:2] < MIN_PYTHON:
        return Check("fail", f"Python {data['version']} is older than {'.'.join(map(str, MIN_PYTHON))}", data)
    return Check("ok", f"Python {data['version']}", data)


def check_privileges(user: str, sudo: str) -> Check:
    """Root, or passwordless sudo (``sudo -n true``)."""
    sudo = sudo.strip()
    if sudo == "root":
        return Check("ok", "root", {"user": user, "root": True, "sudo": None})
    if sudo.endswith("ok"):
        return Check("ok", f"{user} with passwordless sudo", {"user": user, "root": False, "sudo": True})
    why = "sudo is not installed" if sudo == "no sudo" else f"`sudo -n true` failed: {sudo.splitlines()[0]}"
    return Check(
        "fail",
        f"{user} is not root and has no passwordless sudo ({why})",
        {"user": user, "root": False, "sudo": False},
    )


def parse_nodes(body: str) -> list[dict[str, Any]]:
    """``<id> <cpulist>`` lines → ``[{id, cpus}]``."""
    parse_cpulist = facts_module().parse_cpulist
    nodes = []
    for line in body.splitlines():
        parts = line.split(maxsplit=1)
        if parts and parts[0].isdigit():
            nodes.append({"id": int(parts[0]), "cpus": parse_cpulist(parts[1] if len(parts) > 1 else "")})
    return sorted(nodes, key=lambda n: n["id"])


def check_topology(cpuinfo: str, nodes_body: str, host: Host) -> Check:
    """Sockets, cores and NUMA nodes; a warning when the inventory expects a different count."""
    cpu = facts_module().parse_cpuinfo(cpuinfo)
    nodes = parse_nodes(nodes_body)
    n_nodes = len(nodes) or 1
    data = {
        "cpu_model": cpu.get("cpu_model"),
        "sockets": cpu["sockets"],
        "cores_per_socket": cpu["cores_per_socket"],
        "threads_per_core": cpu["threads_per_core"],
        "logical_cpus": cpu["logical_cpus"],
        "numa_nodes": n_nodes,
        "nodes": nodes,
    }
    summary = (
        f"{cpu['sockets']} socket(s) x {cpu['cores_per_socket']} core(s) x {cpu['threads_per_core']} "
        f"thread(s), {n_nodes} NUMA node(s)"
    )
    problems = []
    for var, actual in (("labctl_numa_nodes", n_nodes), ("labctl_sockets", cpu["sockets"])):
        expected = host.vars.get(var)
        if expected is not None and str(expected) != str(actual):
            problems.append(f"inventory says {var}={expected}, the host has {actual}")
    if problems:
        data["mismatch"] = problems
        return Check("warn", summary + "; " + "; ".join(problems), data)
    return Check("ok", summary, data)


def check_io_uring(body: str) -> Check:
    """``kernel.io_uring_disabled``: 0 enabled, 1 restricted to a group, 2 disabled, absent before 6.6."""
    value = body.strip()
    if not value.isdigit():
        return Check("info", IO_URING_ABSENT, {"io_uring_disabled": None})
    n = int(value)
    meaning = IO_URING_MEANING.get(n, "unknown value")
    status: Status = "warn" if n == 2 else "ok"
    return Check(status, f"io_uring_disabled={n} ({meaning})", {"io_uring_disabled": n, "meaning": meaning})


def _perf_events(body: str) -> dict[str, bool]:
    """perf stat -x, output → ``{event: counted?}``."""
    events: dict[str, bool] = {}
    for line in body.splitlines():
        fields = line.split(",")
        if len(fields) >= 3:
            name = fields[2].split(":")[0]
            if name and not name.startswith("rc="):
                events[name] = not fields[0].startswith("<")
    return events


def check_perf(path: str, sw: str, hw: str, paranoid: str) -> Check:
    """Does ``perf stat`` work, and which hardware events can it count?"""
    data: dict[str, Any] = {"path": path.strip() or None, "perf_event_paranoid": paranoid.strip() or None}
    if not path.strip():
        return Check("warn", "perf not installed (provision installs linux-perf)", data)
    sw_ok = sw.rstrip().endswith("rc=0") and _perf_events(sw).get("task-clock", False)
    hw_events = _perf_events(hw) if hw.rstrip().endswith("rc=0") else {}
    data.update(software_events=sw_ok, hardware_events=hw_events)
    if not sw_ok:
        last = next((ln for ln in reversed(sw.splitlines()) if ln.strip() and not ln.startswith("rc=")), "")
        return Check("warn", f"`perf stat -e task-clock true` fails: {last.strip()}", data)
    counted = sorted(e for e, ok in hw_events.items() if ok)
    missing = sorted(e for e, ok in hw_events.items() if not ok) or (
        ["cycles", "instructions"] if not hw_events else []
    )
    if missing:
        return Check(
            "warn",
            f"software events ok; hardware events not supported: {', '.join(missing)}"
            + (f" (counted: {', '.join(counted)})" if counted else " (a VM without a PMU?)"),
            data,
        )
    return Check("ok", f"software and hardware events ({', '.join(counted)})", data)


def check_toolchains(sections: dict[str, str]) -> Check:
    """go, rustc, cargo and g++ with their versions (missing ones are a warning: provision installs them)."""
    parse_version = facts_module().parse_version
    found: dict[str, dict[str, str | None]] = {}
    for tool in TOOLS:
        lines = sections.get(f"tool {tool}", "").splitlines()
        if lines and lines[0].startswith("/"):
            found[tool] = {"path": lines[0], "version": parse_version(tool, "\n".join(lines[1:]))}
    missing = [t for t in TOOLS if t not in found]
    summary = ", ".join(f"{t} {v['version'] or '?'}" for t, v in found.items()) or "none"
    if missing:
        return Check(
            "warn", f"{summary}; missing: {', '.join(missing)}", {"tools": found, "missing": missing}
        )
    return Check("ok", summary, {"tools": found, "missing": []})


def evaluate(host: Host, sections: dict[str, str]) -> dict[str, Check]:
    """Turn parsed probe output into checks (pure; unit-tested with recorded output)."""
    return {
        "python3": check_python(sections.get("python", ""), python_interpreter(host)),
        "privileges": check_privileges(sections.get("user", "?").strip(), sections.get("sudo", "")),
        "kernel": Check(
            "info", sections.get("kernel", "").strip() or "?", {"release": sections.get("kernel", "")}
        ),
        "topology": check_topology(sections.get("cpuinfo", ""), sections.get("nodes", ""), host),
        "io_uring": check_io_uring(sections.get("io_uring", "")),
        "perf": check_perf(
            sections.get("perf_path", ""),
            sections.get("perf_sw", ""),
            sections.get("perf_hw", ""),
            sections.get("perf_paranoid", ""),
        ),
        "toolchains": check_toolchains(sections),
    }


# ---------------------------------------------------------------- running


def _connect(host: Host, report: HostReport, timeout: float) -> Runner | None:
    if host.is_local:
        report.checks["reachable"] = Check("ok", "local (ansible_connection=local)", {"local": True})
        report.checks["ssh"] = Check("info", "not used", {})
        return LocalRunner(host.name)
    target = {"address": host.address, "port": host.port, "user": host.user}
    try:
        runner = SshRunner.connect(host, timeout)
    except ConnectError as exc:
        report.unreachable = True
        report.msg = exc.reason_text
        fail = Check("fail", exc.reason_text, {**target, "reason": exc.reason, "stage": exc.stage})
        if exc.stage == "tcp":
            report.checks["reachable"] = fail
        else:
            report.checks["reachable"] = Check("ok", f"{host.address}:{host.port} accepts TCP", target)
            report.checks["ssh"] = fail
        return None
    key = runner.server_key
    report.checks["reachable"] = Check("ok", f"{host.address}:{host.port} accepts TCP", target)
    report.checks["ssh"] = Check(
        "ok",
        f"logged in as {host.user or 'current user'}; host key {key.get_name()} {fingerprint(key)} known",
        {**target, "host_key": f"{key.get_name()} {fingerprint(key)}"},
    )
    return runner


def check_host(host: Host, timeout: float = DEFAULT_CONNECT_TIMEOUT) -> HostReport:
    """Run every check on one host; never raises for a host problem (it is in the report)."""
    started = time.monotonic()
    report = HostReport(host.name)
    runner = _connect(host, report, timeout)
    if runner is None:
        report.elapsed_s = time.monotonic() - started
        return report
    try:
        res = runner.run(["sh", "-c", PROBE_SCRIPT, "labctl-doctor", python_interpreter(host)], PROBE_TIMEOUT)
        sections = parse_sections(res.stdout)
        if "end" not in sections:
            raise RemoteError(
                f"the probe script did not complete (rc {res.rc}): {res.stderr.strip()[-300:]}",
                host=host.name,
            )
        report.checks.update(evaluate(host, sections))
    except RemoteError as exc:
        report.failed = True
        report.msg = f"probe failed: {exc.reason_text}"
    except (paramiko.SSHException, OSError, EOFError) as exc:
        report.failed = True
        report.msg = f"probe failed: connection broke off: {exc or type(exc).__name__}"
    finally:
        runner.close()
    failures = [f"{k}: {c.summary}" for k, c in report.checks.items() if c.status == "fail"]
    report.warnings = [f"{k}: {c.summary}" for k, c in report.checks.items() if c.status == "warn"]
    if failures:
        report.failed = True
        report.msg = "; ".join(failures)
    report.ok = not (report.failed or report.unreachable)
    if report.ok:
        report.msg = "ok" + (f" ({len(report.warnings)} warning(s))" if report.warnings else "")
    report.elapsed_s = time.monotonic() - started
    return report


def run_doctor(
    hosts: list[Host], *, timeout: float = DEFAULT_CONNECT_TIMEOUT, workers: int = 16
) -> dict[str, HostReport]:
    """Check ``hosts`` in parallel threads; reports in the order of ``hosts``."""
    if not hosts:
        return {}
    facts_module()  # fail early (and once) if the parse functions cannot be loaded
    with ThreadPoolExecutor(
        max_workers=max(1, min(workers, len(hosts))), thread_name_prefix="doctor"
    ) as pool:
        reports = list(pool.map(lambda h: check_host(h, timeout), hosts))
    return {r.name: r for r in reports}
