#!/usr/bin/python
"""Ansible module: read, apply, verify and restore a list of kernel knob specs.

Specs come from labctl's catalog (labctl/tuning/catalog.py); this file implements
each knob *kind* once. All host access goes through :class:`System`, so labctl's
unit tests drive the same code against a simulated kernel. Nothing here writes a
persistent configuration file except the labctl-owned limits.d file of the
``limits_file`` kind: sysctls are written to /proc/sys directly (runtime only).

Results are returned in ``labctl_return`` as ``{"kernel": release, "knob:<id>": {...}}``
so that several calls in one play (one per role) never overwrite each other.
"""

from __future__ import annotations

import contextlib
import glob
import grp
import os
import platform
import re
import subprocess
import tempfile
import time

DOCUMENTATION = r"""
module: labctl_knobs
short_description: Read, apply, verify and restore labctl tuning knobs
description:
  - C(read) reports each knob's current value, whether it exists on this host and what applying would do.
  - C(apply) writes the C(wanted) values in the given order, then reads every knob back.
  - C(restore) writes the C(target) values in the given order, reads back, retries once, and reports problems
    in C(labctl_problems) instead of failing, so a teardown can finish its other steps.
options:
  action: {type: str, required: true, choices: [read, apply, restore], description: What to do.}
  knobs: {type: list, elements: dict, required: true, description: Knob specs from labctl's catalog, in order.}
  pause_after_first_write: {type: float, default: 0, description: TEST ONLY seconds to sleep after the first write.}
"""

RETURN = r"""
labctl_return: {description: "kernel release and knob:<id> -> per-knob result", type: dict, returned: always}
labctl_problems: {description: knobs that could not be restored (restore only), type: list, returned: always}
"""


class KnobError(Exception):
    """A knob could not be read or written; the message names the knob."""


class System:
    """Every access to the host. Tests substitute a fake with the kernel's quirks."""

    def read(self, path):
        try:
            with open(path) as f:
                return f.read()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def write(self, path, text):
        # one write() call: /proc/sys and sysfs parse the whole buffer at once
        with open(path, "w") as f:
            f.write(text)

    def write_file(self, path, text):
        d = os.path.dirname(path)
        fd, tmp = tempfile.mkstemp(prefix=".labctl.", dir=d)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def remove(self, path):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    def exists(self, path):
        return os.path.exists(path)

    def writable(self, path):
        return os.access(path, os.W_OK)

    def glob(self, pattern):
        return glob.glob(pattern)

    def run(self, argv):
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return 127, "", str(exc)
        return p.returncode, p.stdout, p.stderr

    def kernel_release(self):
        return platform.release()

    def gid_of(self, name):
        try:
            return grp.getgrnam(name).gr_gid
        except KeyError:
            return None

    def sleep(self, seconds):
        time.sleep(seconds)


# ----------------------------------------------------------------- pure helpers


def kernel_version(release):
    """'6.18.44-fc-v669' -> (6, 18, 44); '5.18' -> (5, 18)."""
    m = re.match(r"(\d+(?:\.\d+)*)", release or "")
    return tuple(int(x) for x in m.group(1).split(".")) if m else ()


def normalise(text):
    """A /proc/sys value as Python: '0\\n' -> 0, 'a\\tb' -> 'a b'."""
    s = " ".join((text or "").split())
    return int(s) if re.fullmatch(r"-?\d+", s) else s


def parse_bracketed(text):
    """'always [madvise] never' -> ('madvise', ['always', 'madvise', 'never'])."""
    words = (text or "").split()
    selected = None
    options = []
    for w in words:
        if w.startswith("[") and w.endswith("]"):
            w = w[1:-1]
            selected = w
        options.append(w)
    return selected, options


def sysctl_path(name):
    return "/proc/sys/" + name.replace(".", "/")


def cpu_sort_key(path):
    m = re.search(r"/cpu(\d+)/", path)
    return int(m.group(1)) if m else -1


def parse_limits(text, item):
    """The value set for ``item`` in a limits.conf-style text (None when not set)."""
    for line in (text or "").splitlines():
        parts = line.split("#", 1)[0].split()
        if len(parts) == 4 and parts[2] == item:
            return normalise(parts[3])
    return None


