"""The store's rules, through its Python API, on both real backends (SQLite and PostgreSQL)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, inspect, select, text

from labctl.booking import migrations
from labctl.booking.model import BookingRequest, State, utcnow
from labctl.booking.schema import booking_hosts, bookings, metadata
from labctl.booking.service import book
from labctl.booking.store import SqlBookingStore, normalise_url, open_store
from labctl.config import Settings, load_settings
from labctl.errors import BookingConflict, EnvironmentProblem, InputError, NotBooked, NotOwner
from tests.booking.helpers import APP_ROLE, PgServer

T0 = (utcnow() + timedelta(days=30)).replace(minute=0, second=0)
H = timedelta(hours=1)


@pytest.fixture
def settings(backend_env: dict[str, str], tmp_path: Path) -> Settings:
    env = {"LABCTL_DATA_DIR": str(tmp_path / "data"), "LABCTL_OWNER": "alice", **backend_env}
    return load_settings(env=env)


@pytest.fixture
def store(settings: Settings) -> Iterator[SqlBookingStore]:
    s = open_store(settings)
    yield s
    s.close()


def req(
    owner: str, hosts: str, start: datetime, hours: float, margin: timedelta = timedelta(0)
) -> BookingRequest:
    return BookingRequest(
        owner=owner,
        hosts=tuple(hosts.split(",")),
        start=start,
        end=start + hours * H,
        margin=margin,
        purpose="test",
    )


def _rows(store: SqlBookingStore) -> tuple[int, int]:
    with store.engine.connect() as conn:
        n_b = conn.execute(select(func.count()).select_from(bookings)).scalar_one()
        n_h = conn.execute(select(func.count()).select_from(booking_hosts)).scalar_one()
    return n_b, n_h


def test_non_overlapping_bookings_all_succeed(store: SqlBookingStore) -> None:
    made = [store.create(req(f"u{i}", "h1", T0 + i * 2 * H, 1.5)) for i in range(5)]
    made.append(store.create(req("u9", "h2", T0, 10)))  # same time, other host
    assert [b.id for b in made] == sorted({b.id for b in made})
    assert len(store.list_bookings(now=T0 - H)) == 6
    assert [b.id for b in store.list_bookings(host="h2", now=T0 - H)] == [made[-1].id]


def test_overlap_is_refused_naming_the_holder(store: SqlBookingStore) -> None:
    first = store.create(req("alice", "h1,h2", T0, 2))
    with pytest.raises(BookingConflict) as exc:
        store.create(req("bob", "h3,h2", T0 + H, 2))
    msg = exc.value.message
    assert f"booking {first.id}" in msg and "alice" in msg and "h2" in msg
    assert "2031" in msg or T0.isoformat()[:10] in msg  # the window is named
    assert exc.value.exit_code == 3
    assert exc.value.details["conflicting"]["id"] == first.id
    # all hosts or none: h3 was free, but nothing of bob's request was written
    assert _rows(store) == (1, 2)
    assert store.at(["h3"], T0 + H) == []


def test_adjacent_windows_do_not_conflict(store: SqlBookingStore) -> None:
    store.create(req("alice", "h1", T0, 2))
    store.create(req("bob", "h1", T0 + 2 * H, 1))  # end == start
    store.create(req("carol", "h1", T0 - H, 1))  # start == other's start... its end == alice's start
    assert len(store.list_bookings(host="h1", now=T0 - 2 * H)) == 3


def test_cleaning_margin_is_honoured_both_ways(store: SqlBookingStore) -> None:
    m = timedelta(minutes=15)
    first = store.create(req("alice", "h1", T0, 2, margin=m))
    # starting right at alice's end would eat into the cleaning time after her booking
    with pytest.raises(BookingConflict, match=f"booking {first.id}"):
        store.create(req("bob", "h1", T0 + 2 * H, 1, margin=m))
    store.create(req("bob", "h1", T0 + 2 * H + m, 1, margin=m))
    # ... and a booking before hers must leave the cleaning time before she starts
    with pytest.raises(BookingConflict):
        store.create(req("carol", "h1", T0 - H, 1, margin=m))
    store.create(req("carol", "h1", T0 - H - m, 1, margin=m))


def test_extend_into_a_taken_window_fails_and_changes_nothing(store: SqlBookingStore) -> None:
    mine = store.create(req("alice", "h1,h2", T0, 2))
    theirs = store.create(req("bob", "h2", T0 + 3 * H, 2))
    with pytest.raises(BookingConflict) as exc:
        store.extend(mine.id, 2 * H, actor="alice")
    assert f"booking {theirs.id}" in exc.value.message and "bob" in exc.value.message
    again = store.get(mine.id)
    assert again.end == mine.end
    with store.engine.connect() as conn:
        ends = conn.execute(
            select(booking_hosts.c.end_with_margin).where(booking_hosts.c.booking_id == mine.id)
        )
        assert {e for (e,) in ends} == {mine.end}
    # up to the other booking's start is fine, and moves the end of every host row
    longer = store.extend(mine.id, H, actor="alice")
    assert longer.end == T0 + 3 * H
    with pytest.raises(BookingConflict):
        store.create(req("carol", "h1", T0 + 2 * H, 0.5))


def test_only_the_owner_extends_or_releases(store: SqlBookingStore) -> None:
    b = store.create(req("alice", "h1", T0, 2))
    with pytest.raises(NotOwner, match="alice"):
        store.extend(b.id, H, actor="bob")
    with pytest.raises(NotOwner, match="--force"):
        store.release(b.id, actor="bob")
    assert store.get(b.id).status == "booked"


def test_release_frees_the_hosts_at_once(store: SqlBookingStore) -> None:
    b = store.create(req("alice", "h1", T0, 2))
    done = store.release(b.id, actor="alice", now=T0 - H)
    assert done.state(T0) is State.RELEASED
    assert done.released_by == "alice" and done.forced_by is None
    store.create(req("bob", "h1", T0, 2))
    with pytest.raises(NotBooked, match="released"):
        store.release(b.id, actor="alice")
    with pytest.raises(NotBooked, match="released"):
        store.extend(b.id, H, actor="alice")


def test_forced_release_records_who_and_why_and_changes_hands(store: SqlBookingStore) -> None:
    b = store.create(req("alice", "h1", T0, 2))
    with pytest.raises(InputError, match="reason"):
        store.release(b.id, actor="bob", force=True, reason=" ")
    done = store.release(b.id, actor="bob", force=True, reason="alice is on holiday")
    assert (done.owner, done.previous_owner, done.forced_by, done.forced_reason) == (
        "bob",
        "alice",
        "bob",
        "alice is on holiday",
    )
    # the booking no longer belongs to alice: she cannot act under it
    with pytest.raises(NotOwner):
        store.extend(b.id, H, actor="alice")
    doc = store.get(b.id).to_dict(T0)
    assert doc["state"] == "released" and doc["forced_by"] == "bob" and doc["previous_owner"] == "alice"


def test_expiry_and_extension_after_expiry(store: SqlBookingStore) -> None:
    b = store.create(req("alice", "h1", T0, 1))
    assert b.state(T0 - H) is State.BOOKED
    assert b.state(T0 + 0.5 * H) is State.ACTIVE
    assert b.state(T0 + H) is State.EXPIRED
    # expired bookings leave the current listing, stay in --all
    assert store.list_bookings(now=T0 + H) == []
    assert [x.id for x in store.list_bookings(include_past=True, now=T0 + H)] == [b.id]
    assert store.at(["h1"], T0 + H) == []
    # the owner may extend after expiry if the hosts are still free
    longer = store.extend(b.id, H, actor="alice")
    assert longer.state(T0 + 1.5 * H) is State.ACTIVE


def test_wait_until_free_gets_the_window_once_released(store: SqlBookingStore) -> None:
    holder = store.create(req("alice", "h1", T0, 2))
    clock = [T0 - 2 * H]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += timedelta(seconds=seconds)
        if len(slept) == 3:
            store.release(holder.id, actor="alice")

    got = book(store, req("bob", "h1", T0, 1), wait=timedelta(minutes=5), clock=lambda: clock[0], sleep=sleep)
    assert got.owner == "bob" and len(slept) == 3
    # bounded: with the hosts never freed it gives up with the conflict after the timeout
    waited: list[float] = []

    def idle(seconds: float) -> None:
        waited.append(seconds)
        clock[0] += timedelta(seconds=seconds)

    with pytest.raises(BookingConflict, match="bob"):
        book(store, req("carol", "h1", T0, 1), wait=timedelta(seconds=7), clock=lambda: clock[0], sleep=idle)
    assert sum(waited) == pytest.approx(7)
    assert max(waited) <= 2  # it polls, it does not sleep through the whole timeout


def test_migrations_are_recorded_and_idempotent(settings: Settings, store: SqlBookingStore) -> None:
    with store.engine.connect() as conn:
        rows = conn.execute(text("SELECT version, description FROM schema_version ORDER BY version")).all()
    assert [r[0] for r in rows] == [s.version for s in migrations.STEPS]
    with open_store(settings) as again, again.engine.connect() as conn:  # a second open finds nothing to do
        assert conn.execute(text("SELECT count(*) FROM schema_version")).scalar_one() == len(migrations.STEPS)


def test_migrated_schema_matches_the_tables_the_code_queries(store: SqlBookingStore) -> None:
    with store.engine.connect() as conn:
        insp = inspect(conn)
        for table in metadata.sorted_tables:
            assert {c["name"] for c in insp.get_columns(table.name)} == {c.name for c in table.columns}


def test_a_newer_schema_is_refused(settings: Settings, store: SqlBookingStore) -> None:
    with store.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO schema_version (version, description, applied_at) "
                "VALUES (99, 'from the future', CURRENT_TIMESTAMP)"
            )
        )
    with pytest.raises(EnvironmentProblem, match="newer"):
        open_store(settings)


def test_postgresql_refuses_overlap_in_the_database_itself(pg_url: str, tmp_path: Path) -> None:
    settings = load_settings(
        env={"LABCTL_DATA_DIR": str(tmp_path), "LABCTL_OWNER": "a", "LABCTL_BOOKING_URL": pg_url}
    )
    with open_store(settings) as s:
        b = s.create(req("alice", "h1", T0, 2))
    # a client that skips labctl entirely still cannot double-book
    engine = create_engine(normalise_url(pg_url))
    try:
        with pytest.raises(Exception, match="booking_hosts_no_overlap"), engine.begin() as conn:
            other: int = conn.execute(
                text(
                    "INSERT INTO bookings (owner, starts_at, ends_at, margin_s, state, created_at) "
                    "VALUES ('mallory', :s, :e, 0, 'booked', now()) RETURNING id"
                ).bindparams(s=T0 + H, e=T0 + 3 * H)
            ).scalar_one()
            conn.execute(
                text(
                    "INSERT INTO booking_hosts (booking_id, host, starts_at, end_with_margin, state) "
                    "VALUES (:b, 'h1', :s, :e, 'booked')"
                ).bindparams(b=other, s=T0 + H, e=T0 + 3 * H)
            )
        # the same window on another host is fine
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO booking_hosts (booking_id, host, starts_at, end_with_margin, state) "
                    "VALUES (:b, 'h2', :s, :e, 'booked')"
                ).bindparams(b=b.id, s=T0 + H, e=T0 + 3 * H)
            )
        assert b.end == T0 + 2 * H
    finally:
        engine.dispose()


def test_urls_are_normalised_and_secrets_never_echoed() -> None:
    assert normalise_url("postgresql://u:pw@db/lab").drivername == "postgresql+psycopg"
    assert normalise_url("postgres://u@db/lab").drivername == "postgresql+psycopg"
    assert normalise_url("sqlite:////tmp/x.db").drivername == "sqlite"
    for bad in ("mysql://u:s3cret@db/x", "sqlite://", "::nonsense s3cret"):
        with pytest.raises(InputError) as exc:
            normalise_url(bad)
        assert "s3cret" not in str(exc.value) and exc.value.exit_code == 2


def test_unreachable_postgres_is_an_environment_problem_without_the_password(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"postgresql://labctl:Hunter2Secret@127.0.0.1:{port}/lab"
    settings = load_settings(env={"LABCTL_DATA_DIR": str(tmp_path), "LABCTL_BOOKING_URL": url})
    with pytest.raises(EnvironmentProblem) as exc:
        open_store(settings)
    assert "Hunter2Secret" not in str(exc.value) and "***" in str(exc.value)


def test_sqlite_store_lives_in_the_data_dir(tmp_path: Path) -> None:
    settings = load_settings(env={"LABCTL_DATA_DIR": str(tmp_path / "deep" / "data"), "LABCTL_OWNER": "a"})
    with open_store(settings) as s:
        s.create(req("a", "h1", T0, 1))
    assert (tmp_path / "deep" / "data" / "bookings.sqlite").is_file()


def test_times_round_trip_as_utc(store: SqlBookingStore) -> None:
    start = datetime(2031, 3, 1, 10, 0, tzinfo=UTC)
    b = store.create(req("alice", "h1", start, 2), now=start - 48 * H)
    got = store.get(b.id)
    assert got.start == start and got.start.tzinfo == UTC
    assert got.end == start + 2 * H


def test_crosswise_concurrent_bookings_on_postgresql_end_in_a_named_conflict(
    pg_url: str, tmp_path: Path
) -> None:
    """Two multi-host bookings that wait on each other's rows: PostgreSQL aborts one ("deadlock
    detected"); labctl must retry it and report an ordinary conflict, never a database error."""
    import threading

    settings = load_settings(
        env={"LABCTL_DATA_DIR": str(tmp_path), "LABCTL_OWNER": "a", "LABCTL_BOOKING_URL": pg_url}
    )
    store = open_store(settings)
    other = create_engine(normalise_url(pg_url))
    outcome: dict[str, object] = {}
    try:
        with other.connect() as conn:
            tx = conn.begin()
            mallory: int = conn.execute(
                text(
                    "INSERT INTO bookings (owner, starts_at, ends_at, margin_s, state, created_at) "
                    "VALUES ('mallory', :s, :e, 0, 'booked', now()) RETURNING id"
                ).bindparams(s=T0, e=T0 + 2 * H)
            ).scalar_one()
            row = text(
                "INSERT INTO booking_hosts (booking_id, host, starts_at, end_with_margin, state) "
                "VALUES (:b, :h, :s, :e, 'booked')"
            )
            conn.execute(row.bindparams(b=mallory, h="h2", s=T0, e=T0 + 2 * H))  # holds h2, uncommitted

            def alice() -> None:
                try:
                    outcome["booking"] = store.create(req("alice", "h1,h2", T0, 2))  # takes h1, waits for h2
                except Exception as exc:
                    outcome["error"] = exc

            t = threading.Thread(target=alice)
            t.start()
            time.sleep(0.5)
            try:
                conn.execute(
                    row.bindparams(b=mallory, h="h1", s=T0, e=T0 + 2 * H)
                )  # waits for alice: a cycle
                tx.commit()
                mallory_won = True
            except Exception as exc:  # PostgreSQL may pick this side to abort instead
                assert "deadlock" in str(exc)
                tx.rollback()
                mallory_won = False
            t.join(timeout=60)
    finally:
        other.dispose()
    if mallory_won:
        err = outcome.get("error")
        assert isinstance(err, BookingConflict), err
        assert f"booking {mallory} by mallory" in err.message
    else:
        assert "booking" in outcome, outcome.get("error")
    holders = {h: [b.owner for b in store.at([h], T0 + H)] for h in ("h1", "h2")}
    store.close()
    assert holders == (
        {"h1": ["mallory"], "h2": ["mallory"]} if mallory_won else {"h1": ["alice"], "h2": ["alice"]}
    )


