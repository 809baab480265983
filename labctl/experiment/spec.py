"""Experiment specs (experiments/*.yaml): validated models; unknown keys are errors.

A spec says which question it answers (claims with machine-checkable expectations),
what runs (workload, variants, parameters), under which load (rates absolute or as
fractions of the lowest measured capacity), how often (repetitions) and where
(placement of the server and the load generator).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from labctl.config import parse_duration
from labctl.errors import InputError
from labctl.experiment.claims import Claim, ClaimSyntaxError, parse_claim

LANGS = ("go", "rust", "cpp")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.+-]{0,40}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _KeyedError(ValueError):
    """A cross-field problem that knows which key it is about (pydantic reports () for those)."""

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key


def _seconds(v: Any, what: str) -> float:
    if isinstance(v, bool):
        raise ValueError(f"{what} must be a duration like 30s or 2m")
    if isinstance(v, int | float):
        s = float(v)
    elif isinstance(v, str):
        try:
            s = parse_duration(v, what)
        except InputError as exc:
            raise ValueError(exc.message) from None
    else:
        raise ValueError(f"{what} must be a duration like 30s or 2m")
    return s


def _checked_seconds(v: Any, what: str) -> float:
    """A duration (warm-ups may be 0, anything else must be > 0), checked on the field itself."""
    s = _seconds(v, what)
    if what.endswith("warmup"):
        if s < 0:
            raise ValueError(f"{what} must be >= 0")
    elif s <= 0:
        raise ValueError(f"{what} must be > 0")
    return s


class ClaimSpec(_Strict):
    id: str = Field(pattern=r"^C\d+\.\d+$")
    statement: str = ""
    expect: str
    rate: str | None = None  # rate label the claim is judged at (default: the highest)

    @field_validator("expect")
    @classmethod
    def _parse(cls, v: str) -> str:
        try:
            parse_claim(v)
        except ClaimSyntaxError as exc:
            raise ValueError(f"bad claim expression {v!r}: {exc}") from None
        return v

    @property
    def claim(self) -> Claim:
        return parse_claim(self.expect)


class Variant(_Strict):
    name: str
    lang: Literal["go", "rust", "cpp"]
    env: dict[str, str] = {}
    flags: list[str] = []
    description: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("variant names are lower-case letters, digits and _.+- (max 41)")
        return v

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        for k in v:
            if not re.fullmatch(r"[A-Z_][A-Z0-9_]*", k):
                raise ValueError(f"environment variable name {k!r} is not valid")
        return v


class Params(_Strict):
    accounts: int = Field(100000, ge=1)
    window: int = Field(32, ge=1)
    merchants: int = Field(10000, ge=1)
    rules: int = Field(200, ge=1, le=100000)
    workers: int | None = Field(None, ge=1)
    seed: int = Field(42, ge=0)


class CapacitySpec(_Strict):
    duration: float = 5.0
    warmup: float = 2.0
    connections: int = Field(16, ge=1, le=4096)

    @field_validator("duration", "warmup", mode="before")
    @classmethod
    def _dur(cls, v: Any, info: ValidationInfo) -> float:
        return _checked_seconds(v, f"capacity {info.field_name}")


class LoadSpec(_Strict):
    rates: list[str | float | int]
    duration: float
    warmup: float = 5.0
    connections: int = Field(16, ge=1, le=4096)
    timeout_ms: int = Field(2000, ge=1)
    capacity: CapacitySpec = CapacitySpec()

    @field_validator("duration", "warmup", mode="before")
    @classmethod
    def _dur(cls, v: Any, info: ValidationInfo) -> float:
        return _checked_seconds(v, str(info.field_name))

    @field_validator("rates", mode="before")
    @classmethod
    def _rates(cls, v: Any) -> Any:
        # Before type coercion, so YAML's `yes` (True) or an empty item is not silently a rate of 1.
        if isinstance(v, list):
            if not v:
                raise ValueError("at least one rate is needed")
            labels = [rate_label(r) for r in v]
            dup = sorted({x for x in labels if labels.count(x) > 1})
            if dup:
                # The same rate twice would run its cells twice and pool them as one group.
                raise ValueError(f"rates must be distinct ({', '.join(dup)} appears twice)")
        return v

    @property
    def relative(self) -> bool:
        return any(parse_rate(r)[0] == "fraction" for r in self.rates)


class Role(_Strict):
    host: str | None = None  # inventory host name; default: a host whose labctl_role fits, else the first
    numa_node: int | None = Field(None, ge=0)
    cpus: str | None = Field(None, pattern=r"^\d+(-\d+)?(,\d+(-\d+)?)*$")

    @field_validator("cpus")
    @classmethod
    def _ranges(cls, v: str | None) -> str | None:
        for part in (v or "").split(","):
            lo, _, hi = part.partition("-")
            if hi and int(hi) < int(lo):
                raise ValueError(f"CPU range {part!r} runs backwards (write {hi}-{lo})")
        return v


class Placement(_Strict):
    server: Role = Role()
    client: Role = Role()


class QuickSpec(_Strict):
    """Overrides for --quick: a few seconds per cell, one repetition, same code path."""

    load: dict[str, Any] = {}
    params: dict[str, Any] = {}
    repetitions: int = 1
    variants: list[str] | None = None


class Experiment(_Strict):
    name: str
    description: str = ""
    workload: Literal["riskd"] = "riskd"
    claims: list[ClaimSpec] = []
    variants: list[Variant]
    baseline: str
    params: Params = Params()
    load: LoadSpec
    repetitions: int = Field(3, ge=1, le=1000)
    placement: Placement = Placement()
    quick: QuickSpec = QuickSpec()

    @model_validator(mode="after")
    def _cross(self, info: ValidationInfo) -> Experiment:
        names = [v.name for v in self.variants]
        for i, n in enumerate(names):
            if n in names[:i]:
                raise _KeyedError(f"variant names must be unique ({n!r} appears twice)", f"variants.{i}.name")
        if self.baseline not in names:
            raise _KeyedError(
                f"baseline {self.baseline!r} is not a variant (variants: {', '.join(names)})", "baseline"
            )
        labels = [rate_label(r) for r in self.load.rates]
        for i, c in enumerate(self.claims):
            for ref in c.claim.refs():
                if ref.variant not in names:
                    raise _KeyedError(
                        f"claim {c.id}: unknown variant {ref.variant!r} in {c.expect!r}", f"claims.{i}.expect"
                    )
            if c.rate is not None and c.rate not in labels:
                raise _KeyedError(
                    f"claim {c.id}: rate {c.rate!r} is not one of the load rates {labels}", f"claims.{i}.rate"
                )
        if self.quick.variants:
            unknown = [v for v in self.quick.variants if v not in names]
            if unknown:
                raise _KeyedError(f"quick.variants names unknown variants {unknown}", "quick.variants")
        if not (info.context or {}).get("quickened"):
            # A broken quick section must fail now, naming quick.…, not later under --quick.
            try:
                self.quickened()
            except ValidationError as exc:
                key, msg = _describe(exc)
                raise _KeyedError(f"with the quick overrides: {msg}", f"quick.{key}") from None
        return self

    def variant(self, name: str) -> Variant:
        return next(v for v in self.variants if v.name == name)

    def quickened(self) -> Experiment:
        """The same experiment with the quick overrides applied (validated again)."""
        data = self.model_dump(mode="python")
        data["load"] = {**data["load"], **self.quick.load}
        data["params"] = {**data["params"], **self.quick.params}
        data["repetitions"] = self.quick.repetitions
        if self.quick.variants:
            keep = set(self.quick.variants) | {self.baseline}
            data["variants"] = [v for v in data["variants"] if v["name"] in keep]
            data["claims"] = [
                c for c in data["claims"] if all(r.variant in keep for r in parse_claim(c["expect"]).refs())
            ]
        try:
            labels = [rate_label(r) for r in data["load"]["rates"]]
        except (TypeError, ValueError):
            labels = []  # a bad quick rate: model_validate below reports it with its key
        for c in data["claims"]:
            if c.get("rate") not in (None, *labels):
                c["rate"] = None
        return Experiment.model_validate(data, context={"quickened": True})


def parse_rate(r: Any) -> tuple[str, float]:
    """'50%' → ('fraction', 0.5); 2000 → ('absolute', 2000.0). Rates must be > 0."""
    if isinstance(r, bool):
        raise ValueError(f"rate {r!r} is not a number")
    if isinstance(r, int | float):
        if r <= 0:
            raise ValueError(f"rate {r!r} must be > 0")
        return "absolute", float(r)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%\s*", str(r))
    if m:
        f = float(m.group(1)) / 100
        if not 0 < f <= 2:
            raise ValueError(f"rate {r!r} must be between 0% (exclusive) and 200%")
        return "fraction", f
    try:
        v = float(str(r))
    except ValueError:
        raise ValueError(f"rate {r!r} is neither a number nor a percentage like '50%'") from None
    if v <= 0:
        raise ValueError(f"rate {r!r} must be > 0")
    return "absolute", v


def rate_label(r: Any) -> str:
    kind, v = parse_rate(r)
    return f"{round(v * 100, 2):g}%" if kind == "fraction" else f"{v:g}rps"


def _describe(exc: ValidationError) -> tuple[str, str]:
    """(key path, message) of the first problem in a validation error."""
    err = exc.errors()[0]
    ctx_err = (err.get("ctx") or {}).get("error")
    if isinstance(ctx_err, _KeyedError):
        return ctx_err.key, str(ctx_err)
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    return ".".join(str(p) for p in err["loc"]) or "(top level)", msg


def load_experiment(path: str | Path, quick: bool = False) -> Experiment:
    """Read and validate a spec; InputError names the file and the key on any problem."""
    p = Path(path)
    if not p.is_file():
        raise InputError("experiment spec does not exist", file=str(p))
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"not valid YAML: {exc}", file=str(p)) from None
    if not isinstance(data, dict):
        raise InputError("an experiment spec is a mapping", file=str(p))
    try:
        exp = Experiment.model_validate(data)
        return exp.quickened() if quick else exp
    except ValidationError as exc:
        key, msg = _describe(exc)
        raise InputError(msg, file=str(p), key=key) from None
