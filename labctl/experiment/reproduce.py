"""`labctl reproduce`: re-run a past run from its manifest and say whether its results still hold.

What a run's manifest records (see docs/reproduce.md) is enough to run it again:
the experiment spec as it ran (already quickened for a quick run), the git revision
of ``experiments/`` and ``workloads/``, the sha256 of every workload binary with the
toolchains and flags that built it, the tuning profiles per host, and the host facts.

A reproduction, step by step (every check that can refuse comes before any host is
touched):

1. :func:`load_original` — the run exists, its manifest and results are readable,
   the recorded spec is valid, the recorded revision is in this repository
   (otherwise :class:`~labctl.errors.InputError`, exit 2);
2. :meth:`Reproduction.check_artifacts` — every recorded binary is looked up in the
   content-addressed store by its hash; a stored file whose content no longer matches
   its name is refused (:class:`ArtifactMismatch`, exit 1); for a binary the store
   lacks, the toolchains that built it must be the ones installed now, else it cannot
   be rebuilt bit-identically (:class:`ToolchainMismatch`, exit 1);
3. a temporary ``git worktree`` of the recorded revision (removed afterwards);
4. :meth:`Reproduction.prepare_tuning` — the recorded profiles are loaded (from the
   recorded revision when it has them) and validated;
5. :meth:`Reproduction.build` — missing binaries are rebuilt in the worktree with
   ``make`` and must hash exactly as recorded (else :class:`ArtifactMismatch`);
6. :meth:`Reproduction.apply_tuning` — the recorded profiles are applied again;
7. :meth:`Reproduction.run` — the recorded matrix runs through
   :func:`~labctl.experiment.service.run_experiment` with ``reproduces=`` the original;
8. :meth:`Reproduction.finish` — :func:`compare` puts original and reproduction side
   by side (claims, key figures, environment), writes ``reproduction.json`` into the
   new run and adds a section to its ``report.html``.
"""

from __future__ import annotations

import html
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from labctl.config import Settings
from labctl.engine import EventSink
from labctl.errors import EnvironmentProblem, HostError, InputError
from labctl.experiment.runstore import RunStore
from labctl.experiment.spec import Experiment, load_experiment
from labctl.gitinfo import commit_exists, revision
from labctl.inventory import Host, Inventory
from labctl.paths import project_root
from labctl.state import atomic_write_json, read_json
from labctl.workloads.build import (
    WORKLOAD_BINARIES,
    Artifact,
    ArtifactStore,
    build_flags,
    sha256_file,
    toolchain_versions,
)

Log = Callable[[str], None]

SOURCE_PATHS = ("experiments", "workloads", "Makefile")
"""What the recorded git revision stands for (the same paths :func:`labctl.gitinfo.revision` checks)."""

METRICS = ("p50_us", "p99_us", "p999_us")
"""Key figures compared per variant and rate: pooled percentiles with their 95 % intervals."""

TOOLCHAINS_OF = {
    "riskd-go": ("go", "arch"),
    "riskd-rust": ("rustc", "cargo", "arch"),
    "riskd-cpp": ("g++", "arch"),
    "loadgen": ("rustc", "cargo", "arch"),
}
"""The toolchain versions that decide each binary's bytes."""

VOLATILE_KEYS = frozenset(
    {
        "started_at",
        "ended_at",
        "snapshot_at",
        "tuned_at",
        "recorded_at",
        "stored_at",
        "collected_at",
        "gathered_at",
        "timestamp",
        "time",
        "uptime",
        "uptime_s",
        "boot_time",
        "pending",
    }
)
"""Keys left out of the environment comparison: timestamps, and in-flight tuning state."""

FACT_LABELS = {
    "hostname": "host name",
    "cpu_model": "CPU model",
    "sockets": "sockets",
    "cores_per_socket": "cores per socket",
    "threads_per_core": "threads per core",
    "logical_cpus": "logical CPUs",
    "numa_nodes": "NUMA layout",
    "numa_balancing": "NUMA balancing",
    "kernel": "kernel",
    "cmdline": "boot command line",
    "mem_bytes": "memory",
    "thp_enabled": "THP",
    "thp_defrag": "THP defrag",
    "governor": "CPU governor",
    "io_uring_disabled": "io_uring_disabled",
    "arch": "architecture",
}


class ArtifactMismatch(EnvironmentProblem):
    """A workload binary's content differs from the sha256 a run recorded (exit 1).

    Either a file in the artifact store was changed after it was stored (its content no
    longer matches the hash it is filed under), or a rebuild from the recorded revision
    produced different bytes. Nothing was run; the message names every artifact with
    both hashes.
    """

    def __init__(self, mismatches: list[dict[str, str]]) -> None:
        lines = [
            f"{m['name']}: {m['where']} has sha256 {m['actual']}, the manifest records {m['expected']}"
            for m in mismatches
        ]
        super().__init__(
            "refusing to reproduce with binaries that are not the recorded ones: " + "; ".join(lines),
            artifacts=mismatches,
        )
        self.mismatches = mismatches


class ToolchainMismatch(EnvironmentProblem):
    """A binary must be rebuilt but today's toolchains differ from the ones that built it (exit 1)."""

    def __init__(self, message: str, differences: dict[str, dict[str, list[Any]]]) -> None:
        super().__init__(message, toolchains=differences)
        self.differences = differences


# ----- the original run -----------------------------------------------------------------------