def limits_text(spec, value):
    lines = [f"# Written by labctl (tuning knob {spec['id']}); `labctl teardown` removes this file."]
    for domain in spec.get("domains") or ["*"]:
        for typ in ("soft", "hard"):
            lines.append(f"{domain} {typ} {spec['item']} {value}")
    return "\n".join(lines) + "\n"


def reading(available, value=None, reason="", detail=None, noop=False):
    return {"available": available, "value": value, "reason": reason, "detail": detail or {}, "noop": noop}


# ------------------------------------------------------------------ kinds


class Kind:
    """How to read, write and compare one kind of knob."""

    def read(self, sys, spec):
        raise NotImplementedError

    def write(self, sys, spec, value, detail):
        raise NotImplementedError

    def equal(self, spec, rd, value, detail):
        return rd["value"] == value

    def check_wanted(self, sys, spec, rd, wanted):
        """(resolved wanted value, error or None) before anything is written."""
        return wanted, None


class Sysctl(Kind):
    def read(self, sys, spec):
        path = sysctl_path(spec["name"])
        text = sys.read(path)
        if text is None:
            return reading(False, reason=f"{path} does not exist on kernel {sys.kernel_release()}")
        since = spec.get("noop_since")
        if since and kernel_version(sys.kernel_release()) >= kernel_version(since):
            return reading(
                True,
                normalise(text),
                noop=True,
                detail={"path": path},
                reason=f"kernels >= {since} accept writes but ignore them: read, never written",
            )
        return reading(True, normalise(text), detail={"path": path})

    def write(self, sys, spec, value, detail):
        sys.write(sysctl_path(spec["name"]), f"{value}\n")

    def check_wanted(self, sys, spec, rd, wanted):
        if spec.get("resolve") == "group" and isinstance(wanted, str):
            gid = sys.gid_of(wanted)
            if gid is None:
                return wanted, f"group {wanted!r} does not exist on this host"
            return gid, None
        return wanted, None

    def writable(self, sys, spec):
        return sys.writable(sysctl_path(spec["name"]))


class SysfsBracket(Kind):
    def read(self, sys, spec):
        text = sys.read(spec["path"])
        if text is None:
            return reading(False, reason=f"{spec['path']} does not exist on this host")
        selected, options = parse_bracketed(text)
        return reading(True, selected, detail={"options": options, "path": spec["path"]})

    def write(self, sys, spec, value, detail):
        sys.write(spec["path"], f"{value}\n")

    def check_wanted(self, sys, spec, rd, wanted):
        options = rd["detail"].get("options") or []
        if options and wanted not in options:
            return wanted, f"{wanted!r} is not offered by {spec['path']} (offers: {', '.join(options)})"
        return wanted, None

    def writable(self, sys, spec):
        return sys.writable(spec["path"])


GOVERNOR_GLOB = "/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_governor"


class Governor(Kind):
    """Per-CPU cpufreq governor; the value is {"cpuN": governor} for every CPU that has one."""

    def _files(self, sys):
        return sorted(sys.glob(GOVERNOR_GLOB), key=cpu_sort_key)

    def read(self, sys, spec):
        files = self._files(sys)
        if not files:
            return reading(
                False, reason="no cpufreq scaling_governor on this host (virtual machine or no driver)"
            )
        value = {}
        offered = set()
        for f in files:
            cpu = f"cpu{cpu_sort_key(f)}"
            value[cpu] = (sys.read(f) or "").strip()
            avail = sys.read(f.replace("scaling_governor", "scaling_available_governors"))
            offered.update((avail or "").split())
        return reading(True, value, detail={"offered": sorted(offered)})

    def write(self, sys, spec, value, detail):
        for f in self._files(sys):
            cpu = f"cpu{cpu_sort_key(f)}"
            if isinstance(value, dict):
                if value.get(cpu):
                    sys.write(f, f"{value[cpu]}\n")
            else:
                sys.write(f, f"{value}\n")

    def equal(self, spec, rd, value, detail):
        current = rd["value"] or {}
        if isinstance(value, dict):
            return all(current.get(c) == v for c, v in value.items() if c in current)
        return bool(current) and all(v == value for v in current.values())

    def check_wanted(self, sys, spec, rd, wanted):
        offered = rd["detail"].get("offered") or []
        if offered and wanted not in offered:
            return wanted, f"governor {wanted!r} is not offered here (offers: {', '.join(offered)})"
        return wanted, None

    def writable(self, sys, spec):
        return all(sys.writable(f) for f in self._files(sys))


