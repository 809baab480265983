"""Host-free tests of the pure logic behind the sandbox, the remote runner and doctor."""

from __future__ import annotations

import errno
import socket
import subprocess
from pathlib import Path

import paramiko
import pytest
import yaml

from labctl import doctor, remote, sandbox
from labctl.errors import EnvironmentProblem
from labctl.inventory import Host

NASTY = [
    "a b",
    "it's",
    '"dq"',
    "$(touch /tmp/pwned)",
    "`id`",
    "a\nb",
    "*",
    ";",
    "&&",
    "|",
    "\\",
    "",
    "-n",
    "~",
]


# ---------------------------------------------------------------- quoting


def _sh(line: str) -> str:
    return subprocess.run(["sh", "-c", line], capture_output=True, text=True, check=True).stdout


def test_command_line_passes_every_word_through_unchanged() -> None:
    line = remote.command_line(["printf", "%s\\0", *NASTY])
    assert _sh(line).split("\0")[:-1] == NASTY


def test_command_line_sets_env_and_cwd_without_interpreting_values(tmp_path: Path) -> None:
    d = tmp_path / "dir with 'quote' $x"
    d.mkdir()
    line = remote.command_line(["sh", "-c", 'printf "%s|%s" "$V" "$PWD"'], {"V": "$(id) `x` 'q'"}, str(d))
    assert _sh(line) == f"$(id) `x` 'q'|{d}"


@pytest.mark.parametrize("name", ["A-B", "1A", "-u", "A B", "A=B", ""])
def test_env_names_are_validated(name: str) -> None:
    with pytest.raises(ValueError, match="invalid environment variable name"):
        remote.command_line(["true"], {name: "x"})


def test_empty_argv_is_refused() -> None:
    with pytest.raises(ValueError):
        remote.command_line([])


def test_start_argv_runs_the_exact_argv_in_the_background(tmp_path: Path) -> None:
    out, err, ex = tmp_path / "o", tmp_path / "e", tmp_path / "o.exit"
    argv = remote.start_argv(
        ["printf", "%s\\0", *NASTY],
        env={"X": "1"},
        stdout_path=str(out),
        stderr_path=str(err),
        cwd=str(tmp_path),
        exit_path=str(ex),
    )
    # over SSH this argv becomes one line through shlex.join: check that path too
    pid = _sh(remote.command_line(argv)).strip()
    assert pid.isdigit()
    for _ in range(100):
        if ex.exists():
            break
        subprocess.run(["sleep", "0.05"], check=True)
    assert ex.read_text().strip() == "0"
    assert out.read_text().split("\0")[:-1] == NASTY


def test_parse_status_and_proc_state() -> None:
    assert remote.parse_status("143\n") == 143
    assert remote.parse_status("") is None
    assert remote.proc_state("123 (a b) c) S 1 2 3") == "S"
    assert remote.proc_state("123 (zombie) Z 1") == "Z"


# ---------------------------------------------------------------- error classification


@pytest.mark.parametrize(
    ("exc", "cls", "words"),
    [
        (TimeoutError("timed out"), remote.ConnectTimeout, "timed out after 5s"),
        (TimeoutError("timed out"), remote.ConnectTimeout, "timed out"),
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), remote.ConnectRefused, "connection refused"),
        (OSError(errno.EHOSTUNREACH, "x"), remote.NoRoute, "no route"),
        (OSError(errno.ENETUNREACH, "x"), remote.NoRoute, "no route"),
        (socket.gaierror(-2, "Name or service not known"), remote.NameUnresolved, "cannot resolve"),
        (OSError(errno.EACCES, "x"), remote.ConnectError, "cannot connect"),
    ],
)
def test_socket_errors_are_classified(exc: BaseException, cls: type, words: str) -> None:
    err = remote.classify_socket_error(exc, host="h1", address="198.18.0.11", port=22, timeout=5)
    assert type(err) is cls
    assert words in err.message and "198.18.0.11" in err.message
    assert err.host == "h1" and err.stage == "tcp" and err.exit_code == 1
    assert err.to_json()["reason"] == cls.reason


