"""The booking gate: host-touching commands refuse required hosts unless the caller holds a booking."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from labctl.booking.gate import booking_required, require_booking
from labctl.booking.model import BookingRequest, utcnow
from labctl.booking.store import open_store
from labctl.config import Settings, load_settings
from labctl.errors import InputError, NotBooked, NotOwner
from labctl.inventory import Inventory, load_inventory
from tests.booking.helpers import write_inventory
from tests.conftest import run_labctl

NOW = utcnow()
H = timedelta(hours=1)


@pytest.fixture(scope="module")
def inv(tmp_path_factory: pytest.TempPathFactory) -> Inventory:
    path = tmp_path_factory.mktemp("inv") / "lab.yml"
    return load_inventory(write_inventory(path, {"h1": True, "h2": True, "free1": False}))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(
        env={
            "LABCTL_DATA_DIR": str(tmp_path / "data"),
            "LABCTL_OWNER": "alice",
            "LABCTL_TEARDOWN_GRACE": "2h",
        }
    )


def as_(settings: Settings, owner: str) -> Settings:
    return settings.model_copy(update={"owner": owner})


def make(settings: Settings, owner: str, hosts: str, start: timedelta, hours: float) -> int:
    """A booking starting ``start`` from NOW (may be negative: created as if earlier)."""
    begin = NOW + start
    with open_store(settings) as store:
        b = store.create(
            BookingRequest(owner=owner, hosts=tuple(hosts.split(",")), start=begin, end=begin + hours * H),
            now=begin - H,
        )
    return b.id


def test_hosts_without_the_variable_need_no_booking(settings: Settings, inv: Inventory) -> None:
    assert require_booking(settings, inv, ["free1"], command="provision") is None
    assert not (settings.data_dir / "bookings.sqlite").exists()  # not even the store was opened


def test_required_host_without_booking_is_refused_and_says_it_is_free(
    settings: Settings, inv: Inventory
) -> None:
    with pytest.raises(NotBooked) as exc:
        require_booking(settings, inv, ["free1", "h1"], command="tune")
    msg = exc.value.message
    assert "h1" in msg and "tune" in msg and "free now" in msg and "labctl book" in msg
    assert exc.value.exit_code == 3


def test_refusal_names_the_current_holder(settings: Settings, inv: Inventory) -> None:
    theirs = make(settings, "bob", "h1", -H, 2)
    with pytest.raises(NotBooked) as exc:
        require_booking(settings, inv, ["h1"], command="deploy")
    msg = exc.value.message
    assert "h1" in msg and "bob" in msg and f"booking {theirs}" in msg and "Z.." in msg


def test_active_booking_covering_every_host_lets_the_command_through(
    settings: Settings, inv: Inventory
) -> None:
    bid = make(settings, "alice", "h1,h2", -H, 2)
    hosts = [inv.hosts["h1"], inv.hosts["h2"], inv.hosts["free1"]]  # Host objects, as commands pass them
    used = require_booking(settings, inv, hosts, command="run")
    assert used is not None
    assert used["id"] == bid and used["state"] == "active" and used["covering"] == {"h1": bid, "h2": bid}
    json.dumps(used)  # callers record it as is


def test_every_targeted_host_must_be_covered(settings: Settings, inv: Inventory) -> None:
    make(settings, "alice", "h1", -H, 2)
    with pytest.raises(NotBooked, match="h2"):
        require_booking(settings, inv, ["h1", "h2"], command="provision")
    # a second booking of the caller's for the other host is enough
    other = make(settings, "alice", "h2", -H, 2)
    used = require_booking(settings, inv, ["h1", "h2"], command="provision")
    assert used is not None and used["covering"]["h2"] == other


def test_someone_elses_booking_does_not_count(settings: Settings, inv: Inventory) -> None:
    make(settings, "alice", "h1", -H, 2)
    with pytest.raises(NotBooked, match="alice"):
        require_booking(as_(settings, "bob"), inv, ["h1"], command="provision")


def test_future_and_released_bookings_do_not_count(settings: Settings, inv: Inventory) -> None:
    future = make(settings, "alice", "h1", H, 2)
    with pytest.raises(NotBooked, match=f"your booking {future} starts"):
        require_booking(settings, inv, ["h1"])
    now_id = make(settings, "alice", "h2", -H, 2)
    with open_store(settings) as store:
        store.release(now_id, actor="alice")
    with pytest.raises(NotBooked):
        require_booking(settings, inv, ["h2"])


def test_expired_booking_refuses_all_but_teardown_within_grace(settings: Settings, inv: Inventory) -> None:
    bid = make(settings, "alice", "h1", -3 * H, 2)  # ended an hour ago; grace is 2h
    for command in ("provision", "tune", "deploy", "run"):
        with pytest.raises(NotBooked, match=f"your booking {bid} expired"):
            require_booking(settings, inv, ["h1"], command=command)
    used = require_booking(settings, inv, ["h1"], command="teardown")
    assert used is not None and used["id"] == bid and used["state"] == "expired"
    # after the grace even teardown is refused
    with pytest.raises(NotBooked):
        require_booking(settings, inv, ["h1"], command="teardown", now=NOW + 2 * H)


def test_teardown_grace_ends_when_someone_elses_booking_starts(settings: Settings, inv: Inventory) -> None:
    make(settings, "alice", "h1", -3 * H, 2)
    theirs = make(settings, "bob", "h1", -0.5 * H, 2)
    with pytest.raises(NotBooked, match=f"booking {theirs} by bob"):
        require_booking(settings, inv, ["h1"], command="teardown")


def test_explicit_booking_id(settings: Settings, inv: Inventory) -> None:
    mine = make(settings, "alice", "h1", -H, 2)
    theirs = make(settings, "bob", "h2", -H, 2)
    used = require_booking(settings, inv, ["h1"], booking_id=str(mine))
    assert used is not None and used["id"] == mine
    with pytest.raises(NotOwner, match="bob"):
        require_booking(settings, inv, ["h2"], booking_id=theirs)
    with pytest.raises(NotBooked, match="does not cover host h2"):
        require_booking(settings, inv, ["h1", "h2"], booking_id=mine)
    with pytest.raises(InputError, match="no booking 999"):
        require_booking(settings, inv, ["h1"], booking_id="999")
    with pytest.raises(InputError, match="not a booking id"):
        require_booking(settings, inv, ["h1"], booking_id="abc")


def test_forced_release_takes_the_hosts_from_the_old_owner(settings: Settings, inv: Inventory) -> None:
    bid = make(settings, "alice", "h1", -H, 2)
    with open_store(settings) as store:
        store.release(bid, actor="bob", force=True, reason="stuck run")
    with pytest.raises(NotBooked):
        require_booking(settings, inv, ["h1"])
    with pytest.raises(NotOwner):
        require_booking(settings, inv, ["h1"], booking_id=bid)


def test_group_vars_and_string_values_count(tmp_path: Path, settings: Settings) -> None:
    by_group = load_inventory(write_inventory(tmp_path / "g.yml", {"g1": False}, group_required=True))
    assert booking_required(by_group, "g1")
    with pytest.raises(NotBooked, match="g1"):
        require_booking(settings, by_group, ["g1"])
    text = tmp_path / "s.yml"
    text.write_text(
        "all:\n  hosts:\n    s1: {labctl_booking_required: 'yes'}\n    s2: {labctl_booking_required: maybe}\n"
    )
    strings = load_inventory(text)
    assert booking_required(strings, "s1")
    with pytest.raises(InputError, match="labctl_booking_required must be true or false"):
        require_booking(settings, strings, ["s2"])


@pytest.mark.integration
def test_provision_is_gated_end_to_end(tmp_path: Path) -> None:
    """`labctl provision` refuses without a booking (no Ansible run), and runs with one."""
    inv_path = write_inventory(tmp_path / "gated.yml", {"h1": True})
    data = tmp_path / "data"
    env = {"LABCTL_DATA_DIR": str(data), "LABCTL_OWNER": "alice"}
    refused = run_labctl("provision", "--check", "-i", str(inv_path), "--json", env=env, timeout=300)
    assert refused.code == 3, refused.stderr
    assert "h1" in refused.json["error"] and refused.json["kind"] == "NotBooked"
    assert not (data / "ansible").exists()  # ansible-runner never started

    booked = run_labctl(
        "book", "-i", str(inv_path), "--hosts", "h1", "--start", "now", "--duration", "1h", "--json", env=env
    )
    assert booked.code == 0, booked.stderr
    ran = run_labctl("provision", "--check", "-i", str(inv_path), "--json", env=env, timeout=600)
    assert ran.code != 3, ran.stderr
    assert "h1" in ran.json["hosts"]
    assert (data / "ansible").is_dir()
    # someone else is still refused while alice holds the host, naming her booking
    other = run_labctl(
        "provision", "--check", "-i", str(inv_path), "--json", env={**env, "LABCTL_OWNER": "bob"}, timeout=300
    )
    assert other.code == 3 and f"booking {booked.json['booking_id']}" in other.json["error"]
