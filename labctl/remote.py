"""Run commands and long-running processes on a host, over SSH or locally, behind one interface.

:func:`runner_for` returns a :class:`LocalRunner` for ``ansible_connection=local`` hosts
and a connected :class:`SshRunner` (paramiko) for the others. Both offer the same
methods: ``run`` a command and collect its output; ``start`` a long-running process in
the background with its output going to files *on the host*; ``wait_for_line`` on its
stdout (readiness); ``signal``, ``wait``, ``is_alive``; ``put``/``get``/``read_text``.

Commands are always argv lists. Over SSH the remote shell sees one command line built
with :func:`shlex.join`, so no word of user input is ever interpreted by a shell.

Host keys are always checked: the system's known_hosts files plus the host's
``labctl_known_hosts`` inventory variable; an unknown key is rejected, never added.
Every connection problem is a distinct :class:`ConnectError` subclass whose message
says what was tried and what happened (timeout, refused, no route, unknown host key,
host-key mismatch, authentication refused).
"""

from __future__ import annotations

import base64
import contextlib
import errno
import getpass
import hashlib
import os
import re
import select
import shlex
import shutil
import signal as _signal
import socket
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import paramiko

from labctl.errors import HostError
from labctl.inventory import Host

DEFAULT_CONNECT_TIMEOUT = 10.0
SYSTEM_KNOWN_HOSTS = ("~/.ssh/known_hosts", "/etc/ssh/ssh_known_hosts")
DEFAULT_IDENTITIES = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


# ---------------------------------------------------------------- errors


class RemoteError(HostError):
    """Something failed on, or on the way to, one host. ``reason`` is a short machine-readable word."""

    reason = "remote"

    def __init__(self, message: str, *, host: str) -> None:
        super().__init__(f"{host}: {message}", hosts={host: message})
        self.host = host
        self.reason_text = message
        self.details["reason"] = self.reason


class ConnectError(RemoteError):
    """The host could not be reached or logged into (Ansible would call it unreachable).

    ``stage`` says how far the connection got: ``tcp``, ``ssh`` (protocol handshake),
    ``hostkey`` or ``auth``.
    """

    reason = "connect"
    stage = "tcp"


class ConnectTimeout(ConnectError):
    reason = "timeout"


class ConnectRefused(ConnectError):
    reason = "refused"


class NoRoute(ConnectError):
    reason = "no_route"


class NameUnresolved(ConnectError):
    reason = "dns"


class SshHandshakeError(ConnectError):
    reason = "ssh_handshake"
    stage = "ssh"


class UnknownHostKey(ConnectError):
    reason = "unknown_host_key"
    stage = "hostkey"


class HostKeyMismatch(ConnectError):
    reason = "host_key_mismatch"
    stage = "hostkey"


class AuthFailed(ConnectError):
    reason = "auth"
    stage = "auth"


class CommandFailed(RemoteError):
    """A command exited non-zero (raised by ``run(..., check=True)``); carries argv, rc and output."""

    reason = "command_failed"

    def __init__(self, host: str, argv: Sequence[str], result: Completed) -> None:
        tail = (result.stderr.strip() or result.stdout.strip())[-400:]
        super().__init__(f"{shlex.join(argv)} exited {result.rc}: {tail}", host=host)
        self.argv = list(argv)
        self.result = result


class CommandTimeout(RemoteError):
    reason = "command_timeout"


class ProcessExited(RemoteError):
    """A started process exited while we were waiting for a line of its output."""

    reason = "process_exited"

    def __init__(self, message: str, *, host: str, rc: int | None, stderr_tail: str) -> None:
        super().__init__(message, host=host)
        self.rc = rc
        self.stderr_tail = stderr_tail


class WaitTimeout(RemoteError):
    reason = "wait_timeout"


class ProcessLost(RemoteError):
    """A started process is gone and its exit status was never recorded (its supervisor was killed)."""

    reason = "process_lost"


# ---------------------------------------------------------------- values


@dataclass(frozen=True)
class Completed:
    """Outcome of :meth:`Runner.run`."""

    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0


