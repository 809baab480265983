"""The teardown role's cleanup module: ownership checks, process stopping, file removal."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.tuning.helpers import cleanup_mod

C = cleanup_mod


def started(argv: list[str]) -> subprocess.Popen[bytes]:
    """Start a process and wait until it has exec'd (its cmdline is its own)."""
    p = subprocess.Popen(argv)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if Path(f"/proc/{p.pid}/cmdline").read_bytes().startswith(argv[0].encode() + b"\0"):
            return p
        time.sleep(0.01)
    raise AssertionError(f"{argv} did not start")


def test_owned_dir_problem() -> None:
    assert C.owned_dir_problem("/var/lib/labctl") is None
    assert C.owned_dir_problem("/srv/lab/labctl-riskd") is None
    for bad in ("/", "/var/lib", "/etc", "relative/labctl", "/labctl", "/var/lib/app", "", None):
        assert C.owned_dir_problem(bad) is not None, bad


def test_owned_dir_through_a_symlink_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.mkdir()
    link = tmp_path / "labctl"
    link.symlink_to(target)
    assert "symlink" in C.owned_dir_problem(str(link))


def test_process_matches() -> None:
    assert C.process_matches(
        b"/var/lib/labctl/bin/riskd-go\0--listen\0:8080\0", "/var/lib/labctl/bin/riskd-go"
    )
    assert not C.process_matches(b"/usr/bin/python3\0x\0", "/var/lib/labctl/bin/riskd-go")
    assert not C.process_matches(b"/var/lib/labctl/bin/riskd-gox\0", "/var/lib/labctl/bin/riskd-go")
    assert not C.process_matches(b"", "x") and not C.process_matches(None, "x")


def test_stops_a_live_process_and_leaves_a_reused_pid_alone(tmp_path: Path) -> None:
    # a child that ignores SIGTERM, so the SIGKILL path runs too
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    stubborn = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert stubborn.stdout is not None and stubborn.stdout.readline() == b"up\n"
    polite = started(["sleep", "60"])
    other = started(["sleep", "61"])
    try:
        procs = [
            {"pid": stubborn.pid, "argv0": sys.executable},
            {"pid": polite.pid, "argv0": "sleep"},
            {"pid": other.pid, "argv0": "/not/what/runs/there"},
            {"pid": 2**22 + 7, "argv0": "gone"},
        ]
        results, problems = C.stop_processes(procs, grace=0.5, check=False)
        assert problems == []
        assert results[f"process:{stubborn.pid}"]["status"] == "killed"
        assert results[f"process:{polite.pid}"]["status"] == "stopped"
        assert results[f"process:{other.pid}"]["status"] == "not ours"
        assert results[f"process:{2**22 + 7}"]["status"] == "gone"
        assert stubborn.wait(5) == -9 and polite.wait(5) == -15
        assert other.poll() is None
    finally:
        for p in (stubborn, polite, other):
            if p.poll() is None:
                p.kill()
                p.wait()


def test_check_mode_stops_nothing() -> None:
    p = started(["sleep", "60"])
    try:
        results, _ = C.stop_processes([{"pid": p.pid, "argv0": "sleep"}], grace=0.1, check=True)
        assert results[f"process:{p.pid}"]["status"] == "would stop" and p.poll() is None
    finally:
        p.kill()
        p.wait()


def test_removes_root_artifacts_and_files(tmp_path: Path) -> None:
    root = tmp_path / "labctl"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "x").write_text("x")
    outside = tmp_path / "riskd.bin"
    outside.write_text("deployed")
    changed = tmp_path / "edited.bin"
    changed.write_text("edited by someone")
    owned = tmp_path / "99-labctl.conf"
    owned.write_text("vm.swappiness=1\n")
    adir = tmp_path / "adir"
    adir.mkdir()
    import hashlib

    arts = {
        "a": {"path": str(outside), "sha256": hashlib.sha256(b"deployed").hexdigest()},
        "b": {"path": str(changed), "sha256": "0" * 64},
        "c": {"path": str(root / "bin" / "x"), "sha256": "whatever"},
    }
    res, problems = C.remove_deployed(str(root), arts, check=True)
    assert res["deployed"]["status"] == "would remove" and root.exists() and outside.exists()
    res, problems = C.remove_deployed(str(root), arts, check=False)
    assert problems == [] and not root.exists() and not outside.exists() and changed.exists()
    assert res["artifact:b"]["status"].startswith("left")
    res, problems = C.remove_files([str(owned), str(tmp_path / "never"), str(adir), "rel/path"], check=False)
    assert not owned.exists() and adir.exists()
    assert (
        res[f"file:{owned}"]["status"] == "removed"
        and res[f"file:{tmp_path / 'never'}"]["status"] == "absent"
    )
    assert len(problems) == 2
    res, problems = C.remove_deployed("/etc", {}, check=False)
    assert res["deployed"]["status"] == "refused" and os.path.isdir("/etc") and problems


def test_process_started_through_numactl_matches_only_inside_the_deployed_root() -> None:
    cmd = b"/var/lib/labctl/bin/riskd-go\0--listen\0:8080\0"
    assert C.process_matches(cmd, "numactl", "/var/lib/labctl")
    assert not C.process_matches(cmd, "numactl", None)
    assert not C.process_matches(b"/usr/bin/python3\0", "numactl", "/var/lib/labctl")
    assert not C.process_matches(cmd, "bash", "/var/lib/labctl")  # not an exec wrapper
    assert not C.process_matches(b"/etc/evil\0", "numactl", "/")  # a root labctl does not own
