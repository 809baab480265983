"""Settings: one declaration per setting, usable as flag, environment variable and key.

Precedence: command-line flag > ``LABCTL_<NAME>`` environment variable > key in
``labctl.yaml`` > default. Secrets (tokens, passwords) are never accepted as flags:
they come from the environment, from a ``<name>_file`` that only its owner can read
(mode 0600 or stricter), or from a ``labctl.yaml`` that is itself 0600. They are held
as :class:`pydantic.SecretStr` so they never show in a repr, a log or a manifest.
"""

from __future__ import annotations

import getpass
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError

from labctl.errors import InputError

ENV_PREFIX = "LABCTL_"


def _xdg_data() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "labctl"


@dataclass(frozen=True)
class SettingSpec:
    name: str
    help: str
    default: Callable[[], Any] | Any = None
    secret: bool = False
    flag: bool = True  # exposed as a global --flag (never for secrets)

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")

    def default_value(self) -> Any:
        return self.default() if callable(self.default) else self.default


SPECS: tuple[SettingSpec, ...] = (
    SettingSpec("data_dir", "local state, run store, SQLite bookings", _xdg_data),
    SettingSpec("inventory", "default inventory when -i is not given (e.g. the lab's)"),
    SettingSpec(
        "booking_url", "SQLAlchemy URL of the booking store (default: SQLite in data_dir)", flag=False
    ),
    SettingSpec("owner", "booking owner", lambda: getpass.getuser()),
    SettingSpec("booking_margin", "cleaning margin between consecutive bookings, e.g. 15m", "0s"),
    SettingSpec("teardown_grace", "how long after a booking's end its owner may still tear down", "2h"),
    SettingSpec("influx_url", "InfluxDB URL, e.g. http://127.0.0.1:8086 (unset: spool only)"),
    SettingSpec("influx_api", "InfluxDB write API: v1 (/write) or v2 (/api/v2/write)", "v2"),
    SettingSpec("influx_db", "InfluxDB 1.x database", "labctl"),
    SettingSpec("influx_org", "InfluxDB 2.x organisation", "labctl"),
    SettingSpec("influx_bucket", "InfluxDB 2.x bucket", "labctl"),
    SettingSpec("influx_user", "InfluxDB 1.x user (optional)"),
    SettingSpec("influx_token", "InfluxDB 2.x token", secret=True, flag=False),
    SettingSpec("influx_password", "InfluxDB 1.x password", secret=True, flag=False),
    SettingSpec("noise_threshold", "relative difference below which results count as noise", 0.01),
    SettingSpec("forks", "parallel Ansible forks", 16),
    SettingSpec(
        "test_pause_after_first_write",
        "TEST ONLY: seconds to pause after the first knob write",
        0.0,
        flag=False,
    ),
)
SPEC_BY_NAME = {s.name: s for s in SPECS}