@dataclass
class Original:
    """A past run as recorded: everything a reproduction needs, validated."""

    run_id: str
    run_dir: Path
    manifest: dict[str, Any]
    results: dict[str, Any]
    experiment: Experiment
    commit: str
    dirty: bool | None

    @property
    def artifacts(self) -> dict[str, str]:
        """Recorded sha256 per workload binary."""
        return {str(k): str(v) for k, v in (self.manifest.get("artifacts") or {}).items()}

    @property
    def quick(self) -> bool:
        return bool(self.manifest.get("quick"))

    def recorded_toolchains(self, name: str) -> dict[str, Any] | None:
        """The toolchains that built ``name`` (per artifact if recorded, else the run's)."""
        per = ((self.manifest.get("build") or {}).get(name) or {}).get("toolchains")
        if isinstance(per, dict) and per:
            return per
        run = self.manifest.get("toolchains")
        return run if isinstance(run, dict) and run else None


def load_original(settings: Settings, run: str, *, root: Path | None = None) -> Original:
    """Read and check a past run; raise :class:`InputError` (exit 2) on anything unusable.

    Checked: the run id (or directory) exists, ``manifest.json`` is readable JSON with
    a valid spec, every workload binary has a recorded hash, ``results.json`` exists
    (there must be something to compare with), and the recorded git revision exists in
    the repository at ``root`` (default: this checkout).
    """
    root = root or project_root()
    store = RunStore(settings.data_dir)
    run_dir = store.dir(run)
    manifest = store.manifest(run_dir)
    mpath = str(run_dir / "manifest.json")
    spec = manifest.get("spec")
    if not isinstance(spec, dict):
        raise InputError("manifest records no experiment spec", file=mpath, key="spec")
    try:
        exp = Experiment.model_validate(spec)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        raise InputError(
            f"the recorded spec is not valid for this labctl: {msg}", file=mpath, key=f"spec.{loc}"
        ) from None
    artifacts = manifest.get("artifacts")
    if not isinstance(artifacts, dict):
        raise InputError("manifest records no artifact hashes", file=mpath, key="artifacts")
    missing = [n for n in WORKLOAD_BINARIES if not isinstance(artifacts.get(n), str) or not artifacts.get(n)]
    if missing:
        raise InputError(f"manifest records no sha256 for {', '.join(missing)}", file=mpath, key="artifacts")
    git = manifest.get("git")
    commit = git.get("commit") if isinstance(git, dict) else None
    if not isinstance(commit, str) or not commit:
        raise InputError(
            "manifest records no git revision (the run was not made from a git checkout)",
            file=mpath,
            key="git.commit",
        )
    if not commit_exists(root, commit):
        raise InputError(
            f"revision {commit} no longer exists in the repository at {root} "
            "(rewritten history or a different clone?)",
            file=mpath,
            key="git.commit",
        )
    results = read_json(run_dir / "results.json", None)
    if not isinstance(results, dict):
        raise InputError(
            "the original run has no readable results.json: nothing to compare with",
            file=str(run_dir / "results.json"),
        )
    if "stats" not in results or "verdicts" not in results:
        # Analysis never completed (e.g. the run was interrupted): analyse in memory, change nothing.
        from labctl.analysis import analyze

        noise = (manifest.get("settings") or {}).get("noise_threshold") or settings.noise_threshold
        results = {**results, **analyze(run_dir, results, manifest, noise_threshold=float(noise))}
    dirty = git.get("dirty") if isinstance(git, dict) else None
    return Original(
        run_id=str(manifest["run_id"]),
        run_dir=run_dir,
        manifest=manifest,
        results=results,
        experiment=exp,
        commit=commit,
        dirty=dirty if isinstance(dirty, bool) else None,
    )


def experiment_for(original: Original, quick: bool) -> Experiment:
    """The matrix to run: the recorded spec, quickened when ``quick`` and not quick already."""
    if quick and not original.quick:
        return original.experiment.quickened()
    return original.experiment


# ----- source: dirty trees, worktrees --------------------------------------------------------


