"""`labctl book | bookings | extend | release` as a user runs them: exit codes, --json, output.

The main flows run the installed `labctl` in real processes. Checks that are about
one command's validation and messages call the same ``main()`` in this process
(``inproc``): identical parsing, error mapping and output, without paying Python's
start-up for every case.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from labctl.booking.model import utcnow
from labctl.cli.main import main
from tests.conftest import LABCTL, CliResult, run_labctl

Runner = Callable[..., CliResult]

START = (utcnow() + timedelta(days=60)).replace(hour=10, minute=0, second=0)


def iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def book(
    inv: Path,
    hosts: str,
    start: str,
    duration: str,
    owner: str = "alice",
    *extra: str,
    env: dict[str, str] | None = None,
    run: Runner = run_labctl,
) -> CliResult:
    return run(
        "book",
        "-i",
        str(inv),
        "--hosts",
        hosts,
        "--start",
        start,
        "--duration",
        duration,
        "--json",
        *extra,
        env={"LABCTL_OWNER": owner, **(env or {})},
    )


def listing(*args: str, env: dict[str, str] | None = None, run: Runner = run_labctl) -> list[dict]:
    res = run("bookings", "--json", *args, env=env)
    assert res.code == 0, res.stderr
    return res.json["bookings"]


@pytest.fixture
def inproc(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Runner:
    """``labctl ARGS`` through the CLI's own ``main()`` in this process."""

    def run(*args: str, env: dict[str, str] | None = None) -> CliResult:
        capsys.readouterr()
        with monkeypatch.context() as m:
            for key, value in (env or {}).items():
                m.setenv(key, value)
            code = main(list(args))
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run


def test_book_list_extend_release(inventory: Path, backend_env: dict[str, str]) -> None:
    env = backend_env
    made = book(inventory, "h1,h2", iso(START), "4h", "alice", "--purpose", "gc tails", env=env)
    assert made.code == 0, made.stderr
    bid = made.json["booking_id"]
    assert made.json["ok"] is True and made.json["booking"]["hosts"] == ["h1", "h2"]
    [row] = listing(env=env)
    assert {k: row[k] for k in ("id", "owner", "hosts", "start", "end", "state")} == {
        "id": bid,
        "owner": "alice",
        "hosts": ["h1", "h2"],
        "start": iso(START),
        "end": iso(START + timedelta(hours=4)),
        "state": "booked",
    }

    longer = run_labctl("extend", str(bid), "--by", "2h", "--json", env={"LABCTL_OWNER": "alice", **env})
    assert longer.code == 0, longer.stderr
    assert longer.json["booking"]["end"] == iso(START + timedelta(hours=6))

    refused = run_labctl("release", str(bid), "--json", env={"LABCTL_OWNER": "bob", **env})
    assert refused.code == 3 and refused.json["kind"] == "NotOwner" and "alice" in refused.json["error"]
    done = run_labctl("release", str(bid), "--json", env={"LABCTL_OWNER": "alice", **env})
    assert done.code == 0 and done.json["booking"]["state"] == "released"
    assert listing(env=env) == []
    assert [b["state"] for b in listing("--all", env=env)] == ["released"]
    # secrets in the booking URL never reach the output
    if "LABCTL_BOOKING_URL" in env:
        password = env["LABCTL_BOOKING_URL"].split(":")[2].split("@")[0]
        assert password not in made.stdout + made.stderr + done.stdout + done.stderr


def test_plain_output_prints_the_id_and_a_local_time_table(inventory: Path) -> None:
    made = run_labctl(
        "book",
        "-i",
        str(inventory),
        "--hosts",
        "h1",
        "--start",
        iso(START),
        "--duration",
        "1h",
        "--purpose",
        "numa",
        env={"LABCTL_OWNER": "carol", "TZ": "Asia/Kolkata"},
    )
    assert made.code == 0, made.stderr
    assert made.stdout.strip().isdigit()  # `ID=$(labctl book ...)` works
    table = run_labctl("bookings", env={"TZ": "Asia/Kolkata", "COLUMNS": "200"})
    assert table.code == 0
    local = (START + timedelta(hours=5, minutes=30)).strftime("%Y-%m-%d %H:%M")
    assert local in table.stdout and "IST" in table.stdout
    for text in ("carol", "h1", "booked", "numa"):
        assert text in table.stdout


def test_overlap_exits_3_naming_booking_owner_and_window(inventory: Path, inproc: Runner) -> None:
    first = book(inventory, "h1", iso(START), "2h", "alice", run=inproc)
    clash = book(inventory, "h2,h1", iso(START + timedelta(hours=1)), "2h", "bob", run=inproc)
    assert clash.code == 3
    err = clash.json["error"]
    assert f"booking {first.json['booking_id']}" in err and "alice" in err
    assert iso(START) in err and iso(START + timedelta(hours=2)) in err
    assert clash.json["conflicting"]["owner"] == "alice"
    # atomic: h2 was free but is not booked now
    assert [b["hosts"] for b in listing("--all", run=inproc)] == [["h1"]]


