#!/usr/bin/env python3
"""`make bench-provision`: wall time of an idempotent `labctl provision` on 1 and 8
sandbox hosts, against plain `ansible-playbook` on the same playbook and inventory
(default settings, and with the settings labctl uses). Needs root (sandbox)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LABCTL = str(BIN / "labctl")


def timed(argv: list[str], env: dict[str, str]) -> float:
    t = time.monotonic()
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:3])} failed: {proc.stderr[-800:]}{proc.stdout[-800:]}")
    return time.monotonic() - t


def bench(n: int, reps: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="labctl-bench-") as d:
        env = {**os.environ, "LABCTL_DATA_DIR": d, "PATH": f"{BIN}:{os.environ['PATH']}"}
        up = subprocess.run(
            [LABCTL, "sandbox", "up", "--hosts", str(n), "--json"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if up.returncode != 0:
            raise SystemExit(f"sandbox up failed: {up.stderr[-800:]}")
        inv = json.loads(up.stdout)["inventory"]
        try:
            timed([LABCTL, "provision", "-i", inv, "--json"], env)  # first run: installs, caches facts
            plain = {**env, "ANSIBLE_ROLES_PATH": str(ROOT / "roles")}
            tuned = {
                **plain,
                "ANSIBLE_PIPELINING": "True",
                "ANSIBLE_FORKS": "16",
                "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=120s",
                "ANSIBLE_GATHERING": "smart",
                "ANSIBLE_CACHE_PLUGIN": "jsonfile",
                "ANSIBLE_CACHE_PLUGIN_CONNECTION": f"{d}/bench-factcache",
            }
            pb = [str(BIN / "ansible-playbook"), "-i", inv, "playbooks/provision.yml"]
            out = {
                "labctl provision": [],
                "ansible-playbook (defaults)": [],
                "ansible-playbook (labctl's settings)": [],
            }
            for _ in range(reps):
                out["labctl provision"].append(timed([LABCTL, "provision", "-i", inv, "--json"], env))
                out["ansible-playbook (defaults)"].append(timed(pb, plain))
                out["ansible-playbook (labctl's settings)"].append(timed(pb, tuned))
            return {k: sorted(v)[len(v) // 2] for k, v in out.items()}
        finally:
            subprocess.run(
                [LABCTL, "sandbox", "down"], cwd=ROOT, env=env, capture_output=True, timeout=600, check=False
            )


def main() -> int:
    sizes = [int(x) for x in (sys.argv[1] if len(sys.argv) > 1 else "1,8").split(",")]
    reps = 3
    rows = {n: bench(n, reps) for n in sizes}
    cols = list(next(iter(rows.values())))
    print(f"second (idempotent) provision, median of {reps}, seconds")
    print(f"{'hosts':>5}  " + "  ".join(f"{c:>36}" for c in cols) + "  labctl/plain  labctl/tuned")
    for n, r in rows.items():
        vals = [r[c] for c in cols]
        print(
            f"{n:>5}  "
            + "  ".join(f"{v:>36.1f}" for v in vals)
            + f"  {vals[0] / vals[1]:>12.2f}  {vals[0] / vals[2]:>12.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