def _git(root: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def source_notes(original: Original, root: Path | None = None) -> list[str]:
    """Warnings about the source: a dirty original, a working tree that differs from the recorded commit."""
    root = root or project_root()
    notes = []
    short = original.commit[:12]
    if original.dirty:
        notes.append(
            f"the original run was made from a dirty tree (uncommitted changes in experiments/, workloads/ "
            f"or the Makefile at {short}): it cannot be exactly reproduced from the recorded revision; "
            "binaries found in the artifact store by hash are still the original ones"
        )
    elif original.dirty is None:
        notes.append("the manifest does not say whether the original tree was dirty")
    changed = _git(root, "diff", "--name-only", original.commit, "--", *SOURCE_PATHS)
    untracked = _git(root, "ls-files", "--others", "--exclude-standard", "--", *SOURCE_PATHS)
    files = sorted(
        {*changed.stdout.split(), *untracked.stdout.split()}
        if changed.returncode == 0 and untracked.returncode == 0
        else set()
    )
    if files:
        shown = ", ".join(files[:6]) + (f" and {len(files) - 6} more" if len(files) > 6 else "")
        notes.append(
            f"this working tree differs from {short} in {len(files)} file(s) ({shown}); "
            f"the reproduction uses a clean checkout of {short}, not these changes"
        )
    head = revision(root).get("commit")
    if head and head != original.commit:
        notes.append(
            f"labctl itself (runner, analysis) is at {str(head)[:12]}, not {short}: "
            "the harness is today's, the experiment and workloads are the recorded ones"
        )
    return notes


@contextmanager
def worktree(commit: str, root: Path | None = None, log: Log | None = None) -> Iterator[Path]:
    """A temporary detached ``git worktree`` of ``commit``; removed (with its build/) afterwards."""
    root = root or project_root()
    tmp = Path(tempfile.mkdtemp(prefix="labctl-reproduce-")).resolve()
    path = tmp / "checkout"
    res = _git(root, "worktree", "add", "--detach", "--quiet", str(path), commit, timeout=600)
    if res.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise EnvironmentProblem(f"git worktree add {commit[:12]} failed: {res.stderr.strip()[-300:]}")
    if log:
        log(f"checked out {commit[:12]} in {path}")
    try:
        yield path
    finally:
        if _git(root, "worktree", "remove", "--force", str(path)).returncode != 0:
            shutil.rmtree(path, ignore_errors=True)
            _git(root, "worktree", "prune")
        shutil.rmtree(tmp, ignore_errors=True)


def _build_env() -> dict[str, str]:
    """The environment for ``make``, with the usual toolchain directories on PATH.

    The same directories :func:`labctl.workloads.build.toolchain_versions` looks in,
    so the versions compared are the versions that build.
    """
    env = dict(os.environ)
    extra = [d for d in ("/usr/local/go/bin", str(Path.home() / ".cargo/bin")) if Path(d).is_dir()]
    env["PATH"] = os.pathsep.join([env.get("PATH", ""), *extra])
    return env


def make_binaries(source_root: Path, names: list[str], log_file: Path | None = None) -> dict[str, Path]:
    """Run ``make`` for just these workload binaries in ``source_root``; return their paths."""
    source_root = source_root.resolve()
    targets = [str(source_root / "build" / "bin" / n) for n in names]
    proc = subprocess.run(
        ["make", "-C", str(source_root), *targets],
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
        env=_build_env(),
    )
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        log_file.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-4:])
        absent = [
            d
            for d in (
                "workloads/riskd/go",
                "workloads/riskd/rust",
                "workloads/riskd/cpp",
                "workloads/loadgen",
            )
            if not (source_root / d).is_dir()
        ]
        hint = f" ({', '.join(absent)} not in this revision: was it committed?)" if absent else ""
        raise EnvironmentProblem(f"rebuilding {', '.join(names)} failed{hint}: {tail}")
    out = {}
    for n, t in zip(names, targets, strict=True):
        if not Path(t).is_file():
            raise EnvironmentProblem(f"make did not produce {t}")
        out[n] = Path(t)
    return out


# ----- comparison ----------------------------------------------------------------------------


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else None


