"""Where points go after the spool: InfluxDB's v2 write API or the 1.x ``/write``.

Both sinks take line protocol (as the spool holds it) and return only once the server
has acknowledged the batch (HTTP 204) — or raise :class:`SinkError`. Writes are
idempotent (explicit timestamps: the same point overwrites itself), so the bounded
retries on connection errors, timeouts, 429 and 5xx can never duplicate anything.

Credentials are sent in headers only (``Authorization: Token …`` or ``Basic …``),
never in URLs, and no message this module produces contains them: server replies and
client errors are scrubbed of the token, the password and their encodings before they
are put into a :class:`SinkError`, which is raised ``from None`` so no chained
exception carries them either.
"""

from __future__ import annotations

import base64
import gzip
import logging
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import quote, quote_plus, urlencode, urlsplit, urlunsplit

import urllib3

from labctl.errors import LabctlError

if TYPE_CHECKING:
    from labctl.config import Settings

__all__ = ["Sink", "SinkError", "V1Sink", "V2Sink", "redact_url", "sink_from_settings"]

log = logging.getLogger("labctl.metrics")

DEFAULT_CONNECT_TIMEOUT = 2.0
DEFAULT_READ_TIMEOUT = 10.0
DEFAULT_RETRIES = 2


class SinkError(LabctlError):
    """A batch was not acknowledged. ``permanent`` when resending cannot help (4xx).

    The message names the server (without credentials) and the reason; it never
    contains a token or password.
    """

    exit_code = 1

    def __init__(self, message: str, *, status: int | None = None, permanent: bool = False) -> None:
        super().__init__(message, status=status)
        self.status = status
        self.permanent = permanent


def redact_url(url: str) -> str:
    """The URL without user info (``http://u:p@h`` → ``http://h``) and without a query."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _url_credentials(url: str) -> tuple[str | None, str | None]:
    parts = urlsplit(url)
    return parts.username, parts.password


class _SecretLogFilter(logging.Filter):
    """Scrubs known secrets from log records created on the root logger.

    influxdb-client logs an unparsable error reply verbatim with ``logging.debug``
    (on the root logger): a server or proxy that echoes request headers would put the
    token into a DEBUG log. Installed once on the root logger; records that contain
    no secret are left untouched, and records below the enabled level never reach it.
    """

    def __init__(self) -> None:
        super().__init__("labctl-secrets")
        self.scrubbers: dict[str, _Scrubber] = {}  # by pattern: one per distinct secret set

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.scrubbers:
            return True
        try:
            msg = record.getMessage()
        except Exception:
            return True
        clean = msg
        for scrub in list(self.scrubbers.values()):
            clean = scrub(clean)
        if clean != msg:
            record.msg, record.args = clean, None
        return True


_LOG_FILTER = _SecretLogFilter()


def _protect_logs(scrubber: _Scrubber) -> None:
    root = logging.getLogger()
    if _LOG_FILTER not in root.filters:
        root.addFilter(_LOG_FILTER)
    if scrubber.key:
        _LOG_FILTER.scrubbers.setdefault(scrubber.key, scrubber)


class _Scrubber:
    """Replaces every secret (and its common encodings) in a text by ``***``."""

    def __init__(self, *secrets: str | None) -> None:
        forms: set[str] = set()
        for s in secrets:
            if not s or len(s) < 3:
                continue
            forms.add(s)
            forms.add(base64.b64encode(s.encode()).decode())
            forms.add(quote(s, safe=""))
            forms.add(quote_plus(s))
        self._pattern = (
            re.compile("|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True)))
            if forms
            else None
        )

    def add_basic(self, user: str, password: str) -> None:
        """Also scrub the Basic-auth encoding of ``user:password``."""
        cred = base64.b64encode(f"{user}:{password}".encode()).decode()
        extra = re.escape(cred)
        self._pattern = re.compile(f"{self._pattern.pattern}|{extra}" if self._pattern else extra)

    @property
    def key(self) -> str:
        """The pattern's text ('' when there is nothing to scrub)."""
        return self._pattern.pattern if self._pattern else ""

    def __call__(self, text: str) -> str:
        return self._pattern.sub("***", text) if self._pattern else text