def _key(path: Path) -> paramiko.PKey:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return paramiko.Ed25519Key.from_private_key_file(str(path))


def test_known_hosts_accepts_a_match_in_any_file_and_names_mismatch_and_unknown(tmp_path: Path) -> None:
    good, bad = _key(tmp_path / "good"), _key(tmp_path / "bad")
    f1, f2 = tmp_path / "kh1", tmp_path / "kh2"
    f1.write_text(f"198.18.0.11 {bad.get_name()} {bad.get_base64()}\n")
    f2.write_text(
        f"198.18.0.11 {good.get_name()} {good.get_base64()}\n[198.18.0.12]:2222 "
        f"{bad.get_name()} {bad.get_base64()}\n"
    )
    kh = remote.KnownHosts([f1, f2])
    kh.verify("h", "198.18.0.11", good)  # OpenSSH semantics: a match in any file is enough
    with pytest.raises(remote.HostKeyMismatch, match="HOST KEY MISMATCH") as exc:
        remote.KnownHosts([f1]).verify("h", "198.18.0.11", good)
    assert remote.fingerprint(good) in exc.value.message and remote.fingerprint(bad) in exc.value.message
    with pytest.raises(remote.UnknownHostKey, match="never adds keys"):
        kh.verify("h", "198.18.0.13", good)
    assert remote.host_key_name("198.18.0.12", 2222) == "[198.18.0.12]:2222"
    assert kh.key_types("[198.18.0.12]:2222") == ["ssh-ed25519"]


def test_known_hosts_files_include_the_inventory_files() -> None:
    h = Host(
        "x",
        {
            "labctl_known_hosts": "/some/known_hosts",
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=yes -o 'UserKnownHostsFile=/a /b'",
            "ansible_ssh_extra_args": "-oUserKnownHostsFile=/some/known_hosts",
        },
    )
    files = remote.known_hosts_files(h)
    assert files[-3:] == [Path("/a"), Path("/b"), Path("/some/known_hosts")]
    assert Path("/etc/ssh/ssh_known_hosts") in files


@pytest.mark.parametrize(
    ("args", "value"),
    [
        ("-o UserKnownHostsFile=/x -o UserKnownHostsFile=/y", "/x"),
        ("-o 'UserKnownHostsFile /x'", "/x"),
        ("-o userknownhostsfile=/x", "/x"),
        ("-o StrictHostKeyChecking=no", None),
        ("-o 'unclosed", None),
    ],
)
def test_ssh_option(args: str, value: str | None) -> None:
    assert remote.ssh_option(args, "UserKnownHostsFile") == value


def test_remote_process_round_trips_through_json() -> None:
    p = remote.RemoteProcess("h", 12, ("a", "b c"), "/o", "/e", "/o.exit", 1.5)
    assert remote.RemoteProcess.from_json(p.to_json()) == p


# ---------------------------------------------------------------- sandbox naming and files


def test_slots_and_hosts_stay_inside_the_benchmarking_range() -> None:
    assert str(sandbox.subnet_for(0)) == "198.18.0.0/24"
    assert str(sandbox.subnet_for(511)) == "198.19.255.0/24"
    for slot in (0, 7, 300, 511):
        for i in (1, 2, 200):
            plan = sandbox.HostPlan.make(slot, i)
            assert sandbox.SANDBOX_RANGE.supernet_of(sandbox.subnet_for(slot))
            assert plan.address in {str(a) for a in sandbox.subnet_for(slot).hosts()}
            assert len(plan.veth) <= 15 and len(sandbox.bridge_name(slot)) <= 15
    p = sandbox.HostPlan.make(0, 1)
    assert (p.name, p.netns, p.veth, p.address) == ("sbx-1", "lcsb-0-1", "lcsb-0-1v", "198.18.0.11")
    with pytest.raises(ValueError):
        sandbox.subnet_for(512)
    with pytest.raises(ValueError):
        sandbox.HostPlan.make(0, 201)


def test_owner_marker_identifies_the_data_dir() -> None:
    a, b = sandbox.owner_marker(Path("/a")), sandbox.owner_marker(Path("/b"))
    assert sandbox.marker_digest(a) != sandbox.marker_digest(b)
    assert sandbox.marker_digest(sandbox.owner_marker(Path("/x" * 300))) is not None
    assert sandbox.marker_digest("something else") is None