TURBO_FILES = (
    # path, raw value meaning "turbo on"
    ("/sys/devices/system/cpu/intel_pstate/no_turbo", "0"),
    ("/sys/devices/system/cpu/cpufreq/boost", "1"),
)


class Turbo(Kind):
    def _file(self, sys, detail=None):
        want = (detail or {}).get("path")
        for path, on in TURBO_FILES:
            if (want is None or path == want) and sys.read(path) is not None:
                return path, on
        return None, None

    def read(self, sys, spec):
        path, on = self._file(sys)
        if path is None:
            return reading(False, reason="no intel_pstate/no_turbo or cpufreq/boost on this host")
        raw = (sys.read(path) or "").strip()
        return reading(True, "on" if raw == on else "off", detail={"path": path})

    def write(self, sys, spec, value, detail):
        path, on = self._file(sys, detail)
        if path is None:
            path, on = self._file(sys)
        if path is None:
            raise KnobError("no turbo control file")
        off = "1" if on == "0" else "0"
        sys.write(path, (on if value == "on" else off) + "\n")

    def writable(self, sys, spec):
        path, _ = self._file(sys)
        return path is not None and sys.writable(path)


class Service(Kind):
    """A systemd unit's running state. Start/stop only: the boot-time enablement is left alone."""

    def read(self, sys, spec):
        if not sys.exists("/run/systemd/system"):
            return reading(False, reason="systemd is not running on this host")
        for unit in spec["units"]:
            rc, out, _ = sys.run(
                ["systemctl", "show", unit, "--property=LoadState", "--property=ActiveState"]
            )
            props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
            if rc == 0 and props.get("LoadState") not in (None, "", "not-found"):
                active = props.get("ActiveState") in ("active", "activating", "reloading")
                return reading(True, "running" if active else "stopped", detail={"unit": unit})
        return reading(False, reason=f"no unit installed ({', '.join(spec['units'])})")

    def write(self, sys, spec, value, detail):
        unit = detail.get("unit") or spec["units"][0]
        rc, _, err = sys.run(["systemctl", "start" if value == "running" else "stop", unit])
        if rc != 0:
            raise KnobError(f"systemctl {'start' if value == 'running' else 'stop'} {unit}: {err.strip()}")

    def writable(self, sys, spec):
        return True


class SysctlPair(Kind):
    """vm.dirty_bytes / vm.dirty_ratio: writing one zeroes the other; the value names the active member."""

    def read(self, sys, spec):
        vals = {}
        for name in spec["members"]:
            text = sys.read(sysctl_path(name))
            if text is None:
                return reading(
                    False, reason=f"{sysctl_path(name)} does not exist on kernel {sys.kernel_release()}"
                )
            vals[name] = normalise(text)
        first, second = spec["members"]
        active = first if vals[first] != 0 else second
        return reading(True, {active: vals[active]}, detail={"raw": vals})

    def write(self, sys, spec, value, detail):
        if not isinstance(value, dict) or len(value) != 1:
            raise KnobError(f"pair value must name one member, got {value!r}")
        ((name, v),) = value.items()
        if name not in spec["members"]:
            raise KnobError(f"{name} is not a member of {spec['id']}")
        # only the member that is (to be) active is written: 0 to the other is EINVAL or a lie
        sys.write(sysctl_path(name), f"{v}\n")

    def writable(self, sys, spec):
        return all(sys.writable(sysctl_path(n)) for n in spec["members"])


