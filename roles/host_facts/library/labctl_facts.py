#!/usr/bin/python
"""Ansible module: read a host's topology and performance-relevant settings.

Returns ``ansible_facts.labctl_host_facts`` and never changes anything. The parse
functions are pure so labctl's unit tests can feed them recorded files.
"""

from __future__ import annotations

import glob
import os
import platform
import re
import shutil
import subprocess

DOCUMENTATION = r"""
module: labctl_facts
short_description: Topology, kernel and toolchain facts for labctl
description: Reads /proc and /sys; changes nothing.
options: {}
"""

TOOL_PATHS = ["/usr/local/go/bin", "/root/.cargo/bin", "/usr/local/bin", "/usr/bin", "/bin"]


def parse_cpulist(text):
    """'0-3,8,10-11' -> [0, 1, 2, 3, 8, 10, 11]."""
    cpus = []
    for part in text.strip().split(","):
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            cpus.extend(range(int(lo), int(hi) + 1))
        else:
            cpus.append(int(part))
    return cpus


def parse_bracketed(text):
    """'always [madvise] never' -> 'madvise' (the selected THP mode)."""
    m = re.search(r"\[([^\]]+)\]", text or "")
    return m.group(1) if m else None


def parse_node_meminfo(text):
    """Total memory in bytes from /sys/devices/system/node/nodeN/meminfo."""
    m = re.search(r"MemTotal:\s+(\d+)\s*kB", text)
    return int(m.group(1)) * 1024 if m else None


def parse_cpuinfo(text):
    """Sockets, cores per socket, threads per core and the CPU model from /proc/cpuinfo."""
    procs = []
    cur = {}
    for line in text.splitlines():
        if not line.strip():
            if cur:
                procs.append(cur)
                cur = {}
            continue
        if ":" in line:
            k, v = line.split(":", 1)
            cur[k.strip()] = v.strip()
    if cur:
        procs.append(cur)
    model = next((p.get("model name") for p in procs if p.get("model name")), None)
    sockets = {p.get("physical id", "0") for p in procs}
    cores = {(p.get("physical id", "0"), p.get("core id", str(i))) for i, p in enumerate(procs)}
    n_sockets = max(1, len(sockets))
    n_cores = max(1, len(cores))
    return {
        "cpu_model": model,
        "logical_cpus": len(procs),
        "sockets": n_sockets,
        "cores_per_socket": n_cores // n_sockets,
        "threads_per_core": max(1, len(procs) // n_cores),
        "flags_avx2": any("avx2" in p.get("flags", "").split() for p in procs[:1]),
    }


def parse_version(tool, text):
    """Pull a dotted version out of a tool's --version output."""
    pats = {
        "go": r"go(\d+\.\d+(?:\.\d+)?)",
        "rustc": r"rustc (\d+\.\d+\.\d+)",
        "cargo": r"cargo (\d+\.\d+\.\d+)",
        "g++": r"(\d+\.\d+\.\d+)\s*$",
        "python3": r"Python (\d+\.\d+\.\d+)",
        "perf": r"perf version (\S+)",
    }
    first = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    m = re.search(pats.get(tool, r"(\d+\.\d+(?:\.\d+)?)"), first)
    return m.group(1) if m else None


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _tool_version(tool):
    path = shutil.which(tool, path=os.pathsep.join([os.environ.get("PATH", "")] + TOOL_PATHS))
    if not path:
        return None, None
    arg = "version" if tool == "go" else "--version"
    try:
        out = subprocess.run([path, arg], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return path, None
    return path, parse_version(tool, out.stdout or out.stderr)


def gather():
    facts = {"kernel": platform.release(), "arch": platform.machine(), "hostname": platform.node()}
    facts.update(parse_cpuinfo(_read("/proc/cpuinfo") or ""))
    facts["cmdline"] = (_read("/proc/cmdline") or "").strip()
    nodes = []
    for d in sorted(glob.glob("/sys/devices/system/node/node[0-9]*"), key=lambda p: int(p.rsplit("node", 1)[1])):
        nodes.append({
            "id": int(d.rsplit("node", 1)[1]),
            "cpus": parse_cpulist(_read(d + "/cpulist") or ""),
            "mem_bytes": parse_node_meminfo(_read(d + "/meminfo") or ""),
        })
    facts["numa_nodes"] = nodes
    mem = re.search(r"MemTotal:\s+(\d+)", _read("/proc/meminfo") or "")
    facts["mem_bytes"] = int(mem.group(1)) * 1024 if mem else None
    facts["thp_enabled"] = parse_bracketed(_read("/sys/kernel/mm/transparent_hugepage/enabled"))
    facts["thp_defrag"] = parse_bracketed(_read("/sys/kernel/mm/transparent_hugepage/defrag"))
    gov = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    facts["governor"] = gov.strip() if gov else None
    iod = _read("/proc/sys/kernel/io_uring_disabled")
    facts["io_uring_disabled"] = int(iod) if iod and iod.strip().isdigit() else None
    nb = _read("/proc/sys/kernel/numa_balancing")
    facts["numa_balancing"] = int(nb) if nb and nb.strip().isdigit() else None
    tools = {}
    for tool in ("go", "rustc", "cargo", "g++", "python3", "perf"):
        path, version = _tool_version(tool)
        if path:
            tools[tool] = {"path": path, "version": version}
    facts["toolchains"] = tools
    return facts


def main():
    from ansible.module_utils.basic import AnsibleModule

    module = AnsibleModule(argument_spec={}, supports_check_mode=True)
    module.exit_json(changed=False, ansible_facts={"labctl_host_facts": gather()})


if __name__ == "__main__":
    main()