class Settings(BaseModel):
    """Resolved settings. ``sources`` says where each value came from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data_dir: Path
    inventory: Path | None = None
    booking_url: SecretStr | None = None
    owner: str
    booking_margin: str = "0s"
    teardown_grace: str = "2h"
    influx_url: str | None = None
    influx_api: Literal["v1", "v2"] = "v2"
    influx_db: str = "labctl"
    influx_org: str = "labctl"
    influx_bucket: str = "labctl"
    influx_user: str | None = None
    influx_token: SecretStr | None = None
    influx_password: SecretStr | None = None
    noise_threshold: float = 0.01
    forks: int = 16
    test_pause_after_first_write: float = 0.0
    sources: dict[str, str] = {}

    @property
    def booking_db_url(self) -> str:
        if self.booking_url is not None:
            return self.booking_url.get_secret_value()
        return f"sqlite:///{self.data_dir / 'bookings.sqlite'}"

    def public(self) -> dict[str, Any]:
        """Settings fit to print: secrets reduced to whether they are set."""
        out: dict[str, Any] = {}
        for spec in SPECS:
            value = getattr(self, spec.name)
            if spec.secret or spec.name == "booking_url":
                out[spec.name] = "(set)" if value is not None else None
            else:
                out[spec.name] = str(value) if isinstance(value, Path) else value
        return out


def _is_private(path: Path) -> bool:
    mode = path.stat().st_mode
    return not mode & (stat.S_IRWXG | stat.S_IRWXO)


def _read_secret_file(path: Path, where: str) -> str:
    if not path.is_file():
        raise InputError(f"secret file {path} does not exist", key=where)
    if not _is_private(path):
        raise InputError(f"secret file {path} is readable by others; chmod 600 it", key=where)
    return path.read_text().strip()


def find_config_file(explicit: Path | None, env: Mapping[str, str]) -> Path | None:
    if explicit is not None:
        if not explicit.is_file():
            raise InputError("config file does not exist", file=str(explicit))
        return explicit
    if env.get(ENV_PREFIX + "CONFIG"):
        p = Path(env[ENV_PREFIX + "CONFIG"])
        if not p.is_file():
            raise InputError("config file named by LABCTL_CONFIG does not exist", file=str(p))
        return p
    for p in (
        Path("labctl.yaml"),
        Path(env.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "labctl" / "labctl.yaml",
    ):
        if p.is_file():
            return p
    return None


def _load_file(path: Path | None) -> tuple[dict[str, Any], bool]:
    if path is None:
        return {}, False
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise InputError(f"not valid YAML: {exc}", file=str(path)) from exc
    if not isinstance(data, dict):
        raise InputError("must be a mapping of setting names to values", file=str(path))
    for key in data:
        base = key[:-5] if isinstance(key, str) and key.endswith("_file") else key
        if base not in SPEC_BY_NAME:
            raise InputError(
                f"unknown setting (known: {', '.join(sorted(SPEC_BY_NAME))})", file=str(path), key=str(key)
            )
    return data, _is_private(path)


def load_settings(
    flags: Mapping[str, Any] | None = None,
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve every setting by precedence flag > env > file > default."""
    env = os.environ if env is None else env
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    path = find_config_file(config_file, env)
    file_values, file_private = _load_file(path)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for spec in SPECS:
        if spec.name in flags:
            values[spec.name], sources[spec.name] = flags[spec.name], "flag"
        elif spec.env in env and env[spec.env] != "":
            values[spec.name], sources[spec.name] = env[spec.env], "env"
        elif spec.secret and env.get(spec.env + "_FILE"):
            values[spec.name] = _read_secret_file(Path(env[spec.env + "_FILE"]), spec.env + "_FILE")
            sources[spec.name] = "file"
        elif spec.name in file_values:
            if spec.secret and not file_private:
                raise InputError(
                    "secrets may only be kept in a file of mode 0600", file=str(path), key=spec.name
                )
            values[spec.name], sources[spec.name] = file_values[spec.name], f"config:{path}"
        elif spec.secret and spec.name + "_file" in file_values:
            values[spec.name] = _read_secret_file(Path(file_values[spec.name + "_file"]), spec.name + "_file")
            sources[spec.name] = "file"
        else:
            default = spec.default_value()
            if default is None:
                continue
            values[spec.name], sources[spec.name] = default, "default"
    try:
        return Settings(**values, sources=sources)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else "?"
        origin = sources.get(name, "?")
        where = SPEC_BY_NAME[name].env if origin == "env" else name
        raise InputError(f"{err['msg']} (from {origin})", key=where) from None


def parse_duration(text: str, key: str = "duration") -> float:
    """'90s', '15m', '4h', '2d', '1h30m' or a number of seconds → seconds (> 0 not enforced)."""
    import re

    s = str(text).strip()
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return float(s)
    parts = re.findall(r"(\d+(?:\.\d+)?)([smhd])", s)
    if not parts or "".join(n + u for n, u in parts) != s:
        raise InputError(f"not a duration: {text!r} (use e.g. 90s, 15m, 4h, 1h30m)", key=key)
    mult = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return sum(float(n) * mult[u] for n, u in parts)
