#!/usr/bin/python
"""Ansible module: stop labctl's processes and remove what labctl put on a host.

- processes: each ``{pid, argv0}`` still alive whose ``/proc/PID/cmdline`` still
  starts with ``argv0`` gets SIGTERM, then SIGKILL after ``grace`` seconds. A pid now
  used by another program is left alone (reported ``not ours``).
- deployed root: removed only when it looks labctl-owned (see :func:`owned_dir_problem`).
- owned files: regular files or symlinks labctl created; directories are refused.

Problems are reported in ``labctl_problems`` rather than failing, so the other
teardown steps still run; the role fails the host afterwards if there were any.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import time

DOCUMENTATION = r"""
module: labctl_cleanup
short_description: Stop labctl processes, remove the deployed root and labctl-owned files
options:
  processes: {type: list, elements: dict, default: [], description: "[{pid, argv0, run_id}]"}
  process_root:
    type: str
    description: labctl's deployed root; a process started through an exec wrapper (numactl ...) matches
      when the program it became lives there.
  grace: {type: float, default: 10, description: Seconds between SIGTERM and SIGKILL.}
  deployed_root: {type: str, description: Directory labctl owns on the host.}
  artifacts: {type: dict, default: {}, description: "name -> {path, sha256} (removed when outside the root)"}
  owned_files: {type: list, elements: str, default: [], description: Files labctl created.}
"""

RETURN = r"""
labctl_return: {description: "process:<pid>, deployed, artifact:<name>, file:<path> -> result", type: dict, returned: always}
labctl_problems: {description: what could not be cleaned up, type: list, returned: always}
"""

PROTECTED = {
    "/",
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/home",
    "/lib",
    "/lib64",
    "/opt",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/srv",
    "/sys",
    "/tmp",
    "/usr",
    "/var",
    "/var/lib",
    "/var/tmp",
    "/usr/local",
}


def owned_dir_problem(path):
    """Why ``path`` must not be removed as labctl's deployed root (None: it may)."""
    if not path or not isinstance(path, str) or not os.path.isabs(path):
        return f"not an absolute path: {path!r}"
    norm = os.path.normpath(path)
    if norm in PROTECTED or norm.count("/") < 2:
        return f"refusing to remove {norm}: a system directory"
    base = os.path.basename(norm)
    if not (base == "labctl" or base.startswith(("labctl-", "labctl_", "labctl."))):
        return (
            f"refusing to remove {norm}: not a labctl-owned directory (its name must be labctl or labctl-*)"
        )
    if os.path.islink(norm) or (os.path.exists(norm) and os.path.realpath(norm) != norm):
        return f"refusing to remove {norm}: it is (or passes through) a symlink"
    return None


# Programs that exec() the command they are given: once they have, the pid's cmdline is
# the wrapped program's, no longer starting with the wrapper's argv0.
EXEC_WRAPPERS = {
    "numactl",
    "taskset",
    "chrt",
    "nice",
    "ionice",
    "env",
    "setsid",
    "nohup",
    "stdbuf",
    "prlimit",
}


def process_matches(cmdline, argv0, owned_root=None):
    """Whether a raw /proc/PID/cmdline still belongs to the program labctl started.

    It does when its first word is still ``argv0``; or, when ``argv0`` was an exec
    wrapper such as numactl, when the program it became lives under labctl's own
    deployed root (``owned_root``).
    """
    if not cmdline or not argv0:
        return False
    first = cmdline.split(b"\0", 1)[0].decode(errors="replace")
    if first == argv0 or first.split(" ", 1)[0] == argv0 or cmdline.startswith(argv0.encode() + b"\0"):
        return True
    if owned_root and os.path.basename(argv0) in EXEC_WRAPPERS:
        root = os.path.normpath(owned_root) + "/"
        return os.path.normpath(first).startswith(root) and owned_dir_problem(owned_root) is None
    return False


def _cmdline(pid):
    try:
        with open(f"/proc/{int(pid)}/cmdline", "rb") as f:
            return f.read()
    except (OSError, ValueError):
        return None


