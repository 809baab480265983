"""Parsing of host facts (the Ansible module's pure functions)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location(
    "labctl_facts", ROOT / "roles/host_facts/library/labctl_facts.py"
)
assert spec and spec.loader
facts = importlib.util.module_from_spec(spec)
spec.loader.exec_module(facts)

DUAL_SOCKET = "".join(
    f"processor\t: {i}\nmodel name\t: Intel(R) Xeon(R) Gold 6248\nphysical id\t: {i // 8 % 2}\n"
    f"core id\t: {i % 4}\nflags\t: fpu avx2\n\n"
    for i in range(16)
)


def test_cpulist() -> None:
    assert facts.parse_cpulist("0-3,8,10-11\n") == [0, 1, 2, 3, 8, 10, 11]
    assert facts.parse_cpulist("") == []


def test_bracketed_thp() -> None:
    assert facts.parse_bracketed("always [madvise] never\n") == "madvise"
    assert facts.parse_bracketed("[always] defer defer+madvise madvise never") == "always"
    assert facts.parse_bracketed(None) is None


def test_cpuinfo_dual_socket_with_smt() -> None:
    f = facts.parse_cpuinfo(DUAL_SOCKET)
    assert f["sockets"] == 2 and f["logical_cpus"] == 16
    assert f["cores_per_socket"] == 4 and f["threads_per_core"] == 2
    assert f["cpu_model"].startswith("Intel")


def test_cpuinfo_vm_without_physical_id() -> None:
    f = facts.parse_cpuinfo(
        "processor\t: 0\nmodel name\t: AMD EPYC\n\nprocessor\t: 1\nmodel name\t: AMD EPYC\n"
    )
    assert f["sockets"] == 1 and f["logical_cpus"] == 2 and f["cores_per_socket"] == 2


def test_node_meminfo() -> None:
    assert facts.parse_node_meminfo("Node 0 MemTotal:       16318228 kB\n") == 16318228 * 1024


def test_versions() -> None:
    assert facts.parse_version("go", "go version go1.26.8 linux/amd64") == "1.26.8"
    assert facts.parse_version("rustc", "rustc 1.95.0 (59807616e 2026-04-14)") == "1.95.0"
    assert facts.parse_version("g++", "g++ (Debian 12.2.0-14+deb12u1) 12.2.0\nCopyright") == "12.2.0"
    assert facts.parse_version("python3", "Python 3.11.7") == "3.11.7"
    assert facts.parse_version("go", "") is None