def compare_claims(original: list[dict[str, Any]], reproduced: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every claim's verdict then and now; ``holds`` when both were judged and agree."""
    rep = {v["claim"]: v for v in reproduced}
    orig = {v["claim"]: v for v in original}
    order = [v["claim"] for v in original] + [v["claim"] for v in reproduced if v["claim"] not in orig]
    out = []
    for cid in order:
        o, r = orig.get(cid), rep.get(cid)
        row: dict[str, Any] = {
            "claim": cid,
            "statement": (o or r or {}).get("statement", ""),
            "expect": (o or r or {}).get("expect", ""),
            "rate": (o or r or {}).get("rate"),
            "original": o["verdict"] if o else None,
            "reproduced": r["verdict"] if r else None,
            "holds": bool(o and r and o["verdict"] == r["verdict"]),
            "original_value": (o or {}).get("value"),
            "original_ci": (o or {}).get("ci"),
            "reproduced_value": (r or {}).get("value"),
            "reproduced_ci": (r or {}).get("ci"),
        }
        if o is None:
            row["note"] = "not judged in the original run"
        elif r is None:
            row["note"] = "not judged in the reproduction (e.g. --quick left out a variant it needs)"
        elif r.get("reason"):
            row["note"] = str(r["reason"])
        out.append(row)
    return out


def compare_figures(
    original: dict[str, Any], reproduced: dict[str, Any], variants: list[str] | None = None
) -> list[dict[str, Any]]:
    """Pooled p50/p99/p99.9 per variant and rate: values, ratio reproduction/original, inside the CI?"""
    so, sr = original.get("stats") or {}, reproduced.get("stats") or {}
    names = list(variants or []) + sorted((set(so) | set(sr)) - set(variants or []))
    rate_order = list(original.get("rates") or []) + [
        r for r in reproduced.get("rates") or [] if r not in (original.get("rates") or [])
    ]
    out = []
    for variant in names:
        if variant not in so and variant not in sr:
            continue
        rates = [r for r in rate_order if r in so.get(variant, {}) or r in sr.get(variant, {})]
        rates += sorted((set(so.get(variant, {})) | set(sr.get(variant, {}))) - set(rates))
        for rate in rates:
            a = so.get(variant, {}).get(rate) or {}
            b = sr.get(variant, {}).get(rate) or {}
            for metric in METRICS:
                pa = (a.get("pooled") or {}).get(metric) or {}
                pb = (b.get("pooled") or {}).get(metric) or {}
                va, vb = _num(pa.get("value")), _num(pb.get("value"))
                ci = pa.get("ci")
                within = None
                if vb is not None and isinstance(ci, list) and len(ci) == 2:
                    within = bool(float(ci[0]) <= vb <= float(ci[1]))
                out.append(
                    {
                        "variant": variant,
                        "rate": rate,
                        "metric": metric,
                        "original": va,
                        "original_ci": ci,
                        "reproduced": vb,
                        "reproduced_ci": pb.get("ci"),
                        "ratio": (vb / va) if va and vb is not None else None,
                        "within_original_ci": within,
                        "original_rps": _num(a.get("requested_rps")),
                        "reproduced_rps": _num(b.get("requested_rps")),
                    }
                )
    return out


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys (lists stay whole); volatile keys are dropped."""
    if not isinstance(value, dict):
        return {prefix: value} if prefix else {"": value}
    out: dict[str, Any] = {}
    for k, v in value.items():
        if k in VOLATILE_KEYS or str(k).endswith("_at"):
            continue
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


MEMORY_TOLERANCE = 0.25
"""Memory sizes within this fraction of each other count as the same (balloons, lazily onlined memory)."""


def _same(key: str, a: Any, b: Any) -> bool:
    if a == b:
        return True
    if key.endswith("mem_bytes") and isinstance(a, int | float) and isinstance(b, int | float):
        return abs(a - b) <= MEMORY_TOLERANCE * max(abs(a), abs(b))
    return False


def _facts_view(facts: Any) -> Any:
    """Host facts as compared: NUMA nodes keyed by id, toolchain versions without their paths."""
    if not isinstance(facts, dict):
        return facts
    view = dict(facts)
    nodes = view.get("numa_nodes")
    if isinstance(nodes, list) and all(isinstance(n, dict) and "id" in n for n in nodes):
        view["numa_nodes"] = {
            f"node{n['id']}": {k: v for k, v in n.items() if k != "id"} or {"present": True} for n in nodes
        }
    tools = view.get("toolchains")
    if isinstance(tools, dict):
        view["toolchains"] = {k: (v.get("version") if isinstance(v, dict) else v) for k, v in tools.items()}
    return view


def _diff(
    aspect: str, a: Any, b: Any, host: str | None = None, labels: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    fa, fb = _flatten(a), _flatten(b)
    out = []
    for key in sorted(set(fa) | set(fb)):
        va, vb = fa.get(key), fb.get(key)
        if _same(key, va, vb):
            continue
        top = key.split(".", 1)[0]
        entry: dict[str, Any] = {"aspect": aspect, "key": key, "original": va, "reproduced": vb}
        if host is not None:
            entry["host"] = host
        if labels and top in labels:
            entry["label"] = labels[top] + key[len(top) :]
        out.append(entry)
    return out


def _pair_hosts(a: dict[str, Any], b: dict[str, Any]) -> tuple[list[tuple[str, str]], list[str], list[str]]:
    common = [n for n in a if n in b]
    only_a = [n for n in a if n not in b]
    only_b = [n for n in b if n not in a]
    pairs = [(n, n) for n in common]
    if len(only_a) == 1 and len(only_b) == 1:  # one host each: the same role on another machine
        pairs.append((only_a[0], only_b[0]))
        only_a, only_b = [], []
    return pairs, only_a, only_b


def _harness(m: dict[str, Any]) -> dict[str, Any]:
    git = m.get("git") or {}
    inner = git.get("labctl")
    if isinstance(inner, dict):
        return {
            "commit": inner.get("commit"),
            "dirty": inner.get("dirty"),
            "version": m.get("labctl_version"),
        }
    return {"commit": git.get("commit"), "dirty": git.get("dirty"), "version": m.get("labctl_version")}


def environment_diff(original: dict[str, Any], reproduced: dict[str, Any]) -> list[dict[str, Any]]:
    """Where the two runs' environments differ (timestamps excluded); empty when identical.

    Compared: the hosts, each host's facts (CPU model, sockets/cores, NUMA layout,
    kernel, boot command line, memory, THP, governor, toolchain versions — not their
    paths; memory sizes within :data:`MEMORY_TOLERANCE`), each host's tuning snapshot
    (profiles, per knob original/wanted/current), toolchain versions, artifact hashes,
    build flags, the source revision, the labctl revision and version, the controller,
    the experiment spec actually run, and the analysis noise threshold.
    """
    out: list[dict[str, Any]] = []
    ha, hb = original.get("hosts") or {}, reproduced.get("hosts") or {}
    pairs, only_a, only_b = _pair_hosts(ha, hb)
    if only_a or only_b or any(x != y for x, y in pairs):
        out.append({"aspect": "hosts", "key": "names", "original": sorted(ha), "reproduced": sorted(hb)})
    ta, tb = original.get("tuning") or {}, reproduced.get("tuning") or {}
    for x, y in pairs:
        label = x if x == y else f"{x} → {y}"
        out += _diff(
            "host facts", _facts_view(ha.get(x)), _facts_view(hb.get(y)), host=label, labels=FACT_LABELS
        )
        sa = {k: v for k, v in (ta.get(x) or {}).items() if k != "host"}
        sb = {k: v for k, v in (tb.get(y) or {}).items() if k != "host"}
        out += _diff("tuning", sa, sb, host=label)
    out += _diff("toolchains", original.get("toolchains") or {}, reproduced.get("toolchains") or {})
    out += _diff("artifacts", original.get("artifacts") or {}, reproduced.get("artifacts") or {})
    build_a = {
        n: {k: v for k, v in (e or {}).items() if k != "sha256"}
        for n, e in (original.get("build") or {}).items()
    }
    build_b = {
        n: {k: v for k, v in (e or {}).items() if k != "sha256"}
        for n, e in (reproduced.get("build") or {}).items()
    }
    out += _diff("build", build_a, build_b)
    ga, gb = original.get("git") or {}, reproduced.get("git") or {}
    out += _diff(
        "source",
        {"commit": ga.get("commit"), "dirty": ga.get("dirty")},
        {"commit": gb.get("commit"), "dirty": gb.get("dirty")},
    )
    out += _diff("labctl", _harness(original), _harness(reproduced))
    out += _diff("controller", original.get("controller") or {}, reproduced.get("controller") or {})
    out += _diff("experiment spec", original.get("spec") or {}, reproduced.get("spec") or {})
    out += _diff(
        "analysis",
        {"noise_threshold": (original.get("settings") or {}).get("noise_threshold")},
        {"noise_threshold": (reproduced.get("settings") or {}).get("noise_threshold")},
    )
    return out


def compare(
    original_manifest: dict[str, Any],
    original_results: dict[str, Any],
    manifest: dict[str, Any],
    results: dict[str, Any],
) -> dict[str, Any]:
    """Original and reproduction side by side: ``claims``, ``figures``, ``environment_diff``, ``summary``."""
    claims = compare_claims(original_results.get("verdicts") or [], results.get("verdicts") or [])
    variants = [v["name"] for v in (original_manifest.get("spec") or {}).get("variants") or []]
    figures = compare_figures(original_results, results, variants)
    env = environment_diff(original_manifest, manifest)
    judged = [f for f in figures if f["within_original_ci"] is not None]
    held = sum(1 for c in claims if c["holds"])
    ra, rb = original_manifest.get("rates_rps") or {}, manifest.get("rates_rps") or {}
    rates = {
        label: {
            "original_rps": _num(ra.get(label)),
            "reproduced_rps": _num(rb.get(label)),
            "ratio": (_num(rb.get(label)) or 0) / float(ra[label]) if _num(ra.get(label)) else None,
        }
        for label in [*ra, *(x for x in rb if x not in ra)]
    }
    return {
        "run_id": manifest.get("run_id"),
        "original_run_id": original_manifest.get("run_id"),
        "claims": claims,
        "figures": figures,
        "environment_diff": env,
        "rates": rates,
        "summary": {
            "claims_total": len(claims),
            "claims_held": held,
            "all_claims_hold": bool(claims) and held == len(claims),
            "figures_total": len(judged),
            "figures_within_original_ci": sum(1 for f in judged if f["within_original_ci"]),
            "environment_differences": len(env),
        },
    }


def rate_notes(doc: dict[str, Any], tolerance: float = 0.10) -> list[str]:
    """A note per rate whose absolute load differs by more than ``tolerance`` between the runs.

    Relative rates ("50%") follow each run's measured capacity, so a machine that was
    busier (or quieter) in one run is offered a different load in the other: figures
    at that rate then compare different operating points.
    """
    out = []
    for label, r in (doc.get("rates") or {}).items():
        ratio = r.get("ratio")
        if ratio is not None and abs(ratio - 1) > tolerance:
            out.append(
                f"rate {label} was {r['original_rps']:.0f} rps in the original and {r['reproduced_rps']:.0f} rps "
                f"now ({ratio:.2f}×): capacity was measured differently, so figures at {label} compare "
                "different offered loads"
            )
    return out


def summary_line(doc: dict[str, Any]) -> str:
    """One sentence: how many claim verdicts held, how many figures fell inside the original CIs."""
    s = doc["summary"]
    if not s["claims_total"]:
        head = "no claims to compare"
    elif s["all_claims_hold"]:
        head = f"all {s['claims_total']} claim verdicts held"
    else:
        head = f"{s['claims_held']} of {s['claims_total']} claim verdicts held"
    return (
        f"{head}; {s['figures_within_original_ci']} of {s['figures_total']} key figures lie within the "
        f"original's 95% CI; {s['environment_differences']} environment difference(s)"
    )


# ----- HTML ------------------------------------------------------------------------------------


def _e(x: Any) -> str:
    return html.escape("" if x is None else str(x))


def _f(x: Any) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:.4g}"
    return _e(x)


def _rps(x: Any) -> str:
    return "—" if x is None else f"{x:.0f}"


def _ci(ci: Any) -> str:
    return f" [{_f(ci[0])}, {_f(ci[1])}]" if isinstance(ci, list) and len(ci) == 2 else ""


def _value(x: Any) -> str:
    text = json.dumps(x, sort_keys=True, default=str) if isinstance(x, dict | list) else str(x)
    return _e(text if len(text) <= 300 else text[:297] + "…")


def _html_table(headers: list[str], rows: list[list[str]], classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cls = f" class='{classes[i]}'" if classes and classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def comparison_html(doc: dict[str, Any], warnings: list[str] | None = None) -> str:
    """The report section: summary, notes, claims then/now, key figures, environment differences."""
    parts = [
        f"<p>This run reproduces <code>{_e(doc.get('original_run_id'))}</code>: "
        f"<b>{_e(summary_line(doc))}</b>. A claim <i>holds</i> when its verdict is the same as in the "
        "original run.</p>"
    ]
    if warnings:
        parts.append("<ul>" + "".join(f"<li class='muted'>{_e(w)}</li>" for w in warnings) + "</ul>")
    claims = doc.get("claims") or []
    if claims:
        rows, classes = [], []
        for c in claims:
            rows.append(
                [
                    f"<b>{_e(c['claim'])}</b>",
                    _e(c.get("statement")),
                    f"<code>{_e(c.get('expect'))}</code>",
                    _e(c.get("original"))
                    + _e(f" ({_f(c.get('original_value'))}{_ci(c.get('original_ci'))})"),
                    _e(c.get("reproduced"))
                    + _e(f" ({_f(c.get('reproduced_value'))}{_ci(c.get('reproduced_ci'))})"),
                    "<b>holds</b>" if c["holds"] else "<b>does not hold</b>",
                ]
            )
            classes.append("supported" if c["holds"] else "refuted")
        parts.append(
            "<h3>Claims</h3>"
            + _html_table(
                ["claim", "statement", "expectation", "original", "reproduction", "holds"], rows, classes
            )
        )
    else:
        parts.append("<p class='muted'>The experiment names no claims.</p>")
    figs = doc.get("figures") or []
    if figs:
        rows, classes = [], []
        for f in figs:
            inside = f.get("within_original_ci")
            rows.append(
                [
                    _e(f["variant"]),
                    _e(f["rate"]) + f" ({_rps(f.get('original_rps'))} / {_rps(f.get('reproduced_rps'))} rps)",
                    _e(f["metric"]),
                    _f(f.get("original")) + _ci(f.get("original_ci")),
                    _f(f.get("reproduced")) + _ci(f.get("reproduced_ci")),
                    _f(f.get("ratio")),
                    "—" if inside is None else ("yes" if inside else "no"),
                ]
            )
            classes.append("" if inside is None else ("supported" if inside else "inconclusive"))
        parts.append(
            "<h3>Key figures (pooled, µs)</h3><p class='muted'>Rates in parentheses: requested rps in the "
            "original / the reproduction (relative rates follow each run's measured capacity).</p>"
            + _html_table(
                ["variant", "rate", "metric", "original [95% CI]", "reproduction [95% CI]", "ratio", "in CI"],
                rows,
                classes,
            )
        )
    env = doc.get("environment_diff") or []
    if env:
        rows = [
            [
                _e(d["aspect"]),
                _e(d.get("host", "")),
                _e(d.get("label") or d["key"]),
                f"<code>{_value(d.get('original'))}</code>",
                f"<code>{_value(d.get('reproduced'))}</code>",
            ]
            for d in env
        ]
        parts.append(
            "<h3>Environment differences</h3>"
            + _html_table(["aspect", "host", "what", "original", "reproduction"], rows)
        )
    else:
        parts.append(
            "<h3>Environment differences</h3><p>None: same hosts, facts, tuning, toolchains and binaries "
            "(timestamps excluded).</p>"
        )
    return "".join(parts)


# ----- the reproduction ------------------------------------------------------------------------


@dataclass
class ReproductionResult:
    """What a finished reproduction produced (the run, the comparison, and the notes)."""

    report: Any  # labctl.experiment.service.RunReport
    comparison: dict[str, Any]
    path: Path  # reproduction.json
    warnings: list[str]


@dataclass
class Reproduction:
    """One reproduction of ``original``; call the steps in order (see the module docstring).

    Use as a context manager: the temporary worktree is removed on exit.
    """

    settings: Settings
    original: Original
    log: Log = print
    root: Path = field(default_factory=project_root)
    warnings: list[str] = field(default_factory=list)
    artifacts: dict[str, Artifact] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # name -> "store" | "rebuilt"
    missing: list[str] = field(default_factory=list)
    tuning: dict[str, Any] = field(default_factory=dict)
    checkout: Path | None = None
    _profiles: list[tuple[list[Host], Any]] = field(default_factory=list)
    _cm: Any = None

    def __enter__(self) -> Reproduction:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove the temporary worktree (idempotent)."""
        if self._cm is not None:
            cm, self._cm = self._cm, None
            cm.__exit__(None, None, None)
            self.checkout = None

    def note(self, text: str) -> None:
        """A warning for the output, the manifest and the report."""
        self.warnings.append(text)
        self.log(f"warning: {text}")

    # 2. artifacts in the store, or rebuildable?
    def check_artifacts(self) -> None:
        """Reuse stored binaries by hash; refuse a tampered store or unrebuildable binaries.

        Raises :class:`ArtifactMismatch` when a stored file's content does not match the
        hash it is filed under, and :class:`ToolchainMismatch` when a binary the store
        lacks would have to be built with other toolchain versions than the recorded ones.
        """
        store = ArtifactStore(self.settings.data_dir)
        tampered = []
        for name, digest in self.original.artifacts.items():
            path = store.path_for(digest)
            if path.is_file():
                actual = sha256_file(path)
                if actual != digest:
                    tampered.append(
                        {
                            "name": name,
                            "expected": digest,
                            "actual": actual,
                            "where": f"the stored file {path}",
                        }
                    )
                    continue
                a = store.lookup(name, digest)
                assert a is not None
                self.artifacts[name] = a
                self.sources[name] = "store"
            else:
                self.missing.append(name)
        if tampered:
            raise ArtifactMismatch(tampered)
        if not self.missing:
            self.log("all recorded binaries are in the artifact store: reusing them (no rebuild)")
            now = toolchain_versions()
            then = self.original.manifest.get("toolchains") or {}
            changed = sorted(k for k in now if then.get(k) != now.get(k))
            if then and changed:
                self.log(
                    f"toolchains differ from the original's ({', '.join(changed)}), but the recorded binaries "
                    "were reused from the store, so the workloads are bit-identical"
                )
            return
        self.log(
            f"not in the artifact store: {', '.join(self.missing)} — will rebuild from {self.original.commit[:12]}"
        )
        now = toolchain_versions()
        diffs: dict[str, dict[str, list[Any]]] = {}
        unknown = []
        for name in self.missing:
            then = self.original.recorded_toolchains(name)
            if then is None:
                unknown.append(name)
                continue
            d = {
                k: [then.get(k), now.get(k)] for k in TOOLCHAINS_OF.get(name, ()) if then.get(k) != now.get(k)
            }
            if d:
                diffs[name] = d
        if unknown:
            self.note(
                f"the original recorded no toolchain versions for {', '.join(unknown)}: rebuilding anyway; "
                "the hashes will tell"
            )
        if diffs:
            detail = "; ".join(
                f"{name}: " + ", ".join(f"{k} {v[0]!r} then, {v[1]!r} now" for k, v in d.items())
                for name, d in diffs.items()
            )
            raise ToolchainMismatch(
                "cannot rebuild bit-identical binaries: the toolchains differ from the ones that built the "
                f"original ({detail}), so the hashes cannot match. Install the recorded toolchain versions, "
                f"or put the recorded binaries into the artifact store ({ArtifactStore(self.settings.data_dir).root})",
                diffs,
            )

    # 3. the recorded revision
    def open_checkout(self) -> Path:
        """Check out the recorded revision in a temporary worktree (once)."""
        if self.checkout is None:
            self._cm = worktree(self.original.commit, self.root, self.log)
            self.checkout = self._cm.__enter__()
            self._check_spec(self.checkout)
        return self.checkout

    def _check_spec(self, checkout: Path) -> None:
        rel = self.original.manifest.get("spec_file")
        if not rel:
            return
        p = Path(str(rel))
        if p.is_absolute():
            try:
                p = p.resolve().relative_to(self.root.resolve())
            except ValueError:
                return
        at_commit = checkout / p
        if not at_commit.is_file():
            self.note(f"{p} does not exist at {self.original.commit[:12]}: the recorded spec is used")
            return
        try:
            exp = load_experiment(at_commit, quick=self.original.quick)
        except InputError as exc:
            self.note(
                f"{p} at {self.original.commit[:12]} does not load ({exc.message}): the recorded spec is used"
            )
            return
        if exp.model_dump(mode="json") != self.original.experiment.model_dump(mode="json"):
            self.note(
                f"the recorded spec differs from {p} at {self.original.commit[:12]} (the original ran a "
                "modified spec): the recorded spec is used"
            )

    # 4. tuning profiles
    def prepare_tuning(self, inv: Inventory, hosts: list[Host], enabled: bool = True) -> None:
        """Decide which recorded profiles go on which targeted host; load and validate them.

        A host of the original run gets its own recorded profiles; another host (a
        reproduction elsewhere) gets the profiles when the original used one set for
        all its hosts. Profiles come from the recorded revision when it has them.
        Raises :class:`InputError` (exit 2) for a profile that exists nowhere.
        """
        recorded = {
            h: list((t or {}).get("profiles") or [])
            for h, t in (self.original.manifest.get("tuning") or {}).items()
        }
        used = {tuple(p) for p in recorded.values() if p}
        if not used:
            self.tuning = {"status": "none", "detail": "the original run used no tuning profile"}
            return
        if not enabled:
            self.tuning = {"status": "not re-applied", "reason": "--no-tune", "recorded": recorded}
            self.note(f"the recorded tuning ({_profiles_text(recorded)}) was not re-applied (--no-tune)")
            return
        try:
            from labctl.tuning.profiles import load_profile
        except ImportError as exc:  # tuning not available in this installation
            self.tuning = {
                "status": "not re-applied",
                "reason": f"tuning unavailable: {exc}",
                "recorded": recorded,
            }
            self.note(f"the recorded tuning ({_profiles_text(recorded)}) was not re-applied: {exc}")
            return
        plan: dict[tuple[str, ...], list[Host]] = {}
        skipped = []
        for h in hosts:
            own = recorded.get(h.name)
            if own is None and len(used) == 1:
                own = list(next(iter(used)))
            if own is None:
                skipped.append(h.name)
                continue
            if own:
                plan.setdefault(tuple(own), []).append(h)
        checkout = self.open_checkout()
        sources = {}
        for names, group in plan.items():
            refs = []
            for n in names:
                at_commit = checkout / "profiles" / f"{n}.yaml"
                if at_commit.is_file():
                    refs.append(str(at_commit))
                else:
                    refs.append(n)
                    self.note(f"profile {n!r} is not in {self.original.commit[:12]}: using this checkout's")
                sources[n] = refs[-1]
            self._profiles.append((group, load_profile(refs)))
        if skipped:
            self.note(
                f"no recorded tuning for {', '.join(skipped)} (hosts of the original: {', '.join(recorded)}): "
                "not tuned"
            )
        self.tuning = {
            "status": "pending",
            "recorded": recorded,
            "plan": {h.name: list(names) for names, group in plan.items() for h in group},
            "profile_files": sources,
        }

    # 5. rebuild what the store lacks
    def build(self) -> None:
        """Rebuild the missing binaries from the recorded revision; each must hash as recorded."""
        if not self.missing:
            return
        checkout = self.open_checkout()
        self.log(f"rebuilding {', '.join(self.missing)} in {checkout} (make)")
        store = ArtifactStore(self.settings.data_dir)
        built = make_binaries(
            checkout, self.missing, log_file=store.root / f"reproduce-{self.original.commit[:12]}.log"
        )
        mismatches = []
        for name, path in built.items():
            want = self.original.artifacts[name]
            got = sha256_file(path)
            if got != want:
                mismatches.append(
                    {
                        "name": name,
                        "expected": want,
                        "actual": got,
                        "where": f"the rebuild from {self.original.commit[:12]}",
                    }
                )
        if mismatches:
            if self.original.dirty:
                self.log("the original tree was dirty: its binaries need not match the recorded revision")
            raise ArtifactMismatch(mismatches)
        meta = {
            "source_rev": self.original.commit,
            "toolchains": toolchain_versions(),
            "flags": build_flags(checkout),
            "rebuilt_for": self.original.run_id,
        }
        for name, path in built.items():
            self.artifacts[name] = store.put(name, path, meta)
            self.sources[name] = "rebuilt"
        self.log(f"rebuilt {', '.join(built)}: bit-identical to the recorded binaries")

    # 6. tuning
    def apply_tuning(self, inv: Inventory, on_event: EventSink | None = None) -> None:
        """Apply the profiles chosen by :meth:`prepare_tuning`; raise :class:`HostError` if a host fails."""
        if self.tuning.get("status") != "pending":
            return
        from labctl.tuning.tune import tune

        applied: dict[str, list[str]] = {}
        for group, profile in self._profiles:
            self.log(f"re-applying tuning {'+'.join(profile.names)} on {', '.join(h.name for h in group)}")
            rep = tune(self.settings, inv, group, profile, on_event=on_event)
            if not rep.ok:
                raise HostError(
                    f"re-applying the recorded tuning {'+'.join(profile.names)} failed; nothing was run "
                    "(`labctl teardown` restores what was changed; --no-tune reproduces without tuning)",
                    hosts={n: h.msg for n, h in rep.hosts.items() if not h.ok},
                )
            for h in group:
                applied[h.name] = list(profile.names)
        self.tuning = {**self.tuning, "status": "re-applied", "applied": applied}
        self.note(
            f"the recorded tuning was re-applied ({_profiles_text(applied)}) and stays applied: "
            "`labctl teardown` restores the original values"
        )

    def manifest_extra(self, quick_forced: bool) -> dict[str, Any]:
        """What the new run's manifest records about this reproduction.

        ``git`` is the source the experiment and workloads came from: the recorded
        revision (and the original's dirtiness, since the binaries are the original
        ones by hash); ``git.labctl`` is the revision labctl itself ran from.
        """
        return {
            "git": {
                "commit": self.original.commit,
                "dirty": self.original.dirty,
                "labctl": revision(self.root),
            },
            "reproduction": {
                "of": self.original.run_id,
                "commit": self.original.commit,
                "artifacts": dict(self.sources),
                "tuning": {k: v for k, v in self.tuning.items() if k != "profile_files"},
                "quick_forced": quick_forced,
                "warnings": list(self.warnings),
            },
        }

    # 7. the run
    def run(
        self,
        exp: Experiment,
        inv: Inventory,
        hosts: list[Host],
        *,
        quick: bool,
        on_event: EventSink | None = None,
    ) -> Any:
        """Run the recorded matrix with exactly these artifacts; returns the RunReport."""
        from labctl.experiment.service import run_experiment

        quick_forced = quick and not self.original.quick
        spec_file = Path(str(self.original.manifest.get("spec_file") or f"experiments/{exp.name}.yaml"))
        return run_experiment(
            self.settings,
            exp,
            inv,
            hosts,
            spec_file=spec_file,
            quick=quick or self.original.quick,
            log=self.log,
            on_event=on_event,
            reproduces=self.original.run_id,
            artifacts=dict(self.artifacts),
            extra_manifest=self.manifest_extra(quick_forced),
        )

    # 8. the answer
    def finish(self, report: Any) -> ReproductionResult:
        """Compare, save ``reproduction.json`` in the new run and add a section to its report."""
        from labctl.report import render_report

        run_dir = Path(report.outcome.run_dir)
        store = RunStore(self.settings.data_dir)
        manifest = store.manifest(run_dir)
        results = store.results(run_dir)
        doc = compare(self.original.manifest, self.original.results, manifest, results)
        for n in rate_notes(doc):
            self.note(n)
        doc.update(
            status=report.outcome.status,
            source={"commit": self.original.commit, "original_dirty": self.original.dirty},
            artifacts={
                n: {"sha256": a.sha256, "source": self.sources.get(n)}
                for n, a in sorted(self.artifacts.items())
            },
            tuning=self.tuning,
            warnings=list(self.warnings) + list(report.warnings),
        )
        path = run_dir / "reproduction.json"
        atomic_write_json(path, doc)
        render_report(
            run_dir,
            extra_sections=[
                (f"Reproduction of {self.original.run_id}", comparison_html(doc, doc["warnings"]))
            ],
        )
        return ReproductionResult(report, doc, path, doc["warnings"])


def _profiles_text(per_host: Mapping[str, list[str]]) -> str:
    return "; ".join(f"{h}: {'+'.join(p)}" for h, p in per_host.items() if p) or "none"


def reproduce(
    settings: Settings,
    run: str,
    inv: Inventory,
    hosts: list[Host],
    *,
    quick: bool = False,
    tune: bool = True,
    log: Log = print,
    on_event: EventSink | None = None,
) -> ReproductionResult:
    """The whole reproduction in one call (for scripts and notebooks); see :class:`Reproduction`."""
    original = load_original(settings, run)
    exp = experiment_for(original, quick)
    with Reproduction(settings, original, log=log) as repro:
        for w in source_notes(original, repro.root):
            repro.note(w)
        repro.check_artifacts()
        repro.open_checkout()
        repro.prepare_tuning(inv, hosts, enabled=tune)
        repro.build()
        repro.apply_tuning(inv, on_event=on_event)
        report = repro.run(exp, inv, hosts, quick=quick, on_event=on_event)
        return repro.finish(report)
