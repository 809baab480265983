"""The booking store: one interface, two backends (SQLite and PostgreSQL).

:class:`BookingStore` is the interface every caller uses. Both backends share the
SQL in :class:`SqlBookingStore` and differ only where the databases differ:

- **SQLite** (the default, a file in labctl's data dir) has no range types and no
  exclusion constraints, so writers are serialised with ``BEGIN IMMEDIATE`` (the
  write lock is taken *before* the overlap check) and overlap is checked inside that
  transaction. WAL mode lets readers carry on meanwhile; a busy timeout makes
  concurrent writers queue instead of failing. Safe for many processes on one
  machine; not on a network file system.
- **PostgreSQL** (a team's shared lab) makes overlap impossible in the database
  itself: an exclusion constraint over ``(host, tstzrange(starts_at,
  end_with_margin))`` for live rows. The store simply writes and, when the
  constraint fires, looks up the booking it collided with to name it. No client,
  old or new, can double-book a host, and there is no lock to hold across machines.

Every write is one transaction, so a multi-host booking is all or nothing.
"""

from __future__ import annotations

import contextlib
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Self, TypeVar

from sqlalchemy import Connection, Engine, Row, create_engine, event, select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.pool import NullPool

from labctl.booking import migrations
from labctl.booking.model import (
    STORED_BOOKED,
    STORED_RELEASED,
    Booking,
    BookingRequest,
    human_duration,
    iso_utc,
    utcnow,
)
from labctl.booking.schema import booking_hosts, bookings
from labctl.config import Settings
from labctl.errors import BookingConflict, EnvironmentProblem, InputError, NotBooked, NotOwner

URL_KEY = "LABCTL_BOOKING_URL"
# How long a SQLite writer waits for the lock before giving up. Transactions are a
# few milliseconds, so this only matters under a storm of simultaneous bookings.
SQLITE_BUSY_TIMEOUT_S = 60.0
# deadlock_detected, serialization_failure: the database aborted a transaction that
# would succeed (or fail cleanly) if run again.
TRANSIENT_SQLSTATES = frozenset({"40P01", "40001"})
TRANSIENT_ATTEMPTS = 8

T = TypeVar("T")


