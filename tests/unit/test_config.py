"""Settings precedence (flag > env > file > default) and secret handling."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from labctl.config import load_settings, parse_duration
from labctl.errors import InputError


def write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_precedence_flag_env_file_default(tmp_path: Path) -> None:
    cfg = write(tmp_path / "labctl.yaml", "influx_db: from_file\ninflux_org: file_org\nforks: 3\n")
    env = {"LABCTL_INFLUX_DB": "from_env", "LABCTL_INFLUX_ORG": "env_org"}
    s = load_settings({"influx_db": "from_flag"}, cfg, env)
    assert s.influx_db == "from_flag" and s.sources["influx_db"] == "flag"
    assert s.influx_org == "env_org" and s.sources["influx_org"] == "env"
    assert s.forks == 3 and s.sources["forks"].startswith("config:")
    assert s.influx_bucket == "labctl" and s.sources["influx_bucket"] == "default"


def test_empty_env_value_does_not_override(tmp_path: Path) -> None:
    s = load_settings({}, None, {"LABCTL_INFLUX_DB": "", "HOME": str(tmp_path)})
    assert s.influx_db == "labctl"


def test_unknown_key_names_file_and_key(tmp_path: Path) -> None:
    cfg = write(tmp_path / "labctl.yaml", "influx_dbb: x\n")
    with pytest.raises(InputError) as e:
        load_settings({}, cfg, {})
    assert "influx_dbb" in str(e.value) and str(cfg) in str(e.value)
    assert e.value.exit_code == 2


def test_bad_value_names_env_variable() -> None:
    with pytest.raises(InputError) as e:
        load_settings({}, None, {"LABCTL_FORKS": "many"})
    assert "LABCTL_FORKS" in str(e.value)


def test_bad_yaml(tmp_path: Path) -> None:
    cfg = write(tmp_path / "labctl.yaml", "a: [unclosed\n")
    with pytest.raises(InputError, match="not valid YAML"):
        load_settings({}, cfg, {})


def test_missing_explicit_config(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_settings({}, tmp_path / "nope.yaml", {})


def test_secret_from_env_is_hidden() -> None:
    s = load_settings({}, None, {"LABCTL_INFLUX_TOKEN": "s3cr3t-token"})
    assert s.influx_token is not None and s.influx_token.get_secret_value() == "s3cr3t-token"
    assert "s3cr3t-token" not in repr(s) and "s3cr3t-token" not in str(s.public())
    assert s.public()["influx_token"] == "(set)"


def test_secret_file_must_be_private(tmp_path: Path) -> None:
    f = write(tmp_path / "token", "tok-from-file\n", 0o644)
    with pytest.raises(InputError, match="readable by others"):
        load_settings({}, None, {"LABCTL_INFLUX_TOKEN_FILE": str(f)})
    os.chmod(f, 0o600)
    s = load_settings({}, None, {"LABCTL_INFLUX_TOKEN_FILE": str(f)})
    assert s.influx_token is not None and s.influx_token.get_secret_value() == "tok-from-file"


def test_secret_in_world_readable_config_is_refused(tmp_path: Path) -> None:
    cfg = write(tmp_path / "labctl.yaml", "influx_token: abc\n", 0o644)
    with pytest.raises(InputError, match="0600"):
        load_settings({}, cfg, {})
    os.chmod(cfg, 0o600)
    assert load_settings({}, cfg, {}).influx_token is not None


def test_booking_url_default_is_sqlite_in_data_dir(tmp_path: Path) -> None:
    s = load_settings({"data_dir": str(tmp_path)}, None, {})
    assert s.booking_db_url == f"sqlite:///{tmp_path / 'bookings.sqlite'}"
    assert s.public()["booking_url"] is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("4h", 14400), ("1h30m", 5400), ("2d", 172800), ("120", 120), ("0.5h", 1800)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "4x", "1h 30m", "-5m", "4h!"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(InputError):
        parse_duration(text)
