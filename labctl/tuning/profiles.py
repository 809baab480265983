"""Tuning profiles: validated YAML files that compose with ``include``.

A profile file::

    description: Quiet machine for latency measurements
    include: [low-noise]          # applied first, in order; later values win
    knobs:
      kernel.numa_balancing: 0
      thp.enabled: never

``--profile NAME`` looks for ``profiles/NAME.yaml`` in the project; anything with a
``/`` or a ``.yaml``/``.yml`` suffix is a path. An ``include`` is looked up next to the
including file first, then among the shipped profiles. Every error names the file
and the key, and is raised before any host is touched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from labctl.errors import InputError
from labctl.paths import project_root
from labctl.tuning.catalog import CATALOG, KnobValueError, knob_for_key, profile_keys


class ProfileFile(BaseModel):
    """The schema of one profile file (unknown top-level keys are errors)."""

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    include: list[str] = []
    knobs: dict[str, Any] = {}


@dataclass
class Profile:
    """A profile with its includes resolved: knob id -> wanted value, in apply order."""

    names: list[str]
    knobs: dict[str, Any]
    sources: dict[str, str] = field(default_factory=dict)
    """knob id -> the file that set its final value."""
    files: list[str] = field(default_factory=list)
    description: str = ""


def profiles_dir() -> Path:
    """Where the shipped profiles live."""
    return project_root() / "profiles"


def available_profiles() -> list[str]:
    d = profiles_dir()
    return sorted(p.stem for p in d.glob("*.y*ml")) if d.is_dir() else []


def _is_path(ref: str) -> bool:
    return "/" in ref or ref.endswith((".yaml", ".yml"))


def find_profile(ref: str, near: Path | None = None) -> Path:
    """The file a profile reference names (``near``: directory of an including file)."""
    if not ref or not isinstance(ref, str):
        raise InputError(f"not a profile name: {ref!r}", key="profile")
    if _is_path(ref):
        p = Path(ref) if near is None or Path(ref).is_absolute() else near / ref
        if not p.is_file() and near is not None and Path(ref).is_file():
            p = Path(ref)
        if not p.is_file():
            raise InputError("profile file does not exist", file=str(p), key="profile")
        return p
    dirs = ([near] if near is not None else []) + [profiles_dir()]
    for d in dirs:
        for suffix in (".yaml", ".yml"):
            p = d / f"{ref}{suffix}"
            if p.is_file():
                return p
    raise InputError(
        f"unknown profile {ref!r} (shipped: {', '.join(available_profiles()) or 'none'})", key="profile"
    )


def parse_profile_file(path: Path) -> ProfileFile:
    """Load and validate one file (no includes resolved)."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"not valid YAML: {exc}", file=str(path)) from exc
    except OSError as exc:
        raise InputError(f"cannot read profile: {exc.strerror}", file=str(path)) from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InputError("a profile must be a mapping (description, include, knobs)", file=str(path))
    try:
        model = ProfileFile.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or None
        msg = (
            "unknown key (allowed: description, include, knobs)"
            if err["type"] == "extra_forbidden"
            else err["msg"]
        )
        raise InputError(msg, file=str(path), key=key) from None
    seen: dict[str, str] = {}
    for key, value in model.knobs.items():
        try:
            knob_id, _ = knob_for_key(key, value)
        except KeyError:
            raise InputError(
                f"unknown knob (known: {', '.join(profile_keys())})", file=str(path), key=f"knobs.{key}"
            ) from None
        except KnobValueError as exc:
            raise InputError(str(exc), file=str(path), key=f"knobs.{key}") from None
        if knob_id in seen:
            raise InputError(
                f"exclusive with {seen[knob_id]} (the kernel keeps only one of the pair active)",
                file=str(path),
                key=f"knobs.{key}",
            )
        seen[knob_id] = key
    return model


def load_profile(refs: str | list[str]) -> Profile:
    """Resolve one or more profile references (later ones override earlier ones)."""
    refs = [refs] if isinstance(refs, str) else list(refs)
    if not refs:
        raise InputError("no profile given: pass --profile NAME", key="profile")
    knobs: dict[str, Any] = {}
    sources: dict[str, str] = {}
    files: list[str] = []
    descriptions: list[str] = []
    for ref in refs:
        path = find_profile(ref)
        _resolve(path, [], knobs, sources, files, descriptions)
    ordered = dict(sorted(knobs.items(), key=lambda kv: CATALOG[kv[0]].rank))
    names = [Path(r).stem if _is_path(r) else r for r in refs]
    return Profile(
        names, ordered, {k: sources[k] for k in ordered}, files, "; ".join(d for d in descriptions if d)
    )


def _resolve(
    path: Path,
    stack: list[Path],
    knobs: dict[str, Any],
    sources: dict[str, str],
    files: list[str],
    descriptions: list[str],
) -> None:
    real = path.resolve()
    if real in stack:
        chain = " -> ".join(p.stem for p in [*stack, real])
        raise InputError(f"include cycle: {chain}", file=str(path), key="include")
    model = parse_profile_file(path)
    for inc in model.include:
        try:
            inc_path = find_profile(inc, near=path.parent)
        except InputError as exc:
            raise InputError(f"include {inc!r}: {exc.message}", file=str(path), key="include") from None
        _resolve(inc_path, [*stack, real], knobs, sources, files, descriptions)
    for key, value in model.knobs.items():
        knob_id, normalised = knob_for_key(key, value)
        knobs[knob_id] = normalised
        sources[knob_id] = str(path)
    if str(path) not in files:
        files.append(str(path))
        descriptions.append(model.description.strip())