def test_transient_aborts_are_retried_and_bounded(store: SqlBookingStore) -> None:
    from sqlalchemy.exc import OperationalError

    class Deadlock(Exception):
        sqlstate = "40P01"

    calls: list[int] = []

    def flaky(_conn: object) -> str:
        calls.append(1)
        if len(calls) < 3:
            raise OperationalError("INSERT ...", {}, Deadlock("deadlock detected"))
        return "done"

    assert store._transact(flaky) == "done" and len(calls) == 3

    def always(_conn: object) -> str:
        raise OperationalError("INSERT ...", {}, Deadlock("deadlock detected"))

    with pytest.raises(EnvironmentProblem, match="aborted"):
        store._transact(always)


def test_a_role_that_cannot_create_the_schema_gets_a_clear_error(pg_server: PgServer, tmp_path: Path) -> None:
    name = "t_foreign_" + secrets.token_hex(4)
    pg_server.admin(f"CREATE DATABASE {name}")  # owned by postgres; PostgreSQL 15 grants no CREATE to others
    url = f"postgresql://{APP_ROLE}:{pg_server.password}@127.0.0.1:{pg_server.port}/{name}"
    settings = load_settings(env={"LABCTL_DATA_DIR": str(tmp_path), "LABCTL_BOOKING_URL": url})
    with pytest.raises(EnvironmentProblem, match="schema version") as exc:
        open_store(settings)
    assert pg_server.password not in str(exc.value)