def test_margin_setting_between_consecutive_bookings(inventory: Path, inproc: Runner) -> None:
    env = {"LABCTL_BOOKING_MARGIN": "30m"}
    assert book(inventory, "h1", iso(START), "2h", env=env, run=inproc).code == 0
    refused = book(inventory, "h1", iso(START + timedelta(hours=2)), "1h", env=env, run=inproc)
    assert refused.code == 3 and "30m cleaning" in refused.json["error"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--hosts", "h1", "--start", "2031-03-01T10:00:00", "--duration", "1h"], "no time zone"),
        (["--hosts", "h1", "--start", "next tuesday", "--duration", "1h"], "not a time"),
        (["--hosts", "h1", "--start", "now", "--duration", "0"], "positive"),
        (["--hosts", "h1", "--start", "now", "--duration", "-2h"], "positive"),
        (["--hosts", "h1", "--start", "2020-01-01T10:00:00Z", "--duration", "1h"], "in the past"),
        (["--hosts", "nosuch", "--start", "now", "--duration", "1h"], "unknown host 'nosuch'"),
        (
            ["--hosts", "h1", "--start", "now", "--duration", "1h", "--wait-until-free", "soon"],
            "not a duration",
        ),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(
    inventory: Path, args: list[str], needle: str, inproc: Runner
) -> None:
    res = inproc("book", "-i", str(inventory), *args, "--json")
    assert res.code == 2, res.stderr
    assert needle in res.json["error"]
    assert not (Path.cwd() / "labctl-data").exists() or listing("--all", run=inproc) == []


def test_book_needs_an_inventory(inproc: Runner) -> None:
    res = inproc("book", "--hosts", "h1", "--duration", "1h", "--json")
    assert res.code == 2 and "inventory" in res.json["error"]


def test_extend_into_taken_window_exits_3_and_changes_nothing(inventory: Path, inproc: Runner) -> None:
    mine = book(inventory, "h1", iso(START), "2h", "alice", run=inproc).json["booking_id"]
    theirs = book(inventory, "h1", iso(START + timedelta(hours=3)), "1h", "bob", run=inproc).json[
        "booking_id"
    ]
    res = inproc("extend", str(mine), "--by", "2h", "--json", env={"LABCTL_OWNER": "alice"})
    assert res.code == 3 and f"booking {theirs}" in res.json["error"] and "bob" in res.json["error"]
    assert {b["id"]: b["end"] for b in listing(run=inproc)}[mine] == iso(START + timedelta(hours=2))
    for bad in ("0h", "-1h", "later"):
        assert inproc("extend", str(mine), "--by", bad, env={"LABCTL_OWNER": "alice"}).code == 2
    assert inproc("extend", "12345", "--by", "1h").code == 2  # no such booking
    assert inproc("extend", "abc", "--by", "1h").code == 2


def test_forced_release_is_recorded(inventory: Path, inproc: Runner) -> None:
    bid = str(book(inventory, "h1", iso(START), "2h", "alice", run=inproc).json["booking_id"])
    assert inproc("release", bid, "--force").code == 2  # why is required
    res = inproc(
        "release", bid, "--force", "--reason", "alice left for the day", "--json", env={"LABCTL_OWNER": "bob"}
    )
    assert res.code == 0, res.stderr
    b = res.json["booking"]
    assert (b["owner"], b["forced_by"], b["previous_owner"], b["forced_reason"]) == (
        "bob",
        "bob",
        "alice",
        "alice left for the day",
    )
    # the host is free again
    assert book(inventory, "h1", iso(START), "2h", "carol", run=inproc).code == 0


def test_expiry_in_real_time(inventory: Path) -> None:
    made = book(inventory, "h1", "now", "4s", "alice")
    assert made.code == 0, made.stderr
    bid, end = made.json["booking_id"], datetime.fromisoformat(made.json["booking"]["end"])
    assert made.json["booking"]["state"] == "active"
    time.sleep(max(0.0, (end - utcnow()).total_seconds()) + 1.1)  # utcnow() is truncated to the second
    assert listing() == []  # only current and future ones
    assert [(b["id"], b["state"]) for b in listing("--all")] == [(bid, "expired")]
    # the hosts are free for others once it has expired
    assert book(inventory, "h1", "now", "1h", "bob").code == 0


def test_wait_until_free(inventory: Path) -> None:
    holder = book(inventory, "h1", "now", "1h", "alice").json["booking_id"]
    t0 = time.monotonic()
    gave_up = book(inventory, "h1", "now", "1h", "bob", "--wait-until-free", "2s")
    assert gave_up.code == 3 and time.monotonic() - t0 >= 2
    assert f"booking {holder}" in gave_up.json["error"]  # bounded, and says who holds the host
    waiter = subprocess.Popen(
        [
            str(LABCTL),
            "book",
            "-i",
            str(inventory),
            "--hosts",
            "h1",
            "--start",
            "now",
            "--duration",
            "1h",
            "--wait-until-free",
            "120s",
            "--json",
        ],
        env={**os.environ, "LABCTL_OWNER": "bob"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert waiter.stderr is not None
        first = waiter.stderr.readline()  # blocks until it has met the conflict and says it waits
        assert "waiting" in first and f"booking {holder}" in first
        assert run_labctl("release", str(holder), env={"LABCTL_OWNER": "alice"}).code == 0
        out, err = waiter.communicate(timeout=60)
    finally:
        if waiter.poll() is None:
            waiter.kill()
    assert waiter.returncode == 0, err
    assert json.loads(out)["booking"]["owner"] == "bob"
    assert [b["owner"] for b in listing()] == ["bob"]