def stop_processes(procs, grace, check, owned_root=None):
    results, problems = {}, []
    targets = []
    for p in procs:
        pid, argv0 = p.get("pid"), p.get("argv0")
        key = f"process:{pid}"
        cmd = _cmdline(pid)
        if cmd is None or not cmd:
            results[key] = {"status": "gone", "argv0": argv0}
        elif not process_matches(cmd, argv0, owned_root):
            results[key] = {
                "status": "not ours",
                "argv0": argv0,
                "now": cmd.split(b"\0", 1)[0].decode(errors="replace"),
            }
        else:
            results[key] = {"status": "would stop" if check else "stopped", "argv0": argv0}
            targets.append((int(pid), argv0))
    if check or not targets:
        return results, problems
    # a pid counts as alive while it still runs what it ran when it matched (no pid-reuse kills)
    started = {pid: _cmdline(pid) for pid, _ in targets}

    def alive(pid):
        now = _cmdline(pid)
        return bool(now) and now == started[pid]

    for pid, _ in targets:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(pid) for pid, _ in targets):
        time.sleep(0.1)
    for pid, _ in targets:
        if alive(pid):
            results[f"process:{pid}"]["status"] = "killed"
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(alive(pid) for pid, _ in targets):
        time.sleep(0.1)
    for pid, argv0 in targets:
        if alive(pid):
            results[f"process:{pid}"]["status"] = "still running"
            problems.append(f"process {pid} ({argv0}) survived SIGKILL")
    return results, problems


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def remove_deployed(root, artifacts, check):
    results, problems = {}, []
    if root:
        why = owned_dir_problem(root)
        if why:
            results["deployed"] = {"status": "refused", "root": root, "reason": why}
            problems.append(why)
        elif not os.path.lexists(root):
            results["deployed"] = {"status": "absent", "root": root}
        else:
            results["deployed"] = {"status": "would remove" if check else "removed", "root": root}
            if not check:
                try:
                    shutil.rmtree(root)
                except OSError as exc:
                    results["deployed"]["status"] = "error"
                    problems.append(f"removing {root}: {exc.strerror or exc}")
    norm_root = os.path.normpath(root) + "/" if root else None
    for name, art in sorted((artifacts or {}).items()):
        path = (art or {}).get("path") if isinstance(art, dict) else None
        if not path or (norm_root and os.path.normpath(path).startswith(norm_root)):
            continue  # inside the root: gone with it
        key = f"artifact:{name}"
        if not os.path.lexists(path):
            results[key] = {"status": "absent", "path": path}
        elif not os.path.isfile(path) or (art.get("sha256") and _sha256(path) != art["sha256"]):
            # only delete exactly what labctl deployed
            results[key] = {"status": "left (changed since deploy)", "path": path}
        else:
            results[key] = {"status": "would remove" if check else "removed", "path": path}
            if not check:
                os.unlink(path)
    return results, problems


def remove_files(paths, check):
    results, problems = {}, []
    for path in paths or []:
        key = f"file:{path}"
        if not isinstance(path, str) or not os.path.isabs(path):
            results[key] = {"status": "refused"}
            problems.append(f"owned file {path!r} is not an absolute path")
        elif not os.path.lexists(path):
            results[key] = {"status": "absent"}
        elif os.path.isdir(path) and not os.path.islink(path):
            results[key] = {"status": "refused"}
            problems.append(f"owned file {path} is a directory; not removed")
        else:
            results[key] = {"status": "would remove" if check else "removed"}
            if not check:
                try:
                    os.unlink(path)
                except OSError as exc:
                    results[key]["status"] = "error"
                    problems.append(f"removing {path}: {exc.strerror or exc}")
    return results, problems


def main():
    from ansible.module_utils.basic import AnsibleModule

    module = AnsibleModule(
        argument_spec={
            "processes": {"type": "list", "elements": "dict", "default": []},
            "process_root": {"type": "str", "default": None},
            "grace": {"type": "float", "default": 10.0},
            "deployed_root": {"type": "str", "default": None},
            "artifacts": {"type": "dict", "default": {}},
            "owned_files": {"type": "list", "elements": "str", "default": []},
        },
        supports_check_mode=True,
    )
    p = module.params
    check = module.check_mode
    ret, problems = {}, []
    for results, probs in (
        stop_processes(p["processes"], p["grace"], check, p["process_root"]),
        remove_deployed(p["deployed_root"], p["artifacts"], check),
        remove_files(p["owned_files"], check),
    ):
        ret.update(results)
        problems.extend(probs)
    changed = any(
        r.get("status") in ("stopped", "killed", "removed", "would stop", "would remove")
        for r in ret.values()
    )
    module.exit_json(
        changed=changed,
        labctl_return=ret,
        labctl_problems=problems,
        msg="; ".join(problems) if problems else "clean",
    )


if __name__ == "__main__":
    main()
