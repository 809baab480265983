"""Sandbox hosts: real SSH hosts on this machine, one network namespace each (root only).

A sandbox lives in ``<data_dir>/sandbox/`` and owns one *slot* ``k`` on the machine:

- a bridge ``lcsb-<k>-br`` in the root namespace with ``198.18.k.1/24`` (k ≥ 256 moves
  into 198.19.x.0/24: the whole 198.18.0.0/15 benchmarking range is used, nothing else);
- per host ``sbx-<i>``: a network namespace ``lcsb-<k>-<i>`` holding ``eth0``
  (``198.18.k.(10+i)``) and ``lo``, a veth peer ``lcsb-<k>-<i>v`` on the bridge, and an
  ``sshd`` started in that namespace inside its own UTS namespace (hostname ``sbx-<i>``),
  with its own config, fresh host key and pid file;
- one client key pair, a known_hosts file listing every host's key (host-key checking
  stays on in the sandbox) and an Ansible inventory.

Slots let several sandboxes (several data dirs) coexist: a slot is taken by creating
its bridge (atomic in the kernel), and the bridge's alias names the owning data dir.
Hosts share this machine's kernel and file system: installing a package on one
installs it on all, and tuning one tunes the machine.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from labctl.errors import EnvironmentProblem, InputError
from labctl.state import atomic_write_json, read_json

SANDBOX_RANGE = ipaddress.IPv4Network("198.18.0.0/15")
MAX_SLOTS = 512
MAX_HOSTS = 200
FIRST_HOST_OCTET = 11
SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"
PRIVSEP_DIR = Path("/run/sshd")
NETNS_DIR = Path("/run/netns")
HOST_NAME = re.compile(r"sbx-(\d+)\Z")
_UNSAFE_PATH = re.compile(r"[\s\"'%\\#]")
Step = Callable[[str], None]


# ---------------------------------------------------------------- naming (pure)


def subnet_for(slot: int) -> ipaddress.IPv4Network:
    """The /24 of slot ``slot`` inside 198.18.0.0/15."""
    if not 0 <= slot < MAX_SLOTS:
        raise ValueError(f"slot {slot} out of range 0..{MAX_SLOTS - 1}")
    base = int(SANDBOX_RANGE.network_address) + slot * 256
    return ipaddress.IPv4Network((base, 24))


def bridge_name(slot: int) -> str:
    """Name of the slot's bridge in the root namespace."""
    return f"lcsb-{slot}-br"


@dataclass(frozen=True)
class HostPlan:
    """Names and address of sandbox host ``index`` in ``slot``."""

    name: str
    index: int
    slot: int
    netns: str
    veth: str
    address: str

    @classmethod
    def make(cls, slot: int, index: int) -> HostPlan:
        """The plan of host ``sbx-<index>`` (1-based) in ``slot``."""
        if not 1 <= index <= MAX_HOSTS:
            raise ValueError(f"host index {index} out of range 1..{MAX_HOSTS}")
        addr = subnet_for(slot)[FIRST_HOST_OCTET - 1 + index]
        return cls(f"sbx-{index}", index, slot, f"lcsb-{slot}-{index}", f"lcsb-{slot}-{index}v", str(addr))


def owner_marker(data_dir: Path) -> str:
    """The bridge alias that says which data dir owns a slot (IFALIASZ allows 255 bytes)."""
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:16]
    return f"labctl-sandbox {digest} {data_dir}"[:255]


def marker_digest(alias: str) -> str | None:
    """The data-dir digest in a bridge alias written by :func:`owner_marker`."""
    parts = alias.split(" ", 2)
    return parts[1] if len(parts) >= 2 and parts[0] == "labctl-sandbox" else None


# ---------------------------------------------------------------- files (pure rendering)


@dataclass(frozen=True)
class SandboxPaths:
    """Everything of one sandbox, under ``<data_dir>/sandbox`` (0700)."""

    data_dir: Path

    @property
    def root(self) -> Path:
        return self.data_dir / "sandbox"

    @property
    def state(self) -> Path:
        return self.root / "sandbox.json"

    @property
    def inventory(self) -> Path:
        return self.root / "inventory.yml"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    @property
    def client_key(self) -> Path:
        return self.root / "id_ed25519"

    @property
    def authorized_keys(self) -> Path:
        return self.root / "authorized_keys"

    def host_dir(self, name: str) -> Path:
        return self.root / "hosts" / name

    def sshd_config(self, name: str) -> Path:
        return self.host_dir(name) / "sshd_config"

    def host_key(self, name: str) -> Path:
        return self.host_dir(name) / "ssh_host_ed25519_key"

    def pid_file(self, name: str) -> Path:
        return self.host_dir(name) / "sshd.pid"

    def log_file(self, name: str) -> Path:
        return self.host_dir(name) / "sshd.log"