@dataclass(frozen=True)
class RemoteProcess:
    """A process started by :meth:`Runner.start`. Paths are on the host; ``exit_path`` receives its exit code."""

    host: str
    pid: int
    argv: tuple[str, ...]
    stdout_path: str
    stderr_path: str
    exit_path: str
    started_at: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        """What local state needs to find (and stop) the process again after a crash."""
        return {
            "host": self.host,
            "pid": self.pid,
            "argv": list(self.argv),
            "stdout_path": self.stdout_path,
            "stderr_path": self.stderr_path,
            "exit_path": self.exit_path,
            "started_at": self.started_at,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> RemoteProcess:
        """Inverse of :meth:`to_json`."""
        return cls(
            str(doc["host"]),
            int(doc["pid"]),
            tuple(doc["argv"]),
            str(doc["stdout_path"]),
            str(doc["stderr_path"]),
            str(doc["exit_path"]),
            float(doc.get("started_at", 0.0)),
        )


# ---------------------------------------------------------------- command building (pure)


def env_words(env: Mapping[str, str] | None) -> list[str]:
    """``env -- K=V …`` words that set ``env`` for the command that follows (names are validated)."""
    if not env:
        return []
    for name in env:
        if not _ENV_NAME.match(name):
            raise ValueError(f"invalid environment variable name {name!r}")
    return ["env", "--", *(f"{k}={v}" for k, v in env.items())]


def command_line(argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: str | None = None) -> str:
    """One POSIX shell command line that runs ``argv`` exactly as given: every word is quoted."""
    if not argv:
        raise ValueError("empty argv")
    line = shlex.join([*env_words(env), *argv])
    if cwd:
        line = f"cd {shlex.quote(cwd)} && exec {line}"
    return line


# The supervisor of a started process. It runs the command in the background with its
# output in files, prints the command's pid, lets go of the caller's stdout/stderr (so
# an SSH channel closes at once), then waits and records the exit code in a file:
# processes started over SSH are not our children, so their exit code is kept there.
# A signal's exit code follows the shell convention, 128 + N.
START_SCRIPT = r"""
exitf=$1 out=$2 err=$3 dir=$4
shift 4
if [ -n "$dir" ]; then cd "$dir" || exit 97; fi
rm -f "$exitf" "$exitf.tmp" || exit 97
: >"$out" || exit 97
: >"$err" || exit 97
(
  "$@" </dev/null >>"$out" 2>>"$err" &
  child=$!
  echo "$child"
  exec </dev/null >/dev/null 2>&1
  wait "$child"
  echo "$?" >"$exitf.tmp" && mv -f "$exitf.tmp" "$exitf"
) &
"""

# How long a dead process's supervisor may take to record its exit code.
EXIT_FILE_GRACE_S = 10.0

SIGNAL_SCRIPT = r"""
[ -e "$1" ] && exit 3
kill -s "$2" "$3"
"""


def start_argv(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None,
    stdout_path: str,
    stderr_path: str,
    cwd: str | None,
    exit_path: str,
) -> list[str]:
    """The argv that starts ``argv`` under the supervisor script (see :data:`START_SCRIPT`)."""
    if not argv:
        raise ValueError("empty argv")
    return [
        "sh",
        "-c",
        START_SCRIPT,
        "labctl-start",
        exit_path,
        stdout_path,
        stderr_path,
        cwd or "",
        *env_words(env),
        *argv,
    ]


def parse_status(text: str) -> int | None:
    """Content of an exit file → the exit code (None if it is not a number yet)."""
    word = text.strip()
    return int(word) if re.fullmatch(r"-?\d+", word) else None


def proc_state(stat_line: str) -> str:
    """The state letter of a ``/proc/<pid>/stat`` line (``Z`` for a zombie)."""
    fields = stat_line.rsplit(")", 1)[-1].split()
    return fields[0] if fields else "?"


def _signal_name(sig: int) -> str:
    return _signal.Signals(sig).name.removeprefix("SIG")


# ---------------------------------------------------------------- the interface


class Runner(ABC):
    """Run commands and processes on one host. Use as a context manager or call :meth:`close`."""

    name: str

    @abstractmethod
    def run(
        self,
        argv: Sequence[str],
        timeout: float = 60.0,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        check: bool = False,
    ) -> Completed:
        """Run ``argv`` and wait for it; raise :class:`CommandTimeout` after ``timeout`` seconds."""

    @abstractmethod
    def read_bytes(self, path: str, offset: int = 0) -> bytes:
        """Content of a file on the host from ``offset`` on (raises FileNotFoundError)."""

    @abstractmethod
    def put(self, local_path: str | Path, remote_path: str, mode: int | None = None) -> None:
        """Copy a local file to the host atomically (temporary name, then rename); ``mode`` default: the local one."""

    @abstractmethod
    def get(self, remote_path: str, local_path: str | Path) -> None:
        """Copy a file from the host to ``local_path`` atomically."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection (idempotent)."""

    def __enter__(self) -> Runner:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- shared behaviour, built on the primitives above

    def _run_detached(self, argv: Sequence[str], timeout: float) -> Completed:
        return self.run(argv, timeout)

    def read_text(self, path: str) -> str:
        """Whole file on the host as text (undecodable bytes replaced)."""
        return self.read_bytes(path).decode(errors="replace")

    def start(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        *,
        stdout_path: str,
        stderr_path: str,
        cwd: str | None = None,
        exit_path: str | None = None,
    ) -> RemoteProcess:
        """Start ``argv`` in the background on the host; return at once with its pid.

        Output goes to ``stdout_path``/``stderr_path`` on the host (truncated first;
        relative paths are relative to ``cwd``); the exit code is written to
        ``exit_path`` (default ``<stdout_path>.exit``) when the process ends.
        """
        exit_path = exit_path or stdout_path + ".exit"
        cmd = start_argv(
            argv, env=env, stdout_path=stdout_path, stderr_path=stderr_path, cwd=cwd, exit_path=exit_path
        )
        res = self._run_detached(cmd, 30.0)
        pid = res.stdout.strip()
        if res.rc != 0 or not pid.isdigit():
            raise CommandFailed(self.name, argv, res)

        def resolve(p: str) -> str:  # the supervisor ran in cwd: keep the paths it saw
            return p if p.startswith("/") or not cwd else f"{cwd.rstrip('/')}/{p}"

        return RemoteProcess(
            self.name, int(pid), tuple(argv), resolve(stdout_path), resolve(stderr_path), resolve(exit_path)
        )

    def _status_raw(self, proc: RemoteProcess) -> int | str | None:
        # file reads only (SFTP over SSH): no remote shell start-up on every poll
        try:
            code = parse_status(self.read_bytes(proc.exit_path).decode(errors="replace"))
            if code is not None:
                return code
        except FileNotFoundError:
            pass
        try:
            state = proc_state(self.read_bytes(f"/proc/{proc.pid}/stat").decode(errors="replace"))
        except OSError:
            # The process exited while we read its stat: ENOENT, ESRCH locally, SFTP's
            # generic "Failure" remotely. A lost connection fails the exit-file read above.
            return "gone"
        return "gone" if state == "Z" else None

    def status(self, proc: RemoteProcess) -> int | None:
        """Exit code of ``proc``, or None while it runs. Raises :class:`ProcessLost` if it vanished unrecorded."""
        st = self._status_raw(proc)
        # Dead but not yet recorded: the supervisor has still to reap it and write the exit
        # file, which on a saturated host can take a while. The process is gone either way.
        deadline = time.monotonic() + EXIT_FILE_GRACE_S
        while st == "gone" and time.monotonic() < deadline:
            time.sleep(0.1)
            st = self._status_raw(proc)
        if st == "gone":
            raise ProcessLost(
                f"process {proc.pid} ({shlex.join(proc.argv)}) is gone and its exit code was "
                f"not recorded in {proc.exit_path}",
                host=self.name,
            )
        return st if isinstance(st, int) else None

    def is_alive(self, proc: RemoteProcess) -> bool:
        """True while ``proc`` runs."""
        try:
            return self.status(proc) is None
        except ProcessLost:
            return False

    def signal(self, proc: RemoteProcess, sig: int = _signal.SIGTERM) -> bool:
        """Send ``sig`` to ``proc``; False if it had already exited (its pid is then never signalled)."""
        res = self.run(
            ["sh", "-c", SIGNAL_SCRIPT, "labctl-signal", proc.exit_path, _signal_name(sig), str(proc.pid)],
            30.0,
        )
        return res.rc == 0

    def wait(self, proc: RemoteProcess, timeout: float) -> int | None:
        """Wait up to ``timeout`` seconds for ``proc`` to exit; its exit code, or None if still running."""
        deadline = time.monotonic() + timeout
        delay = 0.02
        while True:
            code = self.status(proc)
            if code is not None:
                return code
            if time.monotonic() >= deadline:
                return None
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 1.5, 0.25)

    def tail(self, path: str, max_bytes: int = 2000) -> str:
        """The last ``max_bytes`` of a file on the host ('' if it does not exist)."""
        try:
            data = self.read_bytes(path)
        except (FileNotFoundError, OSError):
            return ""
        return data[-max_bytes:].decode(errors="replace")

    def wait_for_line(self, proc: RemoteProcess, pattern: str, timeout: float = 30.0) -> str:
        """Poll ``proc``'s stdout file until a line matches ``pattern`` (a regex); return that line.

        Raises :class:`ProcessExited` (with the tail of its stderr) if the process ends
        first, :class:`WaitTimeout` after ``timeout`` seconds.
        """
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        offset, pending, delay = 0, b"", 0.02
        while True:
            code = self.status(proc)  # before reading: once exited, the read below is complete
            try:
                chunk = self.read_bytes(proc.stdout_path, offset)
            except FileNotFoundError:
                chunk = b""
            offset += len(chunk)
            *lines, pending = (pending + chunk).split(b"\n")
            if code is not None and pending:
                lines.append(pending)
            for raw in lines:
                line = raw.decode(errors="replace").rstrip("\r")
                if rx.search(line):
                    return line
            if code is not None:
                err = self.tail(proc.stderr_path).strip()
                raise ProcessExited(
                    f"{shlex.join(proc.argv)} exited with {code} before printing a line "
                    f"matching {pattern!r}; stderr: {err or '(empty)'}",
                    host=self.name,
                    rc=code,
                    stderr_tail=err,
                )
            if time.monotonic() >= deadline:
                out = self.tail(proc.stdout_path, 500).strip()
                raise WaitTimeout(
                    f"no line matching {pattern!r} from {shlex.join(proc.argv)} within "
                    f"{timeout:g}s; stdout so far: {out or '(empty)'}",
                    host=self.name,
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)