class LimitsFile(Kind):
    """A labctl-owned limits.d file; its absence is a value (None)."""

    def read(self, sys, spec):
        d = os.path.dirname(spec["path"])
        if not sys.exists(d):
            return reading(False, reason=f"{d} does not exist (no pam_limits)")
        text = sys.read(spec["path"])
        if text is None:
            return reading(True, None, detail={"content": None})
        value = parse_limits(text, spec["item"])
        return reading(True, value if value is not None else "custom", detail={"content": text})

    def write(self, sys, spec, value, detail):
        if value is None:
            sys.remove(spec["path"])
        elif detail.get("content") is not None:
            sys.write_file(spec["path"], detail["content"])
        else:
            sys.write_file(spec["path"], limits_text(spec, value))

    def equal(self, spec, rd, value, detail):
        if value is None:
            return rd["value"] is None
        if detail.get("content") is not None:
            return rd["detail"].get("content") == detail["content"]
        return rd["value"] == value

    def writable(self, sys, spec):
        return sys.writable(os.path.dirname(spec["path"]))


KINDS = {
    "sysctl": Sysctl(),
    "sysfs_bracket": SysfsBracket(),
    "cpufreq_governor": Governor(),
    "cpu_turbo": Turbo(),
    "service": Service(),
    "sysctl_pair": SysctlPair(),
    "limits_file": LimitsFile(),
}


def kind_of(spec):
    kind = KINDS.get(spec.get("kind"))
    if kind is None:
        raise KnobError(f"{spec.get('id')}: unknown knob kind {spec.get('kind')!r}")
    return kind


def read_knob(sys, spec):
    try:
        return kind_of(spec).read(sys, spec)
    except OSError as exc:
        raise KnobError(f"{spec['id']}: cannot read: {exc.strerror or exc}") from exc


def write_knob(sys, spec, value, detail):
    try:
        kind_of(spec).write(sys, spec, value, detail or {})
    except OSError as exc:
        raise KnobError(f"{spec['id']}: writing {value!r} failed: {exc.strerror or exc}") from exc
    except KnobError as exc:
        raise KnobError(f"{spec['id']}: {exc}") from exc


# ------------------------------------------------------------------ actions


def do_read(sys, knobs):
    """Current values and what applying ``wanted`` would do; never writes."""
    results = {}
    for spec in knobs:
        rd = read_knob(sys, spec)
        res = dict(rd)
        if rd["available"] and not rd["noop"] and "wanted" in spec:
            kind = kind_of(spec)
            wanted, err = kind.check_wanted(sys, spec, rd, spec["wanted"])
            res["wanted"] = wanted
            res["would_change"] = not kind.equal(spec, rd, wanted, {})
            if err is None and res["would_change"] and not kind.writable(sys, spec):
                err = "not writable here (read-only /proc or /sys, or not root)"
            res["error"] = f"{spec['id']}: {err}" if err else None
        results[spec["id"]] = res
    return results


def do_apply(sys, knobs, check=False, pause=0.0):
    """Write each knob's ``wanted`` value in order, then read all back.

    Returns ``(results, error)``; ``error`` is a message when a write failed or a value
    did not stick (the caller restores what was written).
    """
    results = {}
    wrote = 0
    for spec in knobs:
        kind = kind_of(spec)
        rd = read_knob(sys, spec)
        res = {
            "available": rd["available"],
            "noop": rd["noop"],
            "reason": rd["reason"],
            "before": rd["value"],
        }
        results[spec["id"]] = res
        if not rd["available"]:
            res["status"] = "not available"
            continue
        if rd["noop"]:
            res["status"] = "no-op"
            continue
        wanted, err = kind.check_wanted(sys, spec, rd, spec["wanted"])
        res["wanted"] = wanted
        if err:
            res["status"] = "error"
            return results, f"{spec['id']}: {err}"
        if kind.equal(spec, rd, wanted, {}):
            res["status"] = "ok"
            continue
        res["status"] = "changed"
        if check:
            continue
        try:
            write_knob(sys, spec, wanted, {})
        except KnobError as exc:
            res["status"] = "error"
            return results, str(exc)
        wrote += 1
        if wrote == 1 and pause > 0:
            sys.sleep(pause)
    if check:
        return results, None
    for spec in knobs:
        res = results[spec["id"]]
        if res["status"] not in ("ok", "changed"):
            continue
        rd = read_knob(sys, spec)
        res["after"] = rd["value"]
        if not kind_of(spec).equal(spec, rd, res["wanted"], {}):
            res["status"] = "error"
            return results, (
                f"{spec['id']}: wrote {res['wanted']!r} but it reads back as {rd['value']!r} "
                "(a boot parameter or another agent overrides it)"
            )
    return results, None


