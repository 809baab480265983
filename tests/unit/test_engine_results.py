"""Typed results from recorded ansible-runner events and stats (no hosts needed)."""

from __future__ import annotations

import json
from pathlib import Path

from labctl.engine import ResultBuilder

DATA = json.loads((Path(__file__).parent / "data" / "runner_events.json").read_text())


def build() -> tuple[ResultBuilder, object]:
    b = ResultBuilder()
    for ev in DATA["events"]:
        b.feed(ev)
    b.apply_stats(DATA["stats"])
    return b, b.build(
        "pb.yml", DATA["status"], DATA["rc"], Path("/tmp/a"), 1.0, False, ["good", "bad", "gone"]
    )


def test_failed_unreachable_and_ok_hosts() -> None:
    _, r = build()
    hosts = r.hosts  # type: ignore[attr-defined]
    assert hosts["good"].ok and hosts["good"].changed == 1 and not hosts["good"].failed
    assert hosts["bad"].failed and not hosts["bad"].ok
    assert hosts["bad"].failed_task == "Fail on bad" and "bad host refuses" in hosts["bad"].msg
    assert hosts["gone"].unreachable and "Connection refused" in hosts["gone"].msg
    assert not r.ok  # type: ignore[attr-defined]
    assert set(r.failures()) == {"bad", "gone"}  # type: ignore[attr-defined]


def test_labctl_facts_are_collected_from_events() -> None:
    b, _ = build()
    assert b.facts["good"]["labctl_example"] == {"answer": 42}
    assert "bad" not in b.facts  # it failed before the fact task


def test_host_that_never_reported_is_marked_when_play_failed() -> None:
    b = ResultBuilder()
    r = b.build("pb.yml", "failed", 2, Path("/tmp/a"), 0.1, False, ["silent"])
    assert not r.hosts["silent"].ok and "before this host reported" in r.hosts["silent"].msg


def test_ignored_failure_does_not_fail_host() -> None:
    b = ResultBuilder()
    b.feed(
        {
            "event": "runner_on_failed",
            "event_data": {"host": "h", "task": "t", "ignore_errors": True, "res": {"msg": "meh"}},
        }
    )
    b.apply_stats({"ok": {"h": 1}, "changed": {}, "failures": {}, "dark": {}})
    assert b.hosts["h"].ok