# ---------------------------------------------------------------- local


class LocalRunner(Runner):
    """This machine, through :mod:`subprocess`; started processes get their own session."""

    def __init__(self, name: str = "localhost") -> None:
        self.name = name

    def close(self) -> None:
        """Nothing to release for this machine."""

    def _spawn(
        self,
        argv: Sequence[str],
        timeout: float,
        env: Mapping[str, str] | None,
        cwd: str | None,
        new_session: bool,
    ) -> Completed:
        full_env = {**os.environ, **env} if env else None
        if env:
            env_words(env)  # same validation as over SSH
        try:
            proc = subprocess.run(
                list(argv),
                capture_output=True,
                timeout=timeout,
                env=full_env,
                cwd=cwd,
                start_new_session=new_session,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise CommandTimeout(
                f"{shlex.join(argv)} did not finish within {timeout:g}s", host=self.name
            ) from exc
        except FileNotFoundError as exc:
            missing = cwd if cwd and not Path(cwd).is_dir() else argv[0]
            return Completed(127, "", f"{missing}: not found ({exc.strerror})")
        except PermissionError as exc:
            return Completed(126, "", f"{argv[0]}: {exc.strerror}")
        return Completed(
            proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
        )

    def run(
        self,
        argv: Sequence[str],
        timeout: float = 60.0,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        check: bool = False,
    ) -> Completed:
        """Run ``argv`` as a child process and wait for it."""
        res = self._spawn(argv, timeout, env, cwd, new_session=False)
        if check and res.rc != 0:
            raise CommandFailed(self.name, argv, res)
        return res

    def _run_detached(self, argv: Sequence[str], timeout: float) -> Completed:
        # its own session: a Ctrl-C at labctl's terminal must not reach the workload directly
        return self._spawn(argv, timeout, None, None, new_session=True)

    def signal(self, proc: RemoteProcess, sig: int = _signal.SIGTERM) -> bool:
        """Send ``sig`` to ``proc`` unless it has already exited."""
        if os.path.exists(proc.exit_path):
            return False
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            return False
        return True

    def read_bytes(self, path: str, offset: int = 0) -> bytes:
        """Read a local file from ``offset``."""
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read()

    def put(self, local_path: str | Path, remote_path: str, mode: int | None = None) -> None:
        """Copy a file on this machine (atomic rename into place)."""
        tmp = f"{remote_path}.labctl-tmp"
        shutil.copyfile(local_path, tmp)
        os.chmod(tmp, mode if mode is not None else os.stat(local_path).st_mode & 0o7777)
        os.replace(tmp, remote_path)

    def get(self, remote_path: str, local_path: str | Path) -> None:
        """Copy a file on this machine (atomic rename into place)."""
        tmp = f"{local_path}.labctl-tmp"
        shutil.copyfile(remote_path, tmp)
        os.replace(tmp, local_path)


# ---------------------------------------------------------------- host keys


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style ``SHA256:…`` fingerprint."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def ssh_option(args: str, name: str) -> str | None:
    """The value of ``-o Name=value`` (or ``-oName value``…) in an ssh argument string, first one wins."""
    try:
        words = shlex.split(args)
    except ValueError:
        return None
    for i, word in enumerate(words):
        if word == "-o" and i + 1 < len(words):
            opt = words[i + 1]
        elif word.startswith("-o") and len(word) > 2:
            opt = word[2:]
        else:
            continue
        key, _, value = opt.replace("=", " ", 1).partition(" ")
        if key.lower() == name.lower():
            return value.strip()
    return None


def known_hosts_files(host: Host) -> list[Path]:
    """Where host keys for ``host`` are looked up, as Ansible's ssh would plus ``labctl_known_hosts``.

    The system files, any ``UserKnownHostsFile`` in the host's ``ansible_ssh_*_args``,
    then ``labctl_known_hosts`` (a path or a list of paths).
    """
    files = [Path(p).expanduser() for p in SYSTEM_KNOWN_HOSTS]
    for var in ("ansible_ssh_common_args", "ansible_ssh_extra_args"):
        value = ssh_option(str(host.vars.get(var) or ""), "UserKnownHostsFile")
        files.extend(Path(p).expanduser() for p in (value or "").split() if p != "/dev/null")
    extra = host.vars.get("labctl_known_hosts")
    if isinstance(extra, str):
        extra = [extra]
    for p in extra or []:
        files.append(Path(str(p)).expanduser())
    return list(dict.fromkeys(files))


def host_key_name(address: str, port: int) -> str:
    """How known_hosts names a host: the address, or ``[address]:port`` when the port is not 22."""
    return address if port == 22 else f"[{address}]:{port}"


class KnownHosts:
    """Host keys from several known_hosts files; a key matching in any file is accepted (as OpenSSH does)."""

    def __init__(self, files: Sequence[Path], required: Sequence[Path] = ()) -> None:
        self.files = list(files)
        self.missing_required = [p for p in required if not p.is_file()]
        self._tables: list[tuple[Path, paramiko.HostKeys]] = []
        for p in self.files:
            if p.is_file():
                with contextlib.suppress(OSError):
                    self._tables.append((p, paramiko.HostKeys(str(p))))

    def keys_for(self, name: str) -> list[tuple[Path, paramiko.PKey]]:
        """Every known key for ``name`` with the file it came from."""
        found: list[tuple[Path, paramiko.PKey]] = []
        for path, table in self._tables:
            entry = table.lookup(name)
            if entry:
                found.extend((path, key) for key in entry.values())
        return found

    def verify(self, host: str, name: str, key: paramiko.PKey) -> None:
        """Accept ``key`` for ``name`` or raise :class:`UnknownHostKey` / :class:`HostKeyMismatch`."""
        known = self.keys_for(name)
        if any(k == key for _, k in known):
            return
        offered = f"{key.get_name()} {fingerprint(key)}"
        if not known:
            where = ", ".join(str(p) for p in self.files)
            hint = ""
            if self.missing_required:
                hint = (
                    f" (labctl_known_hosts file {', '.join(map(str, self.missing_required))} does not exist)"
                )
            raise UnknownHostKey(
                f"unknown host key: {name} offered {offered}, which is in none of the known_hosts "
                f"files ({where}){hint}; verify the fingerprint out of band and add it — "
                f"labctl never adds keys by itself",
                host=host,
            )
        listed = "; ".join(f"{k.get_name()} {fingerprint(k)} in {p}" for p, k in known)
        raise HostKeyMismatch(
            f"HOST KEY MISMATCH: {name} offered {offered}, but known_hosts has {listed}. "
            f"Either the host was reinstalled or someone is intercepting the connection; "
            f"check out of band before replacing the known key",
            host=host,
        )

    def key_types(self, name: str) -> list[str]:
        """Key types known for ``name`` (to ask the server for those first)."""
        return sorted({k.get_name() for _, k in self.keys_for(name)})


def _prefer_key_types(transport: paramiko.Transport, types: Sequence[str]) -> None:
    if not types:
        return
    wanted: list[str] = []
    for t in types:
        wanted.extend(["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"] if t == "ssh-rsa" else [t])
    opts = transport.get_security_options()
    available = list(opts.key_types)
    first = [t for t in wanted if t in available]
    opts.key_types = first + [t for t in available if t not in first]


# ---------------------------------------------------------------- connecting


def classify_socket_error(
    exc: BaseException, *, host: str, address: str, port: int, timeout: float
) -> ConnectError:
    """Turn a socket-level failure into the matching :class:`ConnectError` (pure; unit-tested)."""
    target = f"{address}:{port}"
    if isinstance(exc, socket.gaierror):
        return NameUnresolved(f"cannot resolve {address!r}: {exc.strerror or exc}", host=host)
    if isinstance(exc, TimeoutError | socket.timeout):
        return ConnectTimeout(
            f"TCP connect to {target} timed out after {timeout:g}s (host down, "
            f"or a firewall drops the packets)",
            host=host,
        )
    if isinstance(exc, ConnectionRefusedError):
        return ConnectRefused(
            f"connection refused by {target} (host is up but nothing listens on port "
            f"{port}: is sshd running?)",
            host=host,
        )
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN):
        return NoRoute(f"no route to {target} ({os.strerror(exc.errno)})", host=host)
    return ConnectError(f"cannot connect to {target}: {exc}", host=host)