def _short(body: Any, scrub: Callable[[str], str], limit: int = 300) -> str:
    """The server's reply on one line: scrubbed of secrets FIRST, then shortened (a
    secret cut in half by the shortening would no longer be recognised)."""
    if isinstance(body, bytes | bytearray):
        body = bytes(body).decode("utf-8", "replace")
    text = " ".join(scrub(str(body or "")).split())
    return text[:limit] + ("…" if len(text) > limit else "")


def _reason(exc: BaseException) -> str:
    """A one-line reason for a transport error, without URLs' credentials."""
    inner: BaseException = exc
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        inner = exc.reason
    if isinstance(inner, urllib3.exceptions.NewConnectionError):
        return "connection refused or unreachable"
    if isinstance(inner, urllib3.exceptions.ConnectTimeoutError):
        return "connect timeout"
    if isinstance(inner, urllib3.exceptions.ReadTimeoutError):
        return "read timeout"
    if isinstance(inner, urllib3.exceptions.ProtocolError):
        return "connection lost"
    return type(inner).__name__


class Sink:
    """Something that durably accepts line protocol, or says why not.

    Subclasses implement :meth:`_send` (one attempt); :meth:`write` adds the bounded
    retries with exponential back-off on transient failures (connection errors,
    timeouts, 429, 5xx). A permanent failure (another 4xx) is raised at once.
    """

    #: A description fit to print: kind and URL without credentials.
    name: str = "sink"
    retries: int = DEFAULT_RETRIES
    backoff: float = 0.2

    def write(self, lines: list[str]) -> None:
        """Send one batch; return once the server acknowledged it, else raise SinkError."""
        if not lines:
            return
        attempt = 0
        while True:
            try:
                self._send(lines)
                return
            except SinkError as exc:
                if exc.permanent or attempt >= self.retries:
                    raise
                log.debug("%s: %s; retrying", self.name, exc.message)
            time.sleep(self.backoff * (2**attempt))
            attempt += 1

    def _send(self, lines: list[str]) -> None:
        """One attempt at sending a batch (raise SinkError on failure)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release connections."""

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class V2Sink(Sink):
    """InfluxDB 2.x/3.x, 1.8+ (and VictoriaMetrics) through influxdb-client's ``/api/v2/write``.

    Synchronous writes with nanosecond precision; ``gzip`` compresses request bodies.
    """

    def __init__(
        self,
        url: str,
        *,
        org: str,
        bucket: str,
        token: str | None = None,
        gzip: bool = False,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
    ) -> None:
        from influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        user, password = _url_credentials(url)
        self.url = url
        self.retries = retries
        self.org = org
        self.bucket = bucket
        self.name = f"InfluxDB v2 API {redact_url(url)} (bucket {bucket})"
        self._scrub = _Scrubber(token, password)
        base_url = redact_url(url).rstrip("/")  # credentials never travel in the URL
        self._client = InfluxDBClient(
            url=base_url,
            token=token or "",  # empty: no Authorization header
            org=org,
            timeout=(int(connect_timeout * 1000), int(read_timeout * 1000)),
            enable_gzip=gzip,
            retries=False,  # retried by Sink.write, quietly
            debug=False,
        )
        if user and password and not token:
            # InfluxDB 1.8's v2 compatibility accepts "Token user:password".
            self._client.api_client.set_default_header("Authorization", f"Token {user}:{password}")
            self._scrub.add_basic(user, password)
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)
        _protect_logs(self._scrub)

    def _send(self, lines: list[str]) -> None:
        """POST the batch to ``/api/v2/write?org=…&bucket=…&precision=ns``."""
        from influxdb_client import WritePrecision
        from influxdb_client.rest import ApiException

        try:
            self._write_api.write(
                bucket=self.bucket,
                org=self.org,
                record="\n".join(lines),
                write_precision=cast(WritePrecision, WritePrecision.NS),
            )
        except ApiException as exc:
            status = int(exc.status) if exc.status else None
            detail = _short(exc.body, self._scrub) or _short(exc.reason, self._scrub)
            permanent = status is not None and 400 <= status < 500 and status not in (408, 429)
            raise SinkError(
                f"{self.name}: HTTP {status}: {detail}", status=status, permanent=permanent
            ) from None
        except Exception as exc:  # transport errors, timeouts
            raise SinkError(f"{self.name}: {self._scrub(_reason(exc))}") from None

    def close(self) -> None:
        """Close the client's connection pool."""
        try:
            self._write_api.close()
            self._client.close()
        except Exception as exc:  # closing must never raise into a run
            log.debug("closing %s: %s", self.name, type(exc).__name__)