def do_restore(sys, knobs, check=False):
    """Write each knob's ``target`` (with ``target_detail``) in order; read back; retry once.

    Returns ``(results, problems)``. Never raises for one knob: teardown goes on.
    """
    results = {}
    for spec in knobs:
        res = {"target": spec.get("target")}
        results[spec["id"]] = res
        try:
            rd = read_knob(sys, spec)
        except KnobError as exc:
            res.update(status="error", error=str(exc))
            continue
        res["before"] = rd["value"]
        if not rd["available"]:
            res.update(status="gone", reason=rd["reason"])
            continue
        if kind_of(spec).equal(spec, rd, spec.get("target"), spec.get("target_detail")):
            res["status"] = "ok"
            continue
        res["status"] = "restored" if not check else "would restore"
        if check:
            continue
        try:
            write_knob(sys, spec, spec.get("target"), spec.get("target_detail"))
        except KnobError as exc:
            res.update(status="error", error=str(exc))
    if check:
        return results, []
    for attempt in (1, 2):
        bad = []
        for spec in knobs:
            res = results[spec["id"]]
            if res["status"] in ("gone",):
                continue
            try:
                rd = read_knob(sys, spec)
            except KnobError as exc:
                res.update(status="error", error=str(exc))
                bad.append(spec)
                continue
            res["after"] = rd["value"]
            if not kind_of(spec).equal(spec, rd, spec.get("target"), spec.get("target_detail")):
                bad.append(spec)
        if not bad or attempt == 2:
            break
        # a later write perturbed an earlier knob: write the stragglers again, in order
        for spec in bad:
            try:
                write_knob(sys, spec, spec.get("target"), spec.get("target_detail"))
                results[spec["id"]]["status"] = "restored"
            except KnobError as exc:
                results[spec["id"]].update(status="error", error=str(exc))
    problems = []
    for spec in bad:
        res = results[spec["id"]]
        res["status"] = "error"
        problems.append(
            res.get("error")
            or f"{spec['id']}: reads {res.get('after')!r} after restore, expected {spec.get('target')!r}"
        )
    return results, problems


def main():
    from ansible.module_utils.basic import AnsibleModule

    module = AnsibleModule(
        argument_spec={
            "action": {"type": "str", "required": True, "choices": ["read", "apply", "restore"]},
            "knobs": {"type": "list", "elements": "dict", "required": True},
            "pause_after_first_write": {"type": "float", "default": 0.0},
        },
        supports_check_mode=True,
    )
    sys = System()
    action = module.params["action"]
    knobs = module.params["knobs"]
    ret = {"kernel": sys.kernel_release()}
    try:
        if action == "read":
            results = do_read(sys, knobs)
            ret.update({f"knob:{k}": v for k, v in results.items()})
            module.exit_json(changed=False, labctl_return=ret, labctl_problems=[])
        if action == "apply":
            results, error = do_apply(
                sys, knobs, check=module.check_mode, pause=module.params["pause_after_first_write"]
            )
            ret.update({f"knob:{k}": v for k, v in results.items()})
            if error:
                module.fail_json(msg=error, labctl_return=ret)
            changed = any(r.get("status") == "changed" for r in results.values())
            module.exit_json(changed=changed, labctl_return=ret, labctl_problems=[])
        results, problems = do_restore(sys, knobs, check=module.check_mode)
        ret.update({f"knob:{k}": v for k, v in results.items()})
        changed = any(r.get("status") in ("restored", "would restore") for r in results.values())
        module.exit_json(
            changed=changed,
            labctl_return=ret,
            labctl_problems=problems,
            msg="; ".join(problems) if problems else "restored",
        )
    except KnobError as exc:
        module.fail_json(msg=str(exc), labctl_return=ret)


if __name__ == "__main__":
    main()
