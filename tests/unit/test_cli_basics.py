"""The CLI contract: help lists the commands, bad input exits 2 with a JSON document."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import run_labctl


def test_help_lists_stage_commands() -> None:
    r = run_labctl("--help")
    assert r.code == 0
    for cmd in (
        "doctor",
        "sandbox",
        "provision",
        "book",
        "tune",
        "deploy",
        "run",
        "report",
        "teardown",
        "reproduce",
        "up",
        "ship",
    ):
        assert cmd in r.stdout


def test_unknown_flag_exits_2_with_json() -> None:
    r = run_labctl("hosts", "--no-such-flag", "--json")
    assert r.code == 2
    assert r.json["ok"] is False and "no-such-flag" in r.json["error"]


def test_missing_inventory_exits_2_naming_file(tmp_path: Path) -> None:
    r = run_labctl("provision", "-i", str(tmp_path / "missing.yml"), "--json")
    assert r.code == 2, r.stderr
    assert r.json["ok"] is False and "missing.yml" in r.json["error"]


def test_malformed_inventory_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("all:\n  hosts: [unclosed\n")
    r = run_labctl("provision", "-i", str(bad), "--json")
    assert r.code == 2
    assert "bad.yml" in r.json["error"]


def test_unknown_limit_host_exits_2() -> None:
    r = run_labctl("provision", "-i", "inventories/local.yml", "--limit", "nosuchhost", "--json")
    assert r.code == 2
    assert "nosuchhost" in r.json["error"]


def test_bad_setting_in_env_exits_2() -> None:
    r = run_labctl("hosts", "--json", env={"LABCTL_FORKS": "lots"})
    assert r.code == 2 and "LABCTL_FORKS" in r.json["error"]


def test_hosts_without_facts(tmp_path: Path) -> None:
    r = run_labctl("hosts", "--json")
    assert r.code == 0 and r.json == {"ok": True, "facts": {}}