class V1Sink(Sink):
    """InfluxDB 1.x (e.g. Debian's 1.6) through ``POST /write?db=…&precision=ns``.

    Optional ``user``/``password`` go in an ``Authorization: Basic`` header, a
    ``token`` (1.8+, or a proxy) in ``Authorization: Token``; nothing goes in the URL.
    """

    def __init__(
        self,
        url: str,
        *,
        db: str,
        user: str | None = None,
        password: str | None = None,
        token: str | None = None,
        rp: str | None = None,
        gzip: bool = False,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
    ) -> None:
        url_user, url_password = _url_credentials(url)
        self.retries = retries
        user = user or url_user
        password = password or url_password
        self.db = db
        base = redact_url(url).rstrip("/")
        params = {"db": db, "precision": "ns"}
        if rp:
            params["rp"] = rp
        self._endpoint = f"{base}/write?{urlencode(params)}"
        self.name = f"InfluxDB v1 API {base} (db {db})"
        self._scrub = _Scrubber(token, password)
        self._headers = {"Content-Type": "text/plain; charset=utf-8"}
        if user and password:
            cred = base64.b64encode(f"{user}:{password}".encode()).decode()
            self._headers["Authorization"] = f"Basic {cred}"
            self._scrub.add_basic(user, password)
        elif token:
            self._headers["Authorization"] = f"Token {token}"
        _protect_logs(self._scrub)
        self._gzip = gzip
        if gzip:
            self._headers["Content-Encoding"] = "gzip"
        self._pool = urllib3.PoolManager(
            num_pools=2,
            maxsize=2,
            retries=False,  # retried by Sink.write, quietly
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
        )

    def _send(self, lines: list[str]) -> None:
        """POST the batch; HTTP 204 is the acknowledgement."""
        body = ("\n".join(lines) + "\n").encode("utf-8")
        if self._gzip:
            body = gzip.compress(body, compresslevel=1)
        try:
            resp = self._pool.request("POST", self._endpoint, body=body, headers=self._headers)
        except Exception as exc:
            raise SinkError(f"{self.name}: {self._scrub(_reason(exc))}") from None
        if resp.status == 204 or resp.status == 200:
            return
        status = int(resp.status)
        detail = _short(resp.data, self._scrub)
        permanent = 400 <= status < 500 and status not in (408, 429)
        raise SinkError(f"{self.name}: HTTP {status}: {detail}", status=status, permanent=permanent)

    def close(self) -> None:
        """Close pooled connections."""
        self._pool.clear()


def sink_from_settings(settings: Settings, **options: Any) -> Sink | None:
    """The sink the settings describe, or None when ``influx_url`` is unset.

    ``influx_api`` ``v2``: :class:`V2Sink` with ``influx_org``, ``influx_bucket`` and
    ``influx_token``. ``v1``: :class:`V1Sink` with ``influx_db``, ``influx_user``,
    ``influx_password`` (and ``influx_token`` if only that is set). ``options`` are
    passed on (``gzip``, timeouts, ``retries``).
    """
    if not settings.influx_url:
        return None
    token = settings.influx_token.get_secret_value() if settings.influx_token else None
    password = settings.influx_password.get_secret_value() if settings.influx_password else None
    if settings.influx_api == "v1":
        return V1Sink(
            settings.influx_url,
            db=settings.influx_db,
            user=settings.influx_user,
            password=password,
            token=token,
            **options,
        )
    return V2Sink(
        settings.influx_url,
        org=settings.influx_org,
        bucket=settings.influx_bucket,
        token=token,
        **options,
    )