def render_sshd_config(paths: SandboxPaths, plan: HostPlan) -> str:
    """The sshd_config of one sandbox host."""
    return "\n".join(
        [
            f"# sandbox host {plan.name}, written by labctl sandbox up",
            f"ListenAddress {plan.address}:22",
            f"HostKey {paths.host_key(plan.name)}",
            f"PidFile {paths.pid_file(plan.name)}",
            f"AuthorizedKeysFile {paths.authorized_keys}",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            # PAM's session modules expect a real login environment; key auth needs none of it
            "UsePAM no",
            # sshd would refuse keys below a world-writable /tmp even with the sticky bit;
            # labctl checks the directory chain itself instead (see check_private_dir)
            "StrictModes no",
            "X11Forwarding no",
            "AllowAgentForwarding no",
            "PermitTunnel no",
            "PrintMotd no",
            "UseDNS no",
            "LogLevel VERBOSE",
            "MaxStartups 100:30:200",
            "MaxSessions 100",
            "ClientAliveInterval 15",
            f"Subsystem sftp {SFTP_SERVER}",
            "",
        ]
    )


def render_known_hosts(entries: dict[str, str]) -> str:
    """known_hosts lines from ``{address: "<type> <base64>"}``."""
    return "".join(f"{addr} {key}\n" for addr, key in sorted(entries.items(), key=lambda kv: kv[0]))


def render_inventory(paths: SandboxPaths, plans: list[HostPlan], numa_nodes: int) -> str:
    """The Ansible inventory of the sandbox: group ``sandbox`` with hosts ``sbx-1…``."""
    doc = {
        "sandbox": {
            "hosts": {p.name: {"ansible_host": p.address} for p in sorted(plans, key=lambda p: p.index)},
            "vars": {
                "ansible_user": "root",
                "ansible_port": 22,
                "ansible_ssh_private_key_file": str(paths.client_key),
                "ansible_ssh_common_args": (
                    f"-o UserKnownHostsFile={paths.known_hosts} -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes"
                ),
                # ansible-runner sets ANSIBLE_HOST_KEY_CHECKING=False unless told otherwise;
                # a host variable outranks that environment variable
                "ansible_host_key_checking": True,
                "ansible_python_interpreter": "/usr/bin/python3",
                "labctl_known_hosts": str(paths.known_hosts),
                "labctl_numa_nodes": numa_nodes,
                "labctl_role": "both",
                "labctl_sandbox": True,
            },
        }
    }
    head = "# Written by `labctl sandbox up`; rewritten on every change, removed by `labctl sandbox down`.\n"
    return head + yaml.safe_dump(doc, sort_keys=False)


def host_numa_nodes() -> int:
    """NUMA nodes of this machine (every sandbox host shares them)."""
    return max(1, len(glob.glob("/sys/devices/system/node/node[0-9]*")))


def check_private_dir(path: Path, allowed_uids: set[int]) -> None:
    """Refuse a sandbox directory that someone else could replace.

    sshd's StrictModes would reject any group/world-writable ancestor, even /tmp with
    its sticky bit; what matters is that nobody but root (or the sudo caller) can swap
    the directory or the authorized_keys in it. Sticky world-writable ancestors are fine.
    """
    for p in [path, *path.parents]:
        try:
            st = p.stat()
        except FileNotFoundError:
            continue
        if st.st_uid not in allowed_uids:
            raise EnvironmentProblem(
                f"{p} is owned by uid {st.st_uid}: that user could replace the sandbox's "
                f"authorized_keys; use a data dir owned by root"
            )
        writable = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if writable and not st.st_mode & stat.S_ISVTX:
            raise EnvironmentProblem(
                f"{p} is writable by others (mode {stat.filemode(st.st_mode)}): they could "
                f"replace the sandbox's authorized_keys; use a private data dir"
            )


# ---------------------------------------------------------------- system helpers


