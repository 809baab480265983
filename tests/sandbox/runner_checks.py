"""Behaviour every :class:`~labctl.remote.Runner` must have; run against LocalRunner and SshRunner."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from labctl import remote

NASTY = ["a b", "it's", "$(touch /tmp/labctl-pwned)", "`id`", "a\nb", "*", ";", "", "-n"]


def check_run(r: remote.Runner, workdir: str) -> None:
    res = r.run(["printf", "%s\\0", *NASTY], 30)
    assert res.rc == 0 and res.stdout.split("\0")[:-1] == NASTY
    assert not Path("/tmp/labctl-pwned").exists()
    res = r.run(["sh", "-c", 'echo "$V" "$PWD"; echo err >&2; exit 7'], 30, env={"V": "x y"}, cwd=workdir)
    assert (res.rc, res.stdout.strip(), res.stderr.strip()) == (7, f"x y {workdir}", "err")
    with pytest.raises(remote.CommandFailed) as exc:
        r.run(["false"], 30, check=True)
    assert exc.value.result.rc == 1
    with pytest.raises(remote.CommandTimeout):
        r.run(["sleep", "5"], 0.5)


def check_process_lifecycle(r: remote.Runner, workdir: str) -> None:
    script = (
        'echo "starting $X"; sleep 0.3; echo "READY port=4242"; trap "echo bye; exit 0" TERM; '
        "while :; do sleep 0.1; done"
    )
    t0 = time.monotonic()
    proc = r.start(
        ["sh", "-c", script],
        {"X": "it's $HOME"},
        stdout_path=f"{workdir}/srv.out",
        stderr_path=f"{workdir}/srv.err",
    )
    assert time.monotonic() - t0 < 5 and proc.pid > 1
    line = r.wait_for_line(proc, r"^READY port=(\d+)$", timeout=15)
    assert line == "READY port=4242"
    assert r.is_alive(proc)
    assert r.read_text(proc.stdout_path).splitlines()[0] == "starting it's $HOME"
    assert r.signal(proc, signal.SIGTERM) is True
    assert r.wait(proc, 10) == 0
    assert not r.is_alive(proc)
    assert r.signal(proc, signal.SIGTERM) is False  # already exited: its pid is never signalled
    assert "bye" in r.read_text(proc.stdout_path)


def check_killed_process_and_early_exit(r: remote.Runner, workdir: str) -> None:
    proc = r.start(["sleep", "60"], stdout_path=f"{workdir}/s.out", stderr_path=f"{workdir}/s.err")
    assert r.wait(proc, 0.2) is None
    r.signal(proc, signal.SIGKILL)
    assert r.wait(proc, 10) == 128 + signal.SIGKILL
    proc = r.start(
        ["sh", "-c", "echo half-ready; echo 'cannot bind: address in use' >&2; exit 3"],
        stdout_path="e.out",
        stderr_path="e.err",
        cwd=workdir,
    )
    assert proc.stdout_path == f"{workdir}/e.out"
    with pytest.raises(remote.ProcessExited, match="cannot bind: address in use") as exc:
        r.wait_for_line(proc, "^READY", timeout=15)
    assert exc.value.rc == 3
    proc = r.start(["labctl-no-such-program"], stdout_path=f"{workdir}/n.out", stderr_path=f"{workdir}/n.err")
    with pytest.raises(remote.ProcessExited, match="not found"):
        r.wait_for_line(proc, "^READY", timeout=15)
    proc = r.start(["sh", "-c", "sleep 30"], stdout_path=f"{workdir}/q.out", stderr_path=f"{workdir}/q.err")
    with pytest.raises(remote.WaitTimeout, match=r"within 0\.5s"):
        r.wait_for_line(proc, "^READY", timeout=0.5)
    r.signal(proc, signal.SIGKILL)


def check_files(r: remote.Runner, workdir: str, local: Path) -> None:
    src = local / "src.bin"
    src.write_bytes(bytes(range(256)) * 4096)
    r.put(src, f"{workdir}/dst.bin", 0o750)
    assert r.run(["stat", "-c", "%a %s", f"{workdir}/dst.bin"], 30).stdout.split() == [
        "750",
        str(1024 * 1024),
    ]
    back = local / "back.bin"
    r.get(f"{workdir}/dst.bin", back)
    assert back.read_bytes() == src.read_bytes()
    with pytest.raises(FileNotFoundError):
        r.read_text(f"{workdir}/missing")