def test_sshd_config_and_inventory_keep_host_key_checking_on(tmp_path: Path) -> None:
    paths = sandbox.SandboxPaths(tmp_path)
    plans = [sandbox.HostPlan.make(3, i) for i in (1, 2)]
    conf = sandbox.render_sshd_config(paths, plans[0])
    for line in (
        "ListenAddress 198.18.3.11:22",
        "PasswordAuthentication no",
        "PermitRootLogin prohibit-password",
        f"AuthorizedKeysFile {paths.authorized_keys}",
        f"PidFile {paths.pid_file('sbx-1')}",
        "Subsystem sftp /usr/lib/openssh/sftp-server",
    ):
        assert line in conf.splitlines()
    inv = yaml.safe_load(sandbox.render_inventory(paths, plans, 2))
    v = inv["sandbox"]["vars"]
    assert inv["sandbox"]["hosts"] == {
        "sbx-1": {"ansible_host": "198.18.3.11"},
        "sbx-2": {"ansible_host": "198.18.3.12"},
    }
    assert "StrictHostKeyChecking=yes" in v["ansible_ssh_common_args"]
    assert f"UserKnownHostsFile={paths.known_hosts}" in v["ansible_ssh_common_args"]
    assert v["labctl_known_hosts"] == str(paths.known_hosts) and v["ansible_user"] == "root"
    assert v["ansible_host_key_checking"] is True  # ansible-runner would turn it off otherwise
    assert v["ansible_python_interpreter"] == "/usr/bin/python3" and v["labctl_numa_nodes"] == 2
    assert sandbox.render_known_hosts(
        {"198.18.3.12": "ssh-ed25519 BBB", "198.18.3.11": "ssh-ed25519 AAA"}
    ) == ("198.18.3.11 ssh-ed25519 AAA\n198.18.3.12 ssh-ed25519 BBB\n")


def test_private_dir_check_allows_sticky_tmp_but_not_open_dirs(tmp_path: Path) -> None:
    d = tmp_path / "data"
    d.mkdir(mode=0o700)
    uid = d.stat().st_uid
    sandbox.check_private_dir(d, {0, uid})  # /tmp is 1777: sticky is fine
    tmp_path.chmod(0o777)
    try:
        with pytest.raises(EnvironmentProblem, match="writable by others"):
            sandbox.check_private_dir(d, {0, uid})
    finally:
        tmp_path.chmod(0o700)
    with pytest.raises(EnvironmentProblem, match="owned by uid"):
        sandbox.check_private_dir(d, {uid + 12345})


def test_sandbox_needs_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sandbox.os, "geteuid", lambda: 1000)
    with pytest.raises(EnvironmentProblem, match="needs root"):
        sandbox.Sandbox(tmp_path).up(2)
    with pytest.raises(EnvironmentProblem, match="needs root"):
        sandbox.Sandbox(tmp_path).down()


# ---------------------------------------------------------------- doctor parsing


PROBE = """
@@labctl-doctor uid@@
1000
@@labctl-doctor user@@
lab
@@labctl-doctor sudo@@
ok
@@labctl-doctor python@@
/usr/bin/python3
Python 3.11.2
@@labctl-doctor kernel@@
6.1.0-18-amd64
@@labctl-doctor cpuinfo@@
processor\t: 0
model name\t: Xeon
physical id\t: 0
core id\t\t: 0

processor\t: 1
model name\t: Xeon
physical id\t: 1
core id\t\t: 0

@@labctl-doctor nodes@@
0 0
1 1
@@labctl-doctor io_uring@@
absent
@@labctl-doctor perf_paranoid@@
2
@@labctl-doctor perf_path@@
/usr/bin/perf
@@labctl-doctor perf_sw@@
0.67,msec,task-clock,666451,100.00,182.290,CPUs utilized
rc=0
@@labctl-doctor perf_hw@@
1234,,cycles,0,100.00,,
<not supported>,,instructions,0,100.00,,
rc=0
@@labctl-doctor tool go@@
/usr/local/go/bin/go
go version go1.22.1 linux/amd64
@@labctl-doctor tool rustc@@
@@labctl-doctor tool cargo@@
@@labctl-doctor tool g++@@
/usr/bin/g++
g++ (Debian 12.2.0-14) 12.2.0
@@labctl-doctor end@@
"""