class BookingStore(ABC):
    """Where bookings live. All times are aware UTC datetimes."""

    backend: str = "?"

    @abstractmethod
    def create(self, request: BookingRequest, now: datetime | None = None) -> Booking:
        """Book every host of ``request`` or none; raise BookingConflict naming the holder."""

    @abstractmethod
    def get(self, booking_id: int) -> Booking:
        """The booking with this id; InputError if there is none."""

    @abstractmethod
    def list_bookings(
        self, host: str | None = None, include_past: bool = False, now: datetime | None = None
    ) -> list[Booking]:
        """Bookings by start time; without ``include_past`` only booked and active ones."""

    @abstractmethod
    def at(self, hosts: Iterable[str], when: datetime, grace: timedelta = timedelta(0)) -> list[Booking]:
        """Unreleased bookings on any of ``hosts`` whose ``[start, end + grace)`` contains ``when``."""

    @abstractmethod
    def extend(self, booking_id: int, by: timedelta, actor: str, now: datetime | None = None) -> Booking:
        """Move the end of the actor's booking later; nothing changes if the hosts are taken."""

    @abstractmethod
    def release(
        self,
        booking_id: int,
        actor: str,
        now: datetime | None = None,
        force: bool = False,
        reason: str | None = None,
    ) -> Booking:
        """Free the hosts. Only the owner, unless ``force`` (then who and why are recorded)."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SqlBookingStore(BookingStore):
    """The SQL both backends share; subclasses set up the engine and the write lock."""

    #: True when the database refuses overlapping rows itself (no check in Python).
    database_enforces_overlap = False

    def __init__(self, url: URL) -> None:
        self.url = url
        self.engine: Engine = self._make_engine(url)
        try:
            self._migrate()
        except BaseException:
            self.engine.dispose()
            raise

    # -- backend hooks -------------------------------------------------------------

    @abstractmethod
    def _make_engine(self, url: URL) -> Engine: ...

    @contextlib.contextmanager
    def _write(self) -> Iterator[Connection]:
        """A transaction that may write; commits on success, rolls back on any error."""
        with self._guard(), self.engine.begin() as conn:
            yield conn

    @contextlib.contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._guard(), self.engine.connect() as conn:
            yield conn

    # -- plumbing ------------------------------------------------------------------

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """Turn "cannot reach / cannot open the database" into one clear error without secrets."""
        try:
            yield
        except (OperationalError, InterfaceError) as exc:
            if _sqlstate(exc) in TRANSIENT_SQLSTATES:
                raise  # _transact retries these
            detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
            message = detail[0] if detail else type(exc).__name__
            password = self.url.password
            if password:
                message = message.replace(str(password), "***")
            raise EnvironmentProblem(
                f"booking store {self.url.render_as_string(hide_password=True)}: {message}"
            ) from None

    def _transact(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` in one write transaction, again from scratch if the database aborted it.

        PostgreSQL may abort one of two transactions that insert conflicting rows at
        the same moment with "deadlock detected": each waits for the other's
        uncommitted row to settle the exclusion constraint. That is the normal,
        documented outcome of a race, not a failure; the retry then sees the winner's
        committed row and ends in an ordinary exclusion violation (a named conflict).
        """
        for attempt in range(1, TRANSIENT_ATTEMPTS + 1):
            try:
                with self._write() as conn:
                    return work(conn)
            except DBAPIError as exc:
                if _sqlstate(exc) not in TRANSIENT_SQLSTATES:
                    raise
                if attempt == TRANSIENT_ATTEMPTS:
                    raise EnvironmentProblem(
                        f"booking store {self.url.render_as_string(hide_password=True)}: "
                        f"transaction aborted {attempt} times ({_sqlstate(exc)}); try again"
                    ) from None
                # jitter, so the two parties of a deadlock do not collide again in step
                time.sleep(random.uniform(0.005, 0.05) * attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _migrate(self) -> None:
        with self._read() as conn:
            behind = migrations.needs_migration(conn)
        if behind:
            dialect = self.engine.dialect.name
            try:
                self._transact(lambda conn: migrations.apply_pending(conn, dialect))
            except DBAPIError as exc:
                first = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
                raise EnvironmentProblem(
                    f"cannot bring the booking store {self.url.render_as_string(hide_password=True)} to schema "
                    f"version {migrations.LATEST}: {first} (on PostgreSQL the role needs to own the database, "
                    "or have CREATE on it, the first time)"
                ) from None

    def close(self) -> None:
        self.engine.dispose()

    # -- reading -------------------------------------------------------------------

    def _load(self, conn: Connection, rows: Sequence[Row[Any]]) -> list[Booking]:
        ids = [r.id for r in rows]
        hosts: dict[int, list[str]] = {i: [] for i in ids}
        if ids:
            q = (
                select(booking_hosts.c.booking_id, booking_hosts.c.host)
                .where(booking_hosts.c.booking_id.in_(ids))
                .order_by(booking_hosts.c.host)
            )
            for row in conn.execute(q):
                hosts[int(row.booking_id)].append(str(row.host))
        return [_booking(r, hosts[r.id]) for r in rows]

    def _get(self, conn: Connection, booking_id: int, for_update: bool = False) -> Booking:
        q = select(bookings).where(bookings.c.id == booking_id)
        if for_update:
            q = q.with_for_update()
        row = conn.execute(q).first()
        if row is None:
            raise InputError(f"no booking {booking_id} (see 'labctl bookings --all')", key="booking")
        return self._load(conn, [row])[0]

    def get(self, booking_id: int) -> Booking:
        with self._read() as conn:
            return self._get(conn, booking_id)

    def list_bookings(
        self, host: str | None = None, include_past: bool = False, now: datetime | None = None
    ) -> list[Booking]:
        now = now or utcnow()
        q = select(bookings).order_by(bookings.c.starts_at, bookings.c.id)
        if host is not None:
            q = q.where(
                bookings.c.id.in_(select(booking_hosts.c.booking_id).where(booking_hosts.c.host == host))
            )
        if not include_past:
            q = q.where(bookings.c.state == STORED_BOOKED, bookings.c.ends_at > now)
        with self._read() as conn:
            return self._load(conn, conn.execute(q).all())

    def at(self, hosts: Iterable[str], when: datetime, grace: timedelta = timedelta(0)) -> list[Booking]:
        names = list(hosts)
        ids = select(booking_hosts.c.booking_id).where(booking_hosts.c.host.in_(names))
        # end + grace > when  <=>  end > when - grace (keeps the comparison on a plain column)
        q = (
            select(bookings)
            .where(
                bookings.c.id.in_(ids),
                bookings.c.state == STORED_BOOKED,
                bookings.c.starts_at <= when,
                bookings.c.ends_at > when - grace,
            )
            .order_by(bookings.c.starts_at, bookings.c.id)
        )
        with self._read() as conn:
            return self._load(conn, conn.execute(q).all())

    def _conflicts(
        self,
        conn: Connection,
        hosts: Sequence[str],
        start: datetime,
        busy_until: datetime,
        exclude: int | None = None,
    ) -> list[tuple[Booking, list[str]]]:
        """Live bookings whose ``[start, end + margin)`` overlaps the window on any of ``hosts``."""
        q = select(booking_hosts.c.booking_id, booking_hosts.c.host).where(
            booking_hosts.c.host.in_(list(hosts)),
            booking_hosts.c.state == STORED_BOOKED,
            booking_hosts.c.starts_at < busy_until,
            booking_hosts.c.end_with_margin > start,
        )
        if exclude is not None:
            q = q.where(booking_hosts.c.booking_id != exclude)
        clash: dict[int, list[str]] = {}
        for row in conn.execute(q):
            clash.setdefault(int(row.booking_id), []).append(str(row.host))
        if not clash:
            return []
        rows = conn.execute(
            select(bookings).where(bookings.c.id.in_(list(clash))).order_by(bookings.c.starts_at)
        )
        return [(b, sorted(clash[b.id])) for b in self._load(conn, rows.all())]

    def _raise_if_taken(
        self,
        conn: Connection,
        hosts: Sequence[str],
        start: datetime,
        busy_until: datetime,
        exclude: int | None,
    ) -> None:
        found = self._conflicts(conn, hosts, start, busy_until, exclude)
        if found:
            raise _conflict_error(found, start, busy_until)

    def _after_violation(
        self,
        exc: IntegrityError,
        hosts: Sequence[str],
        start: datetime,
        busy_until: datetime,
        exclude: int | None,
    ) -> BookingConflict:
        """The database refused an overlap: find whom we collided with, to name them."""
        if _sqlstate(exc) != "23P01":  # exclusion_violation
            raise exc
        with self._read() as conn:
            found = self._conflicts(conn, hosts, start, busy_until, exclude)
        if found:
            return _conflict_error(found, start, busy_until)
        # the holder released between our attempt and the look-up
        return BookingConflict(
            f"hosts {', '.join(hosts)} were taken by a concurrent booking for "
            f"{iso_utc(start)}..{iso_utc(busy_until)}, since released; try again"
        )

    # -- writing -------------------------------------------------------------------

    def create(self, request: BookingRequest, now: datetime | None = None) -> Booking:
        created = now or utcnow()
        hosts = list(request.hosts)

        def work(conn: Connection) -> Booking:
            if not self.database_enforces_overlap:
                self._raise_if_taken(conn, hosts, request.start, request.busy_until, None)
            result = conn.execute(
                bookings.insert().values(
                    owner=request.owner,
                    purpose=request.purpose,
                    starts_at=request.start,
                    ends_at=request.end,
                    margin_s=request.margin.total_seconds(),
                    state=STORED_BOOKED,
                    created_at=created,
                )
            )
            pk = result.inserted_primary_key
            assert pk is not None
            booking_id = int(pk[0])
            conn.execute(
                booking_hosts.insert(),
                [
                    {
                        "booking_id": booking_id,
                        "host": h,
                        "starts_at": request.start,
                        "end_with_margin": request.busy_until,
                        "state": STORED_BOOKED,
                    }
                    # one global order for row inserts, so two multi-host bookings
                    # do not wait on each other crosswise more often than they must
                    for h in sorted(hosts)
                ],
            )
            return self._get(conn, booking_id)

        try:
            return self._transact(work)
        except IntegrityError as exc:
            raise self._after_violation(exc, hosts, request.start, request.busy_until, None) from None

    def extend(self, booking_id: int, by: timedelta, actor: str, now: datetime | None = None) -> Booking:
        if by <= timedelta(0):
            raise InputError("--by must be positive", key="by")
        # the new window, kept for naming the conflict if the database refuses it
        attempted: dict[str, Any] = {}

        def work(conn: Connection) -> Booking:
            b = self._get(conn, booking_id, for_update=True)
            if b.owner != actor:
                taken = f" (force-released from {b.previous_owner})" if b.forced_by else ""
                raise NotOwner(
                    f"booking {b.id} belongs to {b.owner}{taken}; only its owner can extend it",
                    booking=b.id,
                    owner=b.owner,
                )
            _check_live(b, "extend")
            new_end = b.end + by
            busy_until = new_end + b.margin
            attempted.update(hosts=list(b.hosts), start=b.start, busy_until=busy_until)
            if not self.database_enforces_overlap:
                self._raise_if_taken(conn, list(b.hosts), b.start, busy_until, b.id)
            conn.execute(bookings.update().where(bookings.c.id == b.id).values(ends_at=new_end))
            conn.execute(
                booking_hosts.update()
                .where(booking_hosts.c.booking_id == b.id)
                .values(end_with_margin=busy_until)
            )
            return self._get(conn, b.id)

        try:
            return self._transact(work)
        except IntegrityError as exc:
            raise self._after_violation(
                exc, attempted["hosts"], attempted["start"], attempted["busy_until"], booking_id
            ) from None

    def release(
        self,
        booking_id: int,
        actor: str,
        now: datetime | None = None,
        force: bool = False,
        reason: str | None = None,
    ) -> Booking:
        released = now or utcnow()

        def work(conn: Connection) -> Booking:
            b = self._get(conn, booking_id, for_update=True)
            _check_live(b, "release")
            values: dict[str, Any] = {"state": STORED_RELEASED, "released_at": released, "released_by": actor}
            if b.owner != actor:
                if not force:
                    raise NotOwner(
                        f"booking {b.id} belongs to {b.owner}; only its owner can release it "
                        "(or use --force --reason TEXT)",
                        booking=b.id,
                        owner=b.owner,
                    )
                if not (reason or "").strip():
                    raise InputError("a forced release needs --reason", key="reason")
                # The booking changes hands: the old owner can no longer act under it,
                # and the record says who took it and why.
                values.update(owner=actor, forced_by=actor, forced_reason=reason, previous_owner=b.owner)
            conn.execute(bookings.update().where(bookings.c.id == b.id).values(**values))
            conn.execute(
                booking_hosts.update().where(booking_hosts.c.booking_id == b.id).values(state=STORED_RELEASED)
            )
            return self._get(conn, b.id)

        return self._transact(work)


class SqliteBookingStore(SqlBookingStore):
    """SQLite file store: writers serialised by ``BEGIN IMMEDIATE``, overlap checked inside."""

    backend = "sqlite"

    def _make_engine(self, url: URL) -> Engine:
        if url.database:
            Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, poolclass=NullPool, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Take transaction control away from the sqlite3 module, which would
            # otherwise start transactions lazily and too late for our lock.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
            cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = NORMAL")
            cur.execute("PRAGMA foreign_keys = ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            # IMMEDIATE takes the write lock now, so the overlap check and the insert
            # that follows see the same database; readers use a plain deferred BEGIN.
            immediate = conn.get_execution_options().get("labctl_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine

    @contextlib.contextmanager
    def _write(self) -> Iterator[Connection]:
        with self._guard(), self.engine.connect() as conn:
            conn.execution_options(labctl_write=True)
            with conn.begin():
                yield conn


class PostgresBookingStore(SqlBookingStore):
    """PostgreSQL store: the exclusion constraint refuses overlaps in the database."""

    backend = "postgresql"
    database_enforces_overlap = True

    def _make_engine(self, url: URL) -> Engine:
        return create_engine(url, poolclass=NullPool, connect_args={"connect_timeout": 10})


def normalise_url(raw: str, data_dir: Path | None = None) -> URL:
    """Parse a booking URL; ``postgresql://`` means psycopg 3. Never echoes the URL (it may hold a password)."""
    try:
        url = make_url(raw)
    except ArgumentError:
        raise InputError("not a database URL (want sqlite:///PATH or postgresql://…)", key=URL_KEY) from None
    driver = url.drivername
    if driver in ("postgresql", "postgres", "postgresql+psycopg"):
        return url.set(drivername="postgresql+psycopg")
    if driver in ("sqlite", "sqlite+pysqlite"):
        if not url.database or url.database == ":memory:":
            # an in-memory store would forget every booking when the command ends
            raise InputError("a SQLite booking store needs a file path (sqlite:///PATH)", key=URL_KEY)
        return url.set(drivername="sqlite")
    raise InputError(
        f"unsupported booking store {driver!r}: use sqlite:///PATH or postgresql://USER@HOST/DB", key=URL_KEY
    )


def open_store(settings: Settings) -> SqlBookingStore:
    """Open (and migrate, if needed) the store the settings name: SQLite in data_dir by default."""
    url = normalise_url(settings.booking_db_url)
    if url.get_backend_name() == "postgresql":
        return PostgresBookingStore(url)
    return SqliteBookingStore(url)


# -- helpers --------------------------------------------------------------------------


def _booking(row: Row[Any], hosts: Sequence[str]) -> Booking:
    return Booking(
        id=int(row.id),
        owner=row.owner,
        hosts=tuple(hosts),
        start=row.starts_at,
        end=row.ends_at,
        margin=timedelta(seconds=float(row.margin_s)),
        status=row.state,
        created_at=row.created_at,
        purpose=row.purpose,
        released_at=row.released_at,
        released_by=row.released_by,
        forced_by=row.forced_by,
        forced_reason=row.forced_reason,
        previous_owner=row.previous_owner,
    )


def _sqlstate(exc: BaseException) -> str | None:
    state = getattr(getattr(exc, "orig", None), "sqlstate", None)
    return str(state) if state else None


def _check_live(b: Booking, verb: str) -> None:
    if b.status == STORED_RELEASED:
        how = f" by {b.released_by}" if b.released_by else ""
        raise NotBooked(
            f"cannot {verb} booking {b.id}: it was released at {iso_utc(b.released_at)}{how}", booking=b.id
        )


def _conflict_error(
    found: list[tuple[Booking, list[str]]], start: datetime, busy_until: datetime
) -> BookingConflict:
    first, hosts = found[0]
    message = (
        f"{'hosts' if len(hosts) > 1 else 'host'} {', '.join(hosts)} taken by {first.describe()}"
        f"; requested {iso_utc(start)}..{iso_utc(busy_until)}"
    )
    if len(found) > 1:
        others = ", ".join(f"{b.id} ({b.owner})" for b, _ in found[1:])
        message += f"; also bookings {others}"
    message += "; nothing was booked or changed"
    details = {**first.to_dict(utcnow()), "conflicting_hosts": hosts}
    if first.margin:
        details["margin"] = human_duration(first.margin)
    return BookingConflict(message, conflicting=details)