def tcp_connect(host: Host, timeout: float) -> socket.socket:
    """Open the TCP connection to the host's SSH port, or raise the classified :class:`ConnectError`."""
    try:
        return socket.create_connection((host.address, host.port), timeout=timeout)
    except OSError as exc:
        raise classify_socket_error(
            exc, host=host.name, address=host.address, port=host.port, timeout=timeout
        ) from exc


def _identities(host: Host) -> tuple[list[tuple[str, paramiko.PKey]], list[str]]:
    """Keys to offer: the inventory's key file (or the default ~/.ssh/id_*), then ssh-agent's."""
    keys: list[tuple[str, paramiko.PKey]] = []
    problems: list[str] = []
    paths = (
        [host.key_file]
        if host.key_file
        else [p for p in DEFAULT_IDENTITIES if Path(p).expanduser().is_file()]
    )
    for raw in paths:
        assert raw is not None
        path = Path(raw).expanduser()
        if not path.is_file():
            problems.append(f"private key file {path} (ansible_ssh_private_key_file) does not exist")
            continue
        try:
            keys.append((str(path), paramiko.PKey.from_path(path)))
        except paramiko.PasswordRequiredException:
            problems.append(f"private key {path} is passphrase-protected; add it to ssh-agent")
        except (paramiko.SSHException, OSError, ValueError) as exc:
            problems.append(f"cannot read private key {path}: {exc}")
    if os.environ.get("SSH_AUTH_SOCK"):
        with contextlib.suppress(paramiko.SSHException, OSError):
            keys.extend((f"agent key {fingerprint(k)}", k) for k in paramiko.Agent().get_keys())
    return keys, problems