def _run(argv: list[str], *, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise EnvironmentProblem(f"`{' '.join(argv)}` failed: {(proc.stderr or proc.stdout).strip()}")
    return proc


def _ip_json(*args: str) -> list[dict[str, Any]]:
    proc = _run(["ip", "-j", *args], check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        return []
    data = json.loads(proc.stdout)
    return data if isinstance(data, list) else []


def link_exists(name: str) -> bool:
    """Whether a network link exists in the root namespace."""
    return Path("/sys/class/net", name).exists()


def netns_exists(name: str) -> bool:
    """Whether a named network namespace exists."""
    return (NETNS_DIR / name).exists()


def netns_pids(name: str) -> list[int]:
    """Processes inside a network namespace (``ip netns pids``)."""
    if not netns_exists(name):
        return []
    proc = _run(["ip", "netns", "pids", name], check=False)
    return [int(w) for w in proc.stdout.split() if w.isdigit()]


def _pid_alive(pid: int) -> bool:
    """True unless the process is gone or a zombie (init may take a while to reap daemons)."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat_line.rsplit(")", 1)[-1].split()[0] != "Z"


def kill_pids(pids: list[int], grace: float = 3.0) -> None:
    """SIGTERM, then SIGKILL whatever is left after ``grace`` seconds."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(_pid_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _tcp_open(address: str, port: int = 22, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def _write_if_changed(path: Path, text: str, mode: int = 0o600) -> bool:
    """Write ``text`` atomically unless the file already holds it; True if written."""
    with contextlib.suppress(FileNotFoundError):
        if path.read_text() == text:
            os.chmod(path, mode)
            return False
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return True


def _keygen(path: Path, comment: str) -> None:
    for p in (path, path.with_name(path.name + ".pub")):
        p.unlink(missing_ok=True)
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])


def _public_key(path: Path) -> str:
    """``<type> <base64>`` of an OpenSSH public key file (comment dropped)."""
    return " ".join(path.with_name(path.name + ".pub").read_text().split()[:2])


def require_root() -> None:
    """Raise :class:`EnvironmentProblem` unless running as root with the tools the sandbox needs."""
    if os.geteuid() != 0:
        raise EnvironmentProblem(
            "labctl sandbox needs root: it creates network namespaces, veth links and a "
            "bridge, and starts sshd; run it as root (e.g. with sudo)"
        )
    missing = [t for t in ("ip", "unshare", "ssh-keygen", "hostname") if shutil.which(t) is None]
    missing += [p for p in (SSHD, SFTP_SERVER) if not os.access(p, os.X_OK)]
    if missing:
        raise EnvironmentProblem(
            f"the sandbox needs {', '.join(missing)} (Debian: apt-get install iproute2 "
            f"openssh-server util-linux)"
        )


# ---------------------------------------------------------------- results


@dataclass
class UpResult:
    """What ``up`` produced; ``changes`` is empty when nothing had to be done."""

    inventory: Path
    hosts: list[str]
    addresses: dict[str, str]
    known_hosts: Path
    subnet: str
    slot: int
    changes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.changes)


@dataclass
class DownResult:
    """What ``down`` removed."""

    removed: list[str] = field(default_factory=list)


@dataclass
class HostStatus:
    """One sandbox host as it is now."""

    name: str
    address: str
    netns: bool
    sshd_pid: int | None
    reachable: bool

    @property
    def ok(self) -> bool:
        return self.netns and self.sshd_pid is not None and self.reachable


# ---------------------------------------------------------------- the sandbox