def test_doctor_evaluates_a_recorded_probe() -> None:
    sections = doctor.parse_sections(PROBE)
    checks = doctor.evaluate(Host("h", {"labctl_numa_nodes": 2}), sections)
    assert checks["python3"].status == "ok" and checks["python3"].data["version"] == "3.11.2"
    assert checks["privileges"].status == "ok" and checks["privileges"].data["sudo"] is True
    topo = checks["topology"]
    assert (topo.status, topo.data["sockets"], topo.data["numa_nodes"]) == ("ok", 2, 2)
    assert checks["io_uring"].summary.startswith("not present (kernel < 6.6")
    perf = checks["perf"]
    assert perf.status == "warn" and perf.data["hardware_events"] == {"cycles": True, "instructions": False}
    assert "instructions" in perf.summary and "counted: cycles" in perf.summary
    tc = checks["toolchains"]
    assert tc.status == "warn" and tc.data["missing"] == ["rustc", "cargo"]
    assert tc.data["tools"]["go"]["version"] == "1.22.1" and tc.data["tools"]["g++"]["version"] == "12.2.0"


def test_doctor_warns_when_the_inventory_disagrees_on_numa_nodes() -> None:
    sections = doctor.parse_sections(PROBE)
    topo = doctor.evaluate(Host("h", {"labctl_numa_nodes": 4, "labctl_sockets": 2}), sections)["topology"]
    assert topo.status == "warn" and "labctl_numa_nodes=4, the host has 2" in topo.summary


@pytest.mark.parametrize(
    ("sudo", "status"),
    [("root", "ok"), ("ok", "ok"), ("sudo: a password is required\nrc=1", "fail"), ("no sudo", "fail")],
)
def test_doctor_privileges(sudo: str, status: str) -> None:
    assert doctor.check_privileges("lab", sudo).status == status


def test_doctor_python_missing_or_old_fails() -> None:
    assert doctor.check_python("", "python3").status == "fail"
    assert doctor.check_python("/usr/bin/python3\nPython 3.6.9", "python3").status == "fail"
    assert (
        doctor.python_interpreter(Host("h", {"ansible_python_interpreter": "{{ ansible_playbook_python }}"}))
        == "python3"
    )


def test_doctor_io_uring_values() -> None:
    assert doctor.check_io_uring("0").status == "ok"
    assert doctor.check_io_uring("2").status == "warn"
    assert doctor.check_io_uring("absent").data["io_uring_disabled"] is None


def test_doctor_perf_missing_or_broken() -> None:
    assert doctor.check_perf("", "", "", "2").summary.startswith("perf not installed")
    broken = doctor.check_perf("/usr/bin/perf", "perf not found for kernel 6.18\nrc=1", "rc=1", "2")
    assert broken.status == "warn" and "perf not found for kernel" in broken.summary


def test_unreachable_host_report_has_the_contract_keys() -> None:
    report = doctor.check_host(Host("gone", {"ansible_host": "127.0.0.1", "ansible_port": _closed_port()}), 2)
    doc = report.to_json()
    assert {"ok", "changed", "failed", "unreachable", "msg", "checks"} <= set(doc)
    assert (doc["ok"], doc["unreachable"], doc["changed"]) == (False, True, 0)
    assert "connection refused" in doc["msg"] and doc["checks"]["reachable"]["data"]["reason"] == "refused"


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def test_ssh_handshake_timeout_is_named(tmp_path: Path) -> None:
    """A port that accepts TCP but never speaks SSH: a handshake error, not a hang."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    host = Host("mute", {"ansible_host": "127.0.0.1", "ansible_port": srv.getsockname()[1]})
    try:
        with pytest.raises(remote.SshHandshakeError, match="SSH handshake") as exc:
            remote.connect(host, timeout=1)
        assert exc.value.stage == "ssh"
    finally:
        srv.close()
