"""Pure booking logic: time parsing, durations, state derivation, overlap. No database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from labctl.booking.model import (
    Booking,
    BookingRequest,
    State,
    derive_state,
    human_duration,
    iso_utc,
    parse_booking_id,
    parse_hosts,
    parse_margin,
    parse_positive_duration,
    parse_time,
    windows_overlap,
)
from labctl.errors import InputError

T0 = datetime(2031, 3, 1, 10, 0, tzinfo=UTC)


def test_now_is_the_given_clock() -> None:
    assert parse_time("now", now=T0) == T0
    assert parse_time(" NOW ", now=T0) == T0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2031-03-01T10:00:00Z", T0),
        ("2031-03-01T11:00:00+01:00", T0),
        ("2031-03-01T05:00-05:00", T0),
        ("2031-03-01 10:00:00+00:00", T0),
        ("2031-03-01T10:00:00.000Z", T0),
    ],
)
def test_iso_times_with_a_zone_become_utc(text: str, expected: datetime) -> None:
    value = parse_time(text)
    assert value == expected
    assert value.tzinfo == UTC


@pytest.mark.parametrize("text", ["2031-03-01T10:00:00", "2031-03-01", "2031-03-01 10:00"])
def test_a_time_without_zone_is_refused_and_says_so(text: str) -> None:
    with pytest.raises(InputError, match="no time zone") as exc:
        parse_time(text)
    assert exc.value.exit_code == 2


@pytest.mark.parametrize("text", ["tomorrow", "10:00", "2031-13-01T10:00Z", "", "2031-03-01T25:00Z"])
def test_malformed_times_are_input_errors(text: str) -> None:
    with pytest.raises(InputError, match="not a time"):
        parse_time(text)


def test_iso_utc_uses_z() -> None:
    assert iso_utc(datetime(2031, 3, 1, 11, 0, tzinfo=timezone(timedelta(hours=1)))) == "2031-03-01T10:00:00Z"
    assert iso_utc(None) is None


@pytest.mark.parametrize(
    ("text", "seconds"), [("4h", 14400), ("1h30m", 5400), ("90s", 90), ("2d", 172800), ("5", 5)]
)
def test_positive_durations(text: str, seconds: int) -> None:
    assert parse_positive_duration(text, key="duration") == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["0", "0h", "-1h", "-5", "4 hours", "h", ""])
def test_zero_negative_and_malformed_durations_are_refused(text: str) -> None:
    with pytest.raises(InputError) as exc:
        parse_positive_duration(text, key="by")
    assert "by" in exc.value.message


def test_margin_may_be_zero() -> None:
    assert parse_margin("0s") == timedelta(0)
    assert parse_margin("15m") == timedelta(minutes=15)


def test_hosts_are_split_stripped_and_deduplicated() -> None:
    assert parse_hosts("h2, h1,,h2") == ["h2", "h1"]
    with pytest.raises(InputError, match="no hosts"):
        parse_hosts(" , ")


def test_booking_ids() -> None:
    assert parse_booking_id("17") == 17
    assert parse_booking_id(17) == 17
    for bad in ("abc", "-1", "1.5", ""):
        with pytest.raises(InputError, match="not a booking id"):
            parse_booking_id(bad)


def test_state_is_derived_from_the_clock() -> None:
    end = T0 + timedelta(hours=2)
    assert derive_state("booked", T0, end, T0 - timedelta(seconds=1)) is State.BOOKED
    assert derive_state("booked", T0, end, T0) is State.ACTIVE
    assert derive_state("booked", T0, end, end - timedelta(seconds=1)) is State.ACTIVE
    # a booking expires at its end time, not a second later
    assert derive_state("booked", T0, end, end) is State.EXPIRED
    # released is stored and wins at any time
    assert derive_state("released", T0, end, T0 + timedelta(minutes=5)) is State.RELEASED
    assert derive_state("released", T0, end, T0 - timedelta(days=1)) is State.RELEASED


def test_half_open_windows_touching_do_not_overlap() -> None:
    a_end = T0 + timedelta(hours=2)
    assert not windows_overlap(T0, a_end, a_end, a_end + timedelta(hours=1))
    assert windows_overlap(T0, a_end, a_end - timedelta(seconds=1), a_end + timedelta(hours=1))
    assert windows_overlap(T0, a_end, T0 + timedelta(minutes=1), T0 + timedelta(minutes=2))  # inside


def test_request_validates_its_window() -> None:
    with pytest.raises(InputError, match="before it starts"):
        BookingRequest(owner="a", hosts=("h",), start=T0, end=T0)
    with pytest.raises(InputError, match="owner"):
        BookingRequest(owner=" ", hosts=("h",), start=T0, end=T0 + timedelta(hours=1))
    req = BookingRequest(
        owner="a", hosts=("h",), start=T0, end=T0 + timedelta(hours=1), margin=timedelta(minutes=15)
    )
    assert req.busy_until == T0 + timedelta(hours=1, minutes=15)
    moved = req.at(T0 + timedelta(hours=3))
    assert moved.end - moved.start == timedelta(hours=1)


def test_request_in_the_past_is_refused_but_clock_skew_tolerated() -> None:
    req = BookingRequest(owner="a", hosts=("h",), start=T0, end=T0 + timedelta(hours=1))
    req.check_not_past(T0 + timedelta(seconds=30))  # a few seconds of skew is "now"
    with pytest.raises(InputError, match="in the past"):
        req.check_not_past(T0 + timedelta(minutes=5))
    with pytest.raises(InputError, match="ends in the past"):
        BookingRequest(owner="a", hosts=("h",), start=T0, end=T0 + timedelta(seconds=10)).check_not_past(
            T0 + timedelta(seconds=20)
        )


def test_booking_json_form() -> None:
    b = Booking(
        id=3,
        owner="alice",
        hosts=("h1", "h2"),
        start=T0,
        end=T0 + timedelta(hours=4),
        margin=timedelta(minutes=15),
        status="booked",
        created_at=T0 - timedelta(days=1),
        purpose="gc",
    )
    doc = b.to_dict(T0 + timedelta(hours=1))
    assert doc["id"] == 3
    assert doc["hosts"] == ["h1", "h2"]
    assert doc["start"] == "2031-03-01T10:00:00Z"
    assert doc["end"] == "2031-03-01T14:00:00Z"
    assert doc["busy_until"] == "2031-03-01T14:15:00Z"
    assert doc["state"] == "active"
    assert "alice" in b.describe() and "15m cleaning" in b.describe()


def test_human_durations() -> None:
    assert human_duration(timedelta(seconds=45)) == "45s"
    assert human_duration(timedelta(minutes=90)) == "1h 30m"
    assert human_duration(timedelta(days=2, hours=3)) == "2d 3h"
    assert human_duration(timedelta(hours=2)) == "2h"