class Sandbox:
    """The sandbox of one data dir. All methods but :meth:`status` need root."""

    def __init__(self, data_dir: Path, on_step: Step | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.paths = SandboxPaths(self.data_dir)
        self._step = on_step or (lambda _msg: None)

    # --- state

    def _load(self) -> dict[str, Any]:
        doc = read_json(self.paths.state, None)
        return doc if isinstance(doc, dict) else {}

    def _save(self, doc: dict[str, Any]) -> None:
        atomic_write_json(self.paths.state, doc)
        os.chmod(self.paths.state, 0o600)

    def plans(self) -> list[HostPlan]:
        """The hosts recorded in the sandbox state (empty when there is no sandbox)."""
        doc = self._load()
        return [HostPlan(**h) for h in sorted(doc.get("hosts", {}).values(), key=lambda h: h["index"])]

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.data_dir, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # --- slot

    def _own_bridges(self) -> list[int]:
        digest = marker_digest(owner_marker(self.data_dir))
        found = []
        for link in _ip_json("link", "show", "type", "bridge"):
            m = re.fullmatch(r"lcsb-(\d+)-br", link.get("ifname", ""))
            if m and marker_digest(link.get("ifalias", "")) == digest:
                found.append(int(m.group(1)))
        return found

    def _bridge_is_ours(self, slot: int) -> bool:
        links = _ip_json("link", "show", "dev", bridge_name(slot))
        alias = links[0].get("ifalias", "") if links else ""
        return marker_digest(alias) == marker_digest(owner_marker(self.data_dir))

    def _ensure_bridge(self, recorded: int | None, changes: list[str]) -> int:
        """The slot of this sandbox: the recorded one if its bridge is still ours, else a free one."""
        if recorded is not None and link_exists(bridge_name(recorded)) and self._bridge_is_ours(recorded):
            return recorded
        own = self._own_bridges()  # state lost but the bridge survived: adopt it
        if own:
            return own[0]
        routes = _ip_json("-4", "route", "show", "table", "all")
        routed = [
            ipaddress.ip_network(r["dst"], strict=False)
            for r in routes
            if r.get("dst") not in (None, "default") and r.get("type", "unicast") == "unicast"
        ]
        order = ([recorded] if recorded is not None else []) + [k for k in range(MAX_SLOTS) if k != recorded]
        for k in order:
            net = subnet_for(k)
            if link_exists(bridge_name(k)) or any(net.overlaps(r) for r in routed):
                continue
            bridge_args = ["type", "bridge", "stp_state", "0", "forward_delay", "0"]
            proc = _run(["ip", "link", "add", "name", bridge_name(k), *bridge_args], check=False)
            if proc.returncode != 0:
                if "exists" in proc.stderr:
                    continue  # another sandbox took this slot a moment ago
                raise EnvironmentProblem(f"cannot create bridge {bridge_name(k)}: {proc.stderr.strip()}")
            _run(["ip", "link", "set", "dev", bridge_name(k), "alias", owner_marker(self.data_dir)])
            _run(["ip", "addr", "add", f"{net[1]}/24", "dev", bridge_name(k)])
            _run(["ip", "link", "set", "dev", bridge_name(k), "up"])
            changes.append(f"created bridge {bridge_name(k)} {net[1]}/24")
            return k
        raise EnvironmentProblem("no free sandbox slot in 198.18.0.0/15 (every /24 is taken or routed)")

    # --- hosts

    def _ensure_keys(self, changes: list[str]) -> None:
        if not self.paths.client_key.is_file():
            _keygen(self.paths.client_key, "labctl sandbox client")
            changes.append("generated the client key pair")
        if _write_if_changed(self.paths.authorized_keys, _public_key(self.paths.client_key) + "\n"):
            changes.append("wrote authorized_keys")

    def _ensure_net(self, plan: HostPlan, changes: list[str]) -> None:
        br = bridge_name(plan.slot)
        if not netns_exists(plan.netns):
            _run(["ip", "netns", "add", plan.netns])
            changes.append(f"{plan.name}: created netns {plan.netns}")
        if not link_exists(plan.veth):
            _run(["ip", "-n", plan.netns, "link", "del", "eth0"], check=False)
            peer = ["type", "veth", "peer", "name", "eth0", "netns", plan.netns]
            _run(["ip", "link", "add", "name", plan.veth, *peer])
            changes.append(f"{plan.name}: created veth {plan.veth}")
        veth = (_ip_json("link", "show", "dev", plan.veth) or [{}])[0]
        if veth.get("master") != br or "UP" not in veth.get("flags", []):
            _run(["ip", "link", "set", "dev", plan.veth, "master", br, "up"])
            changes.append(f"{plan.name}: attached {plan.veth} to {br}")
        inside = {i.get("ifname"): i for i in _ip_json("-n", plan.netns, "addr", "show")}
        eth0 = inside.get("eth0", {})
        addrs = {a.get("local") for a in eth0.get("addr_info", [])}
        if plan.address not in addrs:
            _run(["ip", "-n", plan.netns, "addr", "replace", f"{plan.address}/24", "dev", "eth0"])
            changes.append(f"{plan.name}: address {plan.address}")
        for dev in ("lo", "eth0"):
            if "UP" not in inside.get(dev, {}).get("flags", []):
                _run(["ip", "-n", plan.netns, "link", "set", "dev", dev, "up"])
                changes.append(f"{plan.name}: {dev} up")

    def _ensure_host_files(self, plan: HostPlan, changes: list[str]) -> bool:
        """Host key and sshd_config; True if either was (re)written."""
        d = self.paths.host_dir(plan.name)
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(d.parent, 0o700)
        os.chmod(d, 0o700)
        written = False
        if not self.paths.host_key(plan.name).is_file():
            _keygen(self.paths.host_key(plan.name), f"{plan.name} host key")
            changes.append(f"{plan.name}: generated host key")
            written = True
        if _write_if_changed(self.paths.sshd_config(plan.name), render_sshd_config(self.paths, plan)):
            changes.append(f"{plan.name}: wrote sshd_config")
            written = True
        return written

    def sshd_pid(self, plan: HostPlan) -> int | None:
        """Pid of the host's listening sshd, if it runs (checked against its netns and config)."""
        try:
            pid = int(self.paths.pid_file(plan.name).read_text().split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()  # sshd rewrites it: match a substring
            same_ns = os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(NETNS_DIR / plan.netns).st_ino
        except (OSError, ValueError, IndexError):
            return None
        if str(self.paths.sshd_config(plan.name)).encode() not in cmdline or not same_ns:
            return None
        return pid

    def _start_sshd(self, plan: HostPlan) -> None:
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
        conf, log = self.paths.sshd_config(plan.name), self.paths.log_file(plan.name)
        test = _run(["ip", "netns", "exec", plan.netns, SSHD, "-t", "-f", str(conf)], check=False)
        if test.returncode != 0:
            raise EnvironmentProblem(f"{plan.name}: sshd rejects {conf}: {test.stderr.strip()}")
        self.paths.pid_file(plan.name).unlink(missing_ok=True)
        # sshd daemonises itself; it keeps the UTS namespace (hostname) alive after `sh` exits
        script = 'hostname "$1" && exec "$2" -f "$3" -E "$4"'
        _run(
            [
                "ip",
                "netns",
                "exec",
                plan.netns,
                "unshare",
                "--uts",
                "sh",
                "-c",
                script,
                "sh",
                plan.name,
                SSHD,
                str(conf),
                str(log),
            ]
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.sshd_pid(plan) is not None and _tcp_open(plan.address, 22, 0.5):
                return
            time.sleep(0.05)
        tail = log.read_text()[-500:] if log.is_file() else ""
        raise EnvironmentProblem(
            f"{plan.name}: sshd did not start listening on {plan.address}:22 within 10s: {tail}"
        )

    def _ensure_sshd(self, plan: HostPlan, changes: list[str]) -> None:
        if self.sshd_pid(plan) is None:
            self._start_sshd(plan)
            changes.append(f"{plan.name}: started sshd")

    def _remove_host(self, plan: HostPlan) -> list[str]:
        removed = []
        pids = netns_pids(plan.netns)
        if pids:
            kill_pids(pids)
            removed.append(f"{plan.name}: stopped {len(pids)} process(es)")
        if netns_exists(plan.netns):
            _run(["ip", "netns", "del", plan.netns])
            removed.append(f"{plan.name}: netns {plan.netns}")
        if link_exists(plan.veth):
            _run(["ip", "link", "del", "dev", plan.veth], check=False)
            removed.append(f"{plan.name}: link {plan.veth}")
        if self.paths.host_dir(plan.name).exists():
            shutil.rmtree(self.paths.host_dir(plan.name))
        return removed

    # --- public API

    def up(self, n: int) -> UpResult:
        """Make the sandbox have exactly ``n`` running hosts; idempotent (no changes if it already has)."""
        if not 1 <= n <= MAX_HOSTS:
            raise InputError(f"--hosts must be between 1 and {MAX_HOSTS}", key="hosts")
        require_root()
        if _UNSAFE_PATH.search(str(self.data_dir)):
            raise InputError(
                "the data dir path must not contain blanks, quotes, '%', '#' or '\\' "
                "(it goes into sshd_config)",
                key="data_dir",
            )
        with self._locked():
            return self._up(n)

    def _up(self, n: int) -> UpResult:
        changes: list[str] = []
        allowed = {0} | ({int(os.environ["SUDO_UID"])} if os.environ.get("SUDO_UID", "").isdigit() else set())
        check_private_dir(self.data_dir, allowed)
        self.paths.root.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.paths.root, 0o700)
        doc = self._load()
        recorded = doc.get("slot")
        slot = self._ensure_bridge(recorded, changes)
        if recorded is not None and slot != recorded:
            # the old slot is gone or taken by another sandbox: start over in the new one
            for old in self.plans():
                if self._bridge_is_ours(old.slot) or not link_exists(bridge_name(old.slot)):
                    changes += self._remove_host(old)
            doc["hosts"] = {}
        doc = {
            **doc,
            "slot": slot,
            "bridge": bridge_name(slot),
            "subnet": str(subnet_for(slot)),
            "data_dir": str(self.data_dir),
            "hosts": doc.get("hosts", {}),
        }
        self._save(doc)  # from here on, `down` can find everything we create
        self._ensure_keys(changes)
        for old in self.plans():
            if old.index > n:
                self._step(f"removing {old.name}")
                changes += self._remove_host(old)
                doc["hosts"].pop(old.name, None)
                self._save(doc)
        wanted = [HostPlan.make(slot, i) for i in range(1, n + 1)]
        for plan in wanted:
            doc["hosts"][plan.name] = asdict(plan)
            self._save(doc)
            before = len(changes)
            self._ensure_net(plan, changes)
            running = self.sshd_pid(plan)
            if self._ensure_host_files(plan, changes) and running is not None:
                kill_pids([running])  # new key or config: restart
            self._ensure_sshd(plan, changes)
            if len(changes) > before:
                self._step(f"{plan.name} {plan.address} ready")
        keys = {p.address: _public_key(self.paths.host_key(p.name)) for p in wanted}
        if _write_if_changed(self.paths.known_hosts, render_known_hosts(keys)):
            changes.append("wrote known_hosts")
        if _write_if_changed(self.paths.inventory, render_inventory(self.paths, wanted, host_numa_nodes())):
            changes.append("wrote the inventory")
        return UpResult(
            self.paths.inventory,
            [p.name for p in wanted],
            {p.name: p.address for p in wanted},
            self.paths.known_hosts,
            str(subnet_for(slot)),
            slot,
            changes,
        )

    def down(self) -> DownResult:
        """Remove every host, link, process and file of this sandbox."""
        require_root()
        result = DownResult()
        if not self.data_dir.exists():
            return result
        with self._locked():
            # only slots whose bridge is ours (or gone): never touch another sandbox's hosts
            slots = set(self._own_bridges())
            for plan in self.plans():
                if plan.slot in slots or not link_exists(bridge_name(plan.slot)):
                    result.removed += self._remove_host(plan)
            for slot in sorted(slots):
                # hosts the state may not know about (e.g. a crash before it was saved)
                for ns in (
                    sorted(p.name for p in NETNS_DIR.glob(f"lcsb-{slot}-*")) if NETNS_DIR.is_dir() else []
                ):
                    m = re.fullmatch(rf"lcsb-{slot}-(\d+)", ns)
                    if m:
                        result.removed += self._remove_host(HostPlan.make(slot, int(m.group(1))))
                if link_exists(bridge_name(slot)):
                    _run(["ip", "link", "del", "dev", bridge_name(slot)])
                    result.removed.append(f"bridge {bridge_name(slot)}")
            if self.paths.root.exists():
                shutil.rmtree(self.paths.root)
                result.removed.append(f"files in {self.paths.root}")
        return result

    def status(self) -> list[HostStatus]:
        """Each recorded host: namespace present, sshd pid, port 22 answering."""
        out = []
        for plan in self.plans():
            pid = self.sshd_pid(plan)
            out.append(
                HostStatus(
                    plan.name,
                    plan.address,
                    netns_exists(plan.netns),
                    pid,
                    pid is not None and _tcp_open(plan.address, 22, 0.5),
                )
            )
        return out

    def plan_of(self, name: str) -> HostPlan:
        """The recorded host ``name``, or :class:`InputError`."""
        for plan in self.plans():
            if plan.name == name:
                return plan
        known = ", ".join(p.name for p in self.plans()) or "none: run `labctl sandbox up` first"
        raise InputError(f"no sandbox host {name!r} in {self.paths.root} (hosts: {known})", host=name)

    def stop_host(self, name: str, *, everything: bool = False) -> bool:
        """Stop the host's listening sshd (new connections are refused); ``everything``: every process in it.

        Returns False when there was nothing to stop.
        """
        require_root()
        plan = self.plan_of(name)
        with self._locked():
            pid = self.sshd_pid(plan)
            pids = netns_pids(plan.netns) if everything else ([pid] if pid is not None else [])
            kill_pids(pids)
            self.paths.pid_file(plan.name).unlink(missing_ok=True)
            return bool(pids)

    def start_host(self, name: str) -> bool:
        """Start the host's sshd again; False if it was already running."""
        require_root()
        plan = self.plan_of(name)
        with self._locked():
            if self.sshd_pid(plan) is not None:
                return False
            self._start_sshd(plan)
            return True