def _authenticate(t: paramiko.Transport, host: Host) -> str:
    user = host.user or getpass.getuser()
    keys, problems = _identities(host)
    refused: list[str] = []
    for label, key in keys:
        try:
            t.auth_publickey(user, key)
        except paramiko.BadAuthenticationType as exc:
            raise AuthFailed(
                f"{host.address} does not accept public-key authentication for {user!r} "
                f"(allowed: {', '.join(exc.allowed_types)})",
                host=host.name,
            ) from exc
        except paramiko.AuthenticationException:
            refused.append(label)
            continue
        except paramiko.SSHException as exc:
            raise AuthFailed(f"authentication as {user!r} broke off: {exc}", host=host.name) from exc
        if t.is_authenticated():
            return label
    detail = "; ".join([*(f"refused {r}" for r in refused), *problems]) or "no private key to offer"
    raise AuthFailed(f"authentication as {user!r} on {host.address} failed: {detail}", host=host.name)


def connect(host: Host, timeout: float = DEFAULT_CONNECT_TIMEOUT) -> paramiko.Transport:
    """Open an authenticated SSH transport to ``host`` with host-key checking on.

    Raises a :class:`ConnectError` subclass naming exactly what failed.
    """
    sock = tcp_connect(host, timeout)
    t = paramiko.Transport(sock)
    try:
        t.banner_timeout = timeout
        t.auth_timeout = timeout
        name = host_key_name(host.address, host.port)
        extra = host.vars.get("labctl_known_hosts")
        required = [Path(str(p)).expanduser() for p in ([extra] if isinstance(extra, str) else extra or [])]
        known = KnownHosts(known_hosts_files(host), required)
        _prefer_key_types(t, known.key_types(name))
        try:
            t.start_client(timeout=timeout)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            msg = str(exc) or type(exc).__name__
            if "banner" in msg.lower():
                msg += f" (no SSH server answered on {host.address}:{host.port} within {timeout:g}s)"
            raise SshHandshakeError(
                f"SSH handshake with {host.address}:{host.port} failed: {msg}", host=host.name
            ) from exc
        if not (t.is_active() and t.initial_kex_done):  # start_client returns quietly on its own timeout
            raise SshHandshakeError(
                f"SSH handshake with {host.address}:{host.port} timed out after {timeout:g}s "
                f"(TCP connects, but no SSH server answers)",
                host=host.name,
            )
        known.verify(host.name, name, t.get_remote_server_key())
        _authenticate(t, host)
        t.set_keepalive(15)
        return t
    except BaseException:
        t.close()
        raise


# ---------------------------------------------------------------- SSH


class SshRunner(Runner):
    """A host over one SSH transport (paramiko): one channel per command, SFTP for files."""

    def __init__(self, host: Host, transport: paramiko.Transport) -> None:
        self.name = host.name
        self.host = host
        self._t = transport
        self._sftp: paramiko.SFTPClient | None = None
        self._sftp_lock = threading.Lock()

    @classmethod
    def connect(cls, host: Host, timeout: float = DEFAULT_CONNECT_TIMEOUT) -> SshRunner:
        """Connect (host keys checked, key authentication) and return the runner."""
        return cls(host, connect(host, timeout))

    @property
    def server_key(self) -> paramiko.PKey:
        """The host key the server proved it holds (checked against known_hosts at connect)."""
        return self._t.get_remote_server_key()

    def run(
        self,
        argv: Sequence[str],
        timeout: float = 60.0,
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        check: bool = False,
    ) -> Completed:
        """Run ``argv`` on the host (one quoted command line) and wait for it."""
        res = self._exec(command_line(argv, env, cwd), timeout, argv)
        if check and res.rc != 0:
            raise CommandFailed(self.name, argv, res)
        return res

    def _exec(self, command: str, timeout: float, argv: Sequence[str]) -> Completed:
        try:
            chan = self._t.open_session(timeout=timeout)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise RemoteError(f"cannot open an SSH channel: {exc}", host=self.name) from exc
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + timeout
        try:
            chan.exec_command(command)
            chan.shutdown_write()
            while True:
                while chan.recv_ready():
                    out += chan.recv(65536)
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                if (
                    chan.exit_status_ready()
                    and chan.eof_received
                    and not (chan.recv_ready() or chan.recv_stderr_ready())
                ):
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise CommandTimeout(
                        f"{shlex.join(argv)} did not finish within {timeout:g}s", host=self.name
                    )
                if not self._t.is_active():
                    raise RemoteError(f"connection lost while running {shlex.join(argv)}", host=self.name)
                select.select([chan], [], [], min(0.1, remaining))
            rc = chan.recv_exit_status()
        finally:
            chan.close()
        return Completed(rc, out.decode(errors="replace"), err.decode(errors="replace"))

    def _sftp_client(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            try:
                self._sftp = paramiko.SFTPClient.from_transport(self._t)
            except paramiko.SSHException as exc:
                raise RemoteError(
                    f"SFTP is not available: {exc} (is the sftp Subsystem configured?)", host=self.name
                ) from exc
            if self._sftp is None:
                raise RemoteError("SFTP is not available", host=self.name)
        return self._sftp

    def read_bytes(self, path: str, offset: int = 0) -> bytes:
        """Read a file on the host from ``offset`` (SFTP)."""
        with self._sftp_lock:
            sftp = self._sftp_client()
            try:
                with sftp.open(path, "rb") as f:
                    f.seek(offset)
                    return f.read()
            except OSError as exc:
                if exc.errno == errno.ENOENT or isinstance(exc, FileNotFoundError):
                    raise FileNotFoundError(errno.ENOENT, f"{self.name}:{path} does not exist") from exc
                raise

    def put(self, local_path: str | Path, remote_path: str, mode: int | None = None) -> None:
        """Upload atomically: to a temporary name, chmod, then rename over ``remote_path``."""
        tmp = f"{remote_path}.labctl-tmp"
        with self._sftp_lock:
            sftp = self._sftp_client()
            sftp.put(str(local_path), tmp)
            sftp.chmod(tmp, mode if mode is not None else os.stat(local_path).st_mode & 0o7777)
            sftp.posix_rename(tmp, remote_path)

    def get(self, remote_path: str, local_path: str | Path) -> None:
        """Download to a temporary name next to ``local_path``, then rename."""
        tmp = f"{local_path}.labctl-tmp"
        with self._sftp_lock:
            self._sftp_client().get(remote_path, tmp)
        os.replace(tmp, local_path)

    def close(self) -> None:
        """Close SFTP and the transport."""
        with self._sftp_lock:
            if self._sftp is not None:
                with contextlib.suppress(Exception):
                    self._sftp.close()
                self._sftp = None
        self._t.close()


def runner_for(host: Host, timeout: float = DEFAULT_CONNECT_TIMEOUT) -> Runner:
    """The runner for ``host``: local for ``ansible_connection=local``, else a connected :class:`SshRunner`."""
    if host.is_local:
        return LocalRunner(host.name)
    return SshRunner.connect(host, timeout)
