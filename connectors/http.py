"""The shared HTTP layer every connector uses: retry, backoff, rate budget, redaction, paging.

A connector subclasses :class:`HttpConnector` and fills small hooks (authentication, the
platform's spelling of "not found", its error body, its rate-limit headers); the loop that sends,
waits, retries and classifies lives here once (the Singer SDK ``RESTStream`` habit).

* **Error policy** is the table :data:`ERROR_POLICY` (status code or exception class -> action),
  looked up by :func:`classify_status` / :func:`classify_exception`. Retryable failures back off
  exponentially with full jitter and honour ``Retry-After`` (seconds or an HTTP date).
* **Rate budget**: :class:`RateBudget` is a client-side sliding window built from
  ``Capabilities.rate_limit`` (or the ``ConnectionSettings.rate_limit`` override). It also reads
  the platform's rate-limit headers (``X-RateLimit-Max`` / ``-Remaining`` /
  ``-Interval-Milliseconds``), so a client with a known limit never provokes a 429.
* **Concurrency** is bounded by ``ConnectionSettings.max_concurrency``; every call has a timeout
  that is also enforced with :func:`asyncio.wait_for` (``httpx.ASGITransport`` ignores httpx's).
* **Redaction**: secrets never reach logs or exception text; URLs are logged without their query.
* **Non-idempotent writes** (a POST create): :meth:`HttpClient.write_once` never blindly repeats
  a request that may have landed; it asks the connector's ``recheck`` (a lookup) first.
* **Paging**: :class:`Paginator` detects a page token (or a page's contents) coming back twice;
  :func:`paginate` re-fetches such a page a few times and then fails with ``PaginationError``.
"""

from __future__ import annotations

import asyncio
import email.utils
import enum
import functools
import hashlib
import json
import logging
import math
import os
import random
import re
import ssl
import threading
import time
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
import structlog

from connectors.base import (
    Capabilities,
    ConfigurationError,
    ConnectionSettings,
    Connector,
    ConnectorOptions,
    NotFound,
    PaginationError,
    RateLimit,
    RawRecord,
    RecordError,
    RemoteUnavailable,
    Stopped,
    UnsafeUrl,
)
from connectors.netbackend import use_asyncio_backend

log = structlog.get_logger("contactsync.http")

T = TypeVar("T")


# --------------------------------------------------------------------------- error policy


class Action(str, enum.Enum):
    """What to do with a response or an exception."""

    SUCCESS = "success"
    RETRY = "retry"  # transient: back off and try again
    RATE_LIMITED = "rate_limited"  # 429: wait (Retry-After) and try again
    FAIL_CONFIG = "fail_config"  # credentials/account wrong: ConfigurationError, no retry
    RECORD_ERROR = "record_error"  # this record was rejected: RecordError, no retry
    NOT_FOUND = "not_found"  # the record does not exist: NotFound, no retry


#: Status or exception class -> action. Status codes not listed: 2xx/3xx succeed, other 4xx are
#: record errors, other 5xx are retried. Exceptions are matched along their class hierarchy.
ERROR_POLICY: Mapping[int | type[BaseException], Action] = {
    401: Action.FAIL_CONFIG,
    403: Action.FAIL_CONFIG,
    404: Action.NOT_FOUND,
    408: Action.RETRY,
    429: Action.RATE_LIMITED,
    500: Action.RETRY,
    502: Action.RETRY,
    503: Action.RETRY,
    504: Action.RETRY,
    asyncio.TimeoutError: Action.RETRY,
    httpx.TimeoutException: Action.RETRY,
    httpx.NetworkError: Action.RETRY,  # ConnectError, ReadError, WriteError, CloseError
    httpx.RemoteProtocolError: Action.RETRY,  # the server dropped the connection mid-response
}

# Failures where the request certainly never reached the server: a non-idempotent write may
# simply be sent again. Anything else retryable may have landed.
_NEVER_SENT: tuple[type[BaseException], ...] = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def classify_status(status: int) -> Action:
    """The action for an HTTP status code (see :data:`ERROR_POLICY`)."""
    action = ERROR_POLICY.get(status)
    if action is not None:
        return action
    if status < 400:
        return Action.SUCCESS
    if status < 500:
        return Action.RECORD_ERROR
    return Action.RETRY


def classify_exception(exc: BaseException) -> Action | None:
    """The action for a transport exception, or None when it is not a transport failure."""
    for cls in type(exc).__mro__:
        action = ERROR_POLICY.get(cls)
        if action is not None:
            return action
    return None


class AmbiguousWrite(RemoteUnavailable):
    """A non-idempotent request failed in a way where it may or may not have landed
    (timeout, dropped connection, 5xx). Raised by ``HttpClient.request(idempotent=False)``;
    :meth:`HttpClient.write_once` settles it with a lookup before sending again."""


# --------------------------------------------------------------------------- redaction

_SENSITIVE_PARAM = re.compile(r"(api[_-]?key|token|secret|password|passwd|signature|auth|key)", re.I)


def redact_url(url: httpx.URL | str) -> str:
    """A URL fit for logs and messages: no userinfo, sensitive query values replaced."""
    u = httpx.URL(str(url))
    params = [(k, "***" if _SENSITIVE_PARAM.search(k) else v) for k, v in u.params.multi_items()]
    clean = u.copy_with(username=None, password=None, query=None)
    if params:
        clean = clean.copy_with(params=params)
    return str(clean)


class _RedactedUrl:
    """A URL argument of a log record that reads as its redacted form: redacted when the
    record is formatted, so a record no handler emits (httpx's per-request line below DEBUG,
    once per request) costs no URL parsing. The raw URL is not kept."""

    __slots__ = ("_text", "_url")

    def __init__(self, url: httpx.URL) -> None:
        self._url: httpx.URL | None = url
        self._text: str | None = None

    def __str__(self) -> str:
        if self._text is None:
            assert self._url is not None
            self._text, self._url = redact_url(self._url), None
        return self._text

    __repr__ = __str__


class _RedactHttpxUrls(logging.Filter):
    """httpx logs every request's full URL at INFO ("HTTP Request: GET https://...?apiKey=...");
    a platform that takes its key as a query parameter (DM Champ) would leak it there. This filter
    replaces URL arguments of httpx's records by their redacted form before any handler sees them
    (lazily: see :class:`_RedactedUrl`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, httpx.URL) for a in record.args):
            record.args = tuple(_RedactedUrl(a) if isinstance(a, httpx.URL) else a for a in record.args)
        return True


def install_httpx_log_redaction() -> None:
    """Attach :class:`_RedactHttpxUrls` to httpx's logger once (idempotent)."""
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, _RedactHttpxUrls) for f in logger.filters):
        logger.addFilter(_RedactHttpxUrls())


class Redactor:
    """Replaces known secret values (and their URL-encoded forms) in text."""

    def __init__(self, secrets: list[str]) -> None:
        forms: set[str] = set()
        for s in secrets:
            if s and len(s) >= 4:  # tiny values would shred ordinary text
                forms.add(s)
                forms.add(httpx.URL("", params={"x": s}).query.decode()[2:])
        self._secrets = sorted(forms, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for s in self._secrets:
            text = text.replace(s, "***")
        return text


# --------------------------------------------------------------------------- rate budget


@dataclass(frozen=True)
class RateObservation:
    """What a response's rate-limit headers said (any part may be unknown)."""

    remaining: int | None = None
    limit: int | None = None
    interval_s: float | None = None
    daily_limit: int | None = None
    daily_remaining: int | None = None


def parse_rate_headers(headers: httpx.Headers) -> RateObservation | None:
    """GoHighLevel-style ``X-RateLimit-Max`` / ``-Remaining`` / ``-Interval-Milliseconds``."""

    def _int(name: str) -> int | None:
        raw = headers.get(name)
        try:
            return int(float(raw)) if raw is not None else None
        except ValueError:
            return None

    remaining = _int("X-RateLimit-Remaining")
    limit = _int("X-RateLimit-Max")
    interval_ms = _int("X-RateLimit-Interval-Milliseconds")
    daily_limit = _int("X-RateLimit-Limit-Daily")
    daily_remaining = _int("X-RateLimit-Daily-Remaining")
    if all(v is None for v in (remaining, limit, interval_ms, daily_limit, daily_remaining)):
        return None
    return RateObservation(
        remaining, limit, interval_ms / 1000.0 if interval_ms else None, daily_limit, daily_remaining
    )


class QuotaExhausted(RemoteUnavailable):
    """The connection's daily request budget is spent (or down to its reserve): nothing more is
    sent until ``until`` (the start of the next daily window). Never a 429 storm: the client
    stops before the budget runs out."""

    def __init__(self, message: str, until: datetime, *, limit: int | None, remaining: int | None) -> None:
        super().__init__(message)
        self.until = until
        self.limit = limit
        self.remaining = remaining


class DailyQuota:
    """A daily request budget learnt from the platform's headers (GoHighLevel's
    ``X-RateLimit-Limit-Daily`` / ``X-RateLimit-Daily-Remaining``). Windows are ``window_s``
    long and aligned on the Unix epoch (UTC midnight for a day): no header says when the day
    resets, so the client assumes the next UTC midnight (documented choice). Between responses
    every request sent counts down the last remaining figure, so concurrent requests cannot
    overrun it; once it is at ``reserve`` or below, :meth:`check` raises :class:`QuotaExhausted`."""

    def __init__(self, reserve: int = 0, window_s: float = 86_400.0, clock: Callable[[], float] = time.time) -> None:
        self.reserve = max(0, reserve)
        self.window_s = window_s
        self._clock = clock
        self.limit: int | None = None
        self.remaining: int | None = None
        self._window: int | None = None
        self._unknown_sent = 0  # requests sent while nothing was known

    def _current(self) -> int:
        return int(self._clock() // self.window_s)

    def reset_at(self) -> datetime:
        """When the current window ends."""
        return datetime.fromtimestamp((self._current() + 1) * self.window_s, UTC)

    def _roll(self) -> None:
        if self._window is not None and self._window != self._current():
            self.remaining, self._window = None, None

    def observe(self, obs: RateObservation) -> None:
        if obs.daily_limit is not None:
            self.limit = obs.daily_limit
        if obs.daily_remaining is not None:
            self._roll()
            seen = obs.daily_remaining
            if self.remaining is None:
                # Requests sent before anything was known and still unanswered are not in the
                # server's figure yet (this answer's own request is).
                seen -= max(0, self._unknown_sent - 1)
            else:
                # Answers overtake each other, and requests sent since the server counted are
                # not in its figure: within a window, the lower count wins.
                seen = min(seen, self.remaining)
            self.remaining, self._unknown_sent = max(0, seen), 0
            self._window = self._current()

    def exhausted(self) -> bool:
        self._roll()
        return self.remaining is not None and self.remaining <= self.reserve

    def check(self, where: object) -> None:
        """Raise :class:`QuotaExhausted` when the budget is spent; else count one request."""
        if self.exhausted():
            until = self.reset_at()
            raise QuotaExhausted(
                f"{where}: daily quota spent ({self.remaining} of {self.limit} left, reserve {self.reserve}); "
                f"paused until {until:%Y-%m-%d %H:%M:%S} UTC",
                until,
                limit=self.limit,
                remaining=self.remaining,
            )
        if self.remaining is not None:
            self.remaining -= 1
        else:
            self._unknown_sent += 1


async def pause(seconds: float, stop: asyncio.Event | None) -> bool:
    """Sleep ``seconds``, waking early when ``stop`` is set; True when stopped (at once when it
    already is). Every wait of the HTTP layer goes through here, so a stop never waits out a
    rate window or a backoff."""
    if stop is None:
        await asyncio.sleep(seconds)
        return False
    if stop.is_set():
        return True
    waiter = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((waiter,), timeout=seconds)
    finally:
        waiter.cancel()
    return stop.is_set()


_IN_FLIGHT = math.inf  # the stamp of a slot whose request is not answered yet
_OTHERS = 0.0  # the second item of a slot counted for requests another client sent


class RateBudget:
    """A client-side sliding window: at most ``limit.requests`` requests in any window of
    ``limit.per_seconds`` (plus a small safety margin). ``None`` means no known limit until
    the server's headers tell one.

    The server counts *arrivals*, which we cannot see: a request arrives somewhere between
    its send and its response. So a request holds a slot that does not expire while it is in
    flight (however long it takes to arrive: a loaded machine can hold a request back longer
    than a short window) and is stamped with its *completion* time once answered
    (:meth:`release`); a new request waits until the N-th latest stamp is a full window old.
    Two requests N apart therefore arrive at least a window apart, whatever the latency.
    """

    def __init__(self, limit: RateLimit | None, *, safety: float = 0.01, safety_min_s: float = 0.002) -> None:
        self.limit = limit
        self._safety = safety
        self._safety_min_s = safety_min_s
        self._slots: deque[list[float]] = deque()  # [stamp]; mutable so release() can move it
        # A thread lock, not an asyncio one: one budget serves every cycle of a process (each
        # on an event loop of its own: scheduled, webhook-driven, adaptive polls), never held
        # across an await.
        self._guard = threading.Lock()
        self.waited_s = 0.0
        #: Called with each wait's length (the client reports it to the HTTP observers).
        self.on_wait: Callable[[float], None] | None = None

    def _window(self) -> float:
        assert self.limit is not None
        w = self.limit.per_seconds
        return w + max(w * self._safety, self._safety_min_s)

    def _expire(self, now: float) -> None:
        # Stamps move later on release, so the deque is not in stamp order: filter all of it.
        cutoff = now - self._window()
        if any(s[0] <= cutoff for s in self._slots):
            self._slots = deque(s for s in self._slots if s[0] > cutoff)

    async def acquire(self, stop: asyncio.Event | None = None) -> list[float] | None:
        """Wait until one more request fits in the window; returns its slot (pass it to
        :meth:`release` when the response is in). Raises :class:`Stopped` as soon as ``stop``
        is set, however long the window still is."""
        if self.limit is None:
            return None
        while True:
            with self._guard:
                now = time.monotonic()
                self._expire(now)
                if len(self._slots) < self.limit.requests:
                    slot = [_IN_FLIGHT]
                    self._slots.append(slot)
                    return slot
                oldest = min(s[0] for s in self._slots)
                if oldest == _IN_FLIGHT:  # every slot is a request still in flight: wait for one
                    wait = max(self._window() / 20, 0.0005)
                else:
                    wait = max(oldest + self._window() - now, 0.0005)
                self.waited_s += wait
            if self.on_wait is not None:
                self.on_wait(wait)
            if await pause(wait, stop):
                raise Stopped("stopped while waiting for the rate budget")

    def release(self, slot: list[float] | None) -> None:
        """The request of ``slot`` is answered: it arrived by now at the latest."""
        if slot is not None:
            slot[0] = time.monotonic()

    def window_stamps(self, *, own: bool = True) -> list[float]:
        """The ``time.monotonic()`` stamps of the requests this budget sent still inside the
        window (one in flight counts as sent now; ``own=False``: with those counted for others
        too): what another process using the same account must count (``sync.cycle`` keeps
        them in the store)."""
        if self.limit is None:
            return []
        with self._guard:
            now = time.monotonic()
            self._expire(now)
            return sorted(now if s[0] == _IN_FLIGHT else s[0] for s in self._slots if not own or len(s) == 1)

    def count_sent(self, stamps: Iterable[float]) -> int:
        """Count requests another process sent at these ``time.monotonic()`` stamps (those
        still inside the window) as if sent here; how many were counted."""
        if self.limit is None:
            return 0
        with self._guard:
            now = time.monotonic()
            cutoff = now - self._window()
            fresh = [min(t, now) for t in stamps if t > cutoff]
            self._slots.extend([t, _OTHERS] for t in fresh)  # a second item: not sent here
            return len(fresh)

    def observe(self, obs: RateObservation) -> None:
        """Fold what the server reported into the budget: adopt its limit when ours is
        unknown, and when the server has counted more requests than we hold in the window
        (other clients on the same account), count the difference as sent now."""
        if obs.limit and obs.interval_s and self.limit is None:
            self.limit = RateLimit(obs.limit, obs.interval_s)
        if self.limit is None or obs.remaining is None:
            return
        with self._guard:
            now = time.monotonic()
            self._expire(now)
            server_used = (obs.limit or self.limit.requests) - obs.remaining
            missing = server_used - len(self._slots)
            for _ in range(max(0, min(missing, self.limit.requests))):
                self._slots.append([now, _OTHERS])


# --------------------------------------------------------------------------- observers


class HttpObserver:
    """Told about every response and every rate-limit wait of every :class:`HttpClient` (the
    engine's metrics subscribe with :func:`add_http_observer`). Connectors stay free of the
    engine: this is the whole interface. Methods must be cheap and must not raise."""

    def on_response(self, connection: str, platform: str, status: str) -> None:
        """A request ended: ``status`` is the HTTP status code as text, or the transport
        failure's class name (``ConnectError``, ``TimeoutError``...)."""

    def on_rate_wait(self, connection: str, platform: str, seconds: float) -> None:
        """The client waited ``seconds`` for the rate budget or for a 429's Retry-After."""


_observers: tuple[HttpObserver, ...] = ()


def add_http_observer(observer: HttpObserver) -> None:
    """Subscribe ``observer`` to every client's responses and waits (idempotent)."""
    global _observers
    if observer not in _observers:
        _observers = (*_observers, observer)


def remove_http_observer(observer: HttpObserver) -> None:
    """Unsubscribe ``observer`` (no-op when it was not subscribed)."""
    global _observers
    _observers = tuple(o for o in _observers if o is not observer)


def _notify_response(connection: str, platform: str, status: str) -> None:
    for o in _observers:
        try:
            o.on_response(connection, platform, status)
        except Exception:  # noqa: BLE001 - an observer never breaks a request
            log.debug("http.observer_failed", exc_info=True)


def _notify_wait(connection: str, platform: str, seconds: float) -> None:
    if seconds <= 0:
        return
    for o in _observers:
        try:
            o.on_rate_wait(connection, platform, seconds)
        except Exception:  # noqa: BLE001
            log.debug("http.observer_failed", exc_info=True)


# --------------------------------------------------------------------------- hooks + client


@dataclass
class ClientStats:
    """Counters per client (benchmarks and tests read them)."""

    requests: int = 0
    retries: int = 0
    http_429: int = 0
    http_5xx: int = 0
    timeouts: int = 0
    connection_errors: int = 0
    rechecks: int = 0


class HttpHooks:
    """The small per-platform hooks the shared loop calls. Defaults suit a plain JSON API."""

    platform: str = ""

    def auth_headers(self) -> dict[str, str]:
        """Headers carrying credentials (unwrap SecretStr only here)."""
        return {}

    def auth_params(self) -> dict[str, str]:
        """Query parameters carrying credentials (DM Champ ``apiKey``); redacted in logs."""
        return {}

    def default_headers(self) -> dict[str, str]:
        """Headers sent on every request besides the credentials."""
        return {"Accept": "application/json"}

    def classify(self, response: httpx.Response) -> Action | None:
        """A platform override of the table for this response (None: use the table). For
        example Acquire answers a missing record with 400 ``ERROR_RECORD_NOT_FOUND``."""
        return None

    def error_message(self, response: httpx.Response) -> str:
        """A short human message from an error body."""
        try:
            body = response.json()
        except ValueError:
            return response.text[:200] or response.reason_phrase
        if isinstance(body, dict):
            for key in ("message", "error", "msg", "detail", "errorMessage"):
                value = body.get(key)
                if value:
                    return value if isinstance(value, str) else json.dumps(value)[:300]
        return json.dumps(body)[:300]

    def rate_headers(self, response: httpx.Response) -> RateObservation | None:
        """The rate-limit state a response reports (GoHighLevel's header names by default)."""
        return parse_rate_headers(response.headers)

    async def before_send(self) -> None:
        """Called before every request is sent (GoHighLevel OAuth: refresh the access token
        when it expires soon). Default: nothing."""

    async def renew_credentials(self) -> bool:
        """A request was answered 401: renew the credentials (GoHighLevel OAuth: a refreshed
        access token) and return True to send it once more. Default: False (fail)."""
        return False


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds (decimals accepted, which
    the emulators send when their windows are scaled down) or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class HttpClient:
    """One connection's HTTP client: the send/classify/retry loop over ``httpx.AsyncClient``.

    ``options`` (the connection's validated :class:`ConnectorOptions`; parsed from
    ``settings.options`` when not given) tune the backoff: ``backoff_base_s``,
    ``backoff_cap_s`` and ``max_retry_after_s``; ``asyncio_backend``: on real sockets, httpcore
    runs over :mod:`connectors.netbackend` instead of its anyio backend.
    """

    def __init__(
        self,
        settings: ConnectionSettings,
        hooks: HttpHooks,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        default_rate_limit: RateLimit | None = None,
        options: ConnectorOptions | None = None,
    ) -> None:
        if options is None:
            options, _ = Connector.parse_settings(settings)
        self.settings = settings
        self.hooks = hooks
        self.platform = hooks.platform or settings.name
        self.stats = ClientStats()
        self.budget = RateBudget(settings.rate_limit or default_rate_limit)
        self.budget.on_wait = lambda seconds: _notify_wait(settings.name, self.platform, seconds)
        #: The run's stop event (see :meth:`Connector.bind_stop`): waits wake on it and no
        #: request is sent once it is set.
        self.stop: asyncio.Event | None = None
        self.signal: threading.Event | None = None  # the thread-world event that feeds ``stop``
        self._sem = asyncio.Semaphore(max(1, settings.max_concurrency))
        self.backoff_base_s = options.backoff_base_s
        self.backoff_cap_s = options.backoff_cap_s
        self.max_retry_after_s = options.max_retry_after_s
        self.daily = DailyQuota(options.daily_reserve, options.daily_window_s)
        self._redact = Redactor(
            [
                v.get_secret_value()
                for k, v in settings.credentials.items()
                # GoHighLevel's plain OAuth settings (user_type "Location", ...) are not secrets
                if not k.startswith("oauth.") or k in ("oauth.client_id", "oauth.client_secret")
            ]
        )
        self._rng = random.Random()
        asyncio_backend = options.asyncio_backend
        if transport is None and asyncio_backend:
            # Real sockets: httpcore over plain asyncio streams (connectors/netbackend.py) costs
            # far less CPU per request than its default anyio backend.
            transport = httpx.AsyncHTTPTransport(verify=tls_context())
            use_asyncio_backend(transport)
        self._client = httpx.AsyncClient(
            base_url=settings.base_url,
            transport=transport,
            verify=tls_context(),
            timeout=httpx.Timeout(settings.timeout_s),
            headers=hooks.default_headers(),
            follow_redirects=False,
            # Credentials are added to each request as it is sent, by the auth hook: no frame
            # above it (ours or httpx's) holds them in a local a traceback could render.
            auth=_HookAuth(hooks),
        )
        self._origin = _origin(httpx.URL(settings.base_url))

    # -- helpers

    def redact(self, text: str) -> str:
        """Text with every credential value of this connection replaced."""
        return self._redact(text)

    def backoff(self, attempt: int) -> float:
        """Full-jitter exponential backoff for retry number ``attempt`` (0-based)."""
        return self._rng.uniform(0, min(self.backoff_cap_s, self.backoff_base_s * (2**attempt)))

    def _where(self, method: str, path: str) -> str:
        return f"{self.platform} {method} {self.redact(redact_url(path).split('?')[0])}"

    def check_origin(self, url: str | httpx.URL) -> None:
        """Refuse (:class:`UnsafeUrl`) an absolute URL off the configured origin (scheme, host,
        port): a platform's link to another host, or to plain http, never gets a request (nor
        the credentials every request carries). Relative URLs are always on the origin."""
        u = httpx.URL(str(url))
        if not u.is_absolute_url and not u.host:
            return
        if _origin(u) != self._origin:
            scheme, host, port = _origin(u)
            raise UnsafeUrl(
                f"{self.platform}: refusing to follow a link to {scheme}://{host}:{port} - it is not the "
                f"configured origin {self._origin[0]}://{self._origin[1]}:{self._origin[2]}; nothing was sent there"
            )

    @property
    def stopped(self) -> bool:
        """Whether the run was asked to stop."""
        return (self.stop is not None and self.stop.is_set()) or (self.signal is not None and self.signal.is_set())

    async def _pause(self, seconds: float, *, may_have_landed: bool) -> None:
        if await pause(seconds, self.stop):
            raise Stopped("stopped during a retry backoff", may_have_landed=may_have_landed)

    # -- the loop

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool = True,
        allow: tuple[int, ...] = (),
    ) -> httpx.Response:
        """Send a request under the policy and return the successful response.

        ``allow`` lists extra statuses returned as-is instead of raised (e.g. 404 for a
        lookup). ``idempotent=False`` (POST create): a failure that may have landed raises
        :class:`AmbiguousWrite` instead of being retried; 429 and never-sent connection
        failures are still retried. A DELETE retried after an attempt that may have landed
        and then answered "not found" is a success (that attempt deleted it): the not-found
        response is returned. Raises ConfigurationError, RecordError/NotFound,
        RemoteUnavailable.
        """
        where = _Where(self, method, path)  # redacted text built only if a message needs it
        if "//" in path:  # an absolute URL (a platform's next-page link): on our origin only
            self.check_origin(path)
        attempt = 0
        may_have_landed = False  # an earlier attempt of this call may have been applied
        reauthorized = False  # a 401 is given one retry with renewed credentials (OAuth)
        while True:
            wait: float | None = None
            failure: str
            try:
                response = await self._send(method, path, params or {}, headers or {}, json_body)
            except Stopped:
                raise Stopped(may_have_landed=may_have_landed) from None
            except Exception as exc:  # noqa: BLE001 - classified below, re-raised if unknown
                action = classify_exception(exc)
                if action is None:
                    raise
                if isinstance(exc, (asyncio.TimeoutError, httpx.TimeoutException)):
                    self.stats.timeouts += 1
                else:
                    self.stats.connection_errors += 1
                failure = type(exc).__name__
                may_have_landed = may_have_landed or not isinstance(exc, _NEVER_SENT)
                if not idempotent and not isinstance(exc, _NEVER_SENT):
                    raise AmbiguousWrite(f"{where}: {failure}; the write may have landed") from None
            else:
                status = response.status_code
                if status in allow:
                    return response
                action = self.hooks.classify(response) or classify_status(status)
                if action is Action.SUCCESS:
                    return response
                if status == 429:
                    self.stats.http_429 += 1
                    if self.daily.exhausted():  # the day's budget, not the burst window: no retry
                        self.daily.check(where)
                elif status >= 500:
                    self.stats.http_5xx += 1
                message = self.redact(self.hooks.error_message(response))
                failure = f"HTTP {status}"
                if action is Action.FAIL_CONFIG:
                    if status == 401 and not reauthorized and await self.hooks.renew_credentials():
                        reauthorized = True  # a 401 is an answer: nothing landed; send again
                        continue
                    raise ConfigurationError(f"{where}: HTTP {status}: {message}")
                if action is Action.NOT_FOUND and method.upper() == "DELETE" and may_have_landed:
                    # A retried DELETE finding nothing: the earlier attempt landed.
                    log.info(
                        "http.delete_landed", platform=self.platform, connection=self.settings.name, request=str(where)
                    )
                    return response
                if action is Action.NOT_FOUND:
                    raise NotFound(status, f"{where}: {message}", _safe_body(response, self.redact))
                if action is Action.RECORD_ERROR:
                    raise RecordError(status, f"{where}: {message}", _safe_body(response, self.redact))
                wait = parse_retry_after(response.headers.get("Retry-After"))
                if wait is not None and wait > self.max_retry_after_s:
                    raise RemoteUnavailable(f"{where}: HTTP {status}: Retry-After {wait:.0f}s is too long")
                if not idempotent and action is not Action.RATE_LIMITED:
                    raise AmbiguousWrite(f"{where}: HTTP {status}; the write may have landed")
                may_have_landed = may_have_landed or action is not Action.RATE_LIMITED
            if attempt >= self.settings.max_retries:
                raise RemoteUnavailable(f"{where}: {failure} after {attempt + 1} attempts")
            sleep = wait if wait is not None else self.backoff(attempt)
            self.stats.retries += 1
            if failure == "HTTP 429":
                _notify_wait(self.settings.name, self.platform, sleep)
            log.info(
                "http.retry",
                platform=self.platform,
                connection=self.settings.name,
                request=str(where),
                failure=failure,
                attempt=attempt + 1,
                sleep_s=round(sleep, 3),
            )
            await self._pause(sleep, may_have_landed=may_have_landed)
            attempt += 1

    async def _send(
        self, method: str, path: str, params: Mapping[str, Any], headers: Mapping[str, str], body: Any
    ) -> httpx.Response:
        if self.stopped:
            raise Stopped
        self.daily.check(_Where(self, method, path))
        await self.hooks.before_send()
        async with self._sem:
            slot = await self.budget.acquire(self.stop)
            if self.stopped:  # no request starts after a stop
                self.budget.release(slot)
                raise Stopped
            self.stats.requests += 1
            kwargs: dict[str, Any] = {"params": params or None, "headers": headers}
            if body is not None:
                kwargs["json"] = body
            try:
                # wait_for as well: ASGITransport ignores httpx timeouts.
                response = await asyncio.wait_for(
                    self._client.request(method, path, **kwargs), timeout=self.settings.timeout_s
                )
            except Exception as exc:
                _notify_response(self.settings.name, self.platform, type(exc).__name__)
                raise
            finally:
                self.budget.release(slot)
            _notify_response(self.settings.name, self.platform, str(response.status_code))
            obs = self.hooks.rate_headers(response)
            if obs is not None:
                self.budget.observe(obs)
                self.daily.observe(obs)
            return response

    async def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """:meth:`request` and decode the JSON body (None for an empty body)."""
        response = await self.request(method, path, **kwargs)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise RemoteUnavailable(f"{self._where(method, path)}: response is not JSON") from exc

    async def write_once(
        self,
        send: Callable[[], Awaitable[T]],
        recheck: Callable[[], Awaitable[T | None]],
    ) -> T:
        """Run a non-idempotent write (``send`` calls :meth:`request` with
        ``idempotent=False``) so that it takes effect at most once: after an ambiguous failure,
        ``recheck`` (the connector's lookup) decides whether it landed; only when it finds
        nothing is the write sent again. Raises RemoteUnavailable when attempts run out."""
        attempt = 0
        while True:
            try:
                return await send()
            except AmbiguousWrite as exc:
                if attempt >= self.settings.max_retries:
                    raise RemoteUnavailable(f"{exc}; gave up after {attempt + 1} attempts") from None
                await self._pause(self.backoff(attempt), may_have_landed=True)
                self.stats.rechecks += 1
                try:
                    found = await recheck()
                except Stopped:
                    raise Stopped(may_have_landed=True) from None
                if found is not None:
                    log.info("http.write_landed", platform=self.platform, connection=self.settings.name)
                    return found
                self.stats.retries += 1
                attempt += 1

    async def aclose(self) -> None:
        await self._client.aclose()


class _HookAuth(httpx.Auth):
    """Adds a connection's credentials (its hooks' ``auth_headers`` / ``auth_params``) to each
    request as httpx sends it. Headers the caller set explicitly win over the hooks'."""

    def __init__(self, hooks: HttpHooks) -> None:
        self._hooks = hooks

    def auth_flow(self, request: httpx.Request) -> Any:
        for name, value in self._hooks.auth_headers().items():
            if name not in request.headers:
                request.headers[name] = value
        params = self._hooks.auth_params()
        if params:
            request.url = request.url.copy_merge_params(params)
        request.__class__ = _QuietRequest  # its repr must not show a key sent as a parameter
        yield request

    def __repr__(self) -> str:
        return "<credentials hidden>"


class _QuietRequest(httpx.Request):
    """An httpx request whose repr shows its URL redacted (tracebacks render locals by repr)."""

    def __repr__(self) -> str:
        return f"<Request({self.method!r}, {redact_url(self.url)!r})>"


def tls_context() -> ssl.SSLContext:
    """The TLS context every connector's client verifies servers with: the default trust
    store (httpx's: certifi, or ``SSL_CERT_FILE``/``SSL_CERT_DIR`` when set). Built once per
    setting, not per client: loading the certificates costs about 50 ms of CPU, and a cycle
    makes a client per connection and step."""
    return _tls_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@functools.cache
def _tls_context(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    # The arguments only key the cache: httpx reads the same variables itself.
    return httpx.create_ssl_context()


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    scheme = url.scheme.lower()
    return scheme, url.host.lower(), url.port or {"http": 80, "https": 443}.get(scheme)


class _Where:
    """``"platform METHOD /path"`` (redacted) for messages, rendered on first use: most requests
    succeed and never need it."""

    __slots__ = ("_client", "_method", "_path", "_text")

    def __init__(self, client: HttpClient, method: str, path: str) -> None:
        self._client, self._method, self._path = client, method, path
        self._text: str | None = None

    def __str__(self) -> str:
        if self._text is None:
            self._text = self._client._where(self._method, self._path)  # noqa: SLF001
        return self._text

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


def _safe_body(response: httpx.Response, redact: Callable[[str], str]) -> Any:
    """An error body for RecordError.body, with secrets redacted."""
    try:
        return json.loads(redact(response.text))
    except ValueError:
        return redact(response.text[:500])


# --------------------------------------------------------------------------- paging


class Paginator:
    """Watches a pull's pages for loops: a next-page token that was already followed, or a
    page made only of records this pull already returned (the server served a previous page
    again). :meth:`accept` returns False for such a repeat (the caller fetches the same request
    again); after ``max_repeats`` repeats in a row it raises :class:`PaginationError` — a loop
    is never followed silently."""

    def __init__(self, name: str, max_repeats: int = 3) -> None:
        self.name = name
        self.max_repeats = max_repeats
        self._tokens: set[Hashable] = set()
        self.repeats = 0
        self.total_repeats = 0

    def accept(self, next_token: Hashable | None, *, all_seen: bool = False) -> bool:
        """True when the page is progress; False when it repeats (fetch it again)."""
        repeated = (next_token is not None and next_token in self._tokens) or all_seen
        if repeated:
            self.repeats += 1
            self.total_repeats += 1
            if self.repeats > self.max_repeats:
                raise PaginationError(f"{self.name}: the same page came back {self.repeats} times")
            return False
        self.repeats = 0
        if next_token is not None:
            self._tokens.add(next_token)
        return True


#: Pages one pull follows at most by default (:func:`paginate`): 10,000 pages of 100 records
#: is a million contacts; past that a listing that keeps handing out new tokens is a fault.
MAX_PAGES = 10_000


@dataclass
class FetchedPage:
    """One page as a connector fetched it: its records and the token of the next page
    (None on the last page). ``token`` must be hashable (a number, string or tuple)."""

    records: list[RawRecord]
    next_token: Hashable | None
    extra: dict[str, Any] = field(default_factory=dict)


def _record_key(record: RawRecord) -> tuple[str, str]:
    """A record version's identity within one pull: its id and updated time (cheap), or a
    hash of its payload when the platform gives no updated time."""
    if record.updated_at is not None:
        return record.remote_id, record.updated_at.isoformat()
    digest = hashlib.blake2b(json.dumps(record.payload, sort_keys=True, default=str).encode(), digest_size=12)
    return record.remote_id, digest.hexdigest()


async def paginate(
    fetch: Callable[[Hashable | None], Awaitable[FetchedPage]],
    *,
    name: str,
    start: Hashable | None = None,
    max_repeats: int = 3,
    read_ahead: bool | int = False,
    successor: Callable[[Hashable], Hashable | None] | None = None,
    max_pages: int | None = MAX_PAGES,
) -> AsyncGenerator[tuple[Hashable | None, FetchedPage], None]:
    """The paging loop: ``fetch(token)`` until a page has no next token. Yields
    ``(token_requested, page)``; a repeated page is fetched again (see :class:`Paginator`),
    and records already yielded in this pull in the same version (same updated time, or the
    same payload when there is none) are dropped, so a page
    that shifted back over the previous one yields no duplicates. The page object yielded is
    the one ``fetch`` returned, with ``records`` filtered.

    ``read_ahead``: request the next page as soon as a page is accepted, so it is on its way
    while the caller stages the current one (the caller's page commit and the next request
    overlap). For scans that always read to the end on a platform without a rate limit
    (Acquire): a caller that stops early wastes the pages in flight, which are cancelled.
    An int asks for that many pages in flight; beyond the first, the tokens come from
    ``successor`` (the token expected after a given one, or None when no page is expected
    after it), so it only helps where tokens are predictable (page numbers). Pages are still
    yielded in order, one at a time; a prediction that turns out wrong (the page's own next
    token differs) only costs the requests already sent.

    ``max_pages``: a pull that is still given a next page after that many pages fails with
    :class:`PaginationError` (an endless paginator that never repeats a token); None: no cap."""
    paginator = Paginator(name, max_repeats)
    pages_done = 0
    seen: set[tuple[str, str]] = set()
    token = start
    depth = int(read_ahead)
    inflight: dict[Hashable, asyncio.Task[FetchedPage]] = {}  # token -> its request, in order
    try:
        while True:
            ahead = inflight.pop(token, None) if token is not None else None
            page = await ahead if ahead is not None else await fetch(token)
            keyed = [(_record_key(r), r) for r in page.records]
            all_seen = bool(keyed) and all(k in seen for k, _ in keyed)
            if not paginator.accept(page.next_token, all_seen=all_seen):
                continue
            fresh = []
            for key, record in keyed:
                if key not in seen:
                    seen.add(key)
                    fresh.append(record)
            page.records = fresh
            if depth and page.next_token is not None:
                _read_ahead(inflight, fetch, page.next_token, depth, successor)
            yield token, page
            if page.next_token is None:
                return
            pages_done += 1
            if max_pages is not None and pages_done >= max_pages:
                raise PaginationError(
                    f"{name}: still more pages after {pages_done}; stopped at the cap of {max_pages} pages"
                    " (an endless listing? raise option max_pages if the account is that large)"
                )
            token = page.next_token
    finally:
        for ahead in inflight.values():
            # Not awaited: a cancellation of the caller itself must not be swallowed here.
            ahead.cancel()
            ahead.add_done_callback(_retrieve)


def _read_ahead(
    inflight: dict[Hashable, asyncio.Task[FetchedPage]],
    fetch: Callable[[Hashable | None], Awaitable[FetchedPage]],
    first: Hashable,
    depth: int,
    successor: Callable[[Hashable], Hashable | None] | None,
) -> None:
    """Have the ``depth`` pages from ``first`` on in flight (fewer when ``successor`` gives
    none), cancelling requests for pages no longer expected."""
    wanted: list[Hashable] = []
    token: Hashable | None = first
    while token is not None and len(wanted) < depth:
        wanted.append(token)
        token = successor(token) if successor is not None else None
    for stale in [t for t in inflight if t not in wanted]:
        task = inflight.pop(stale)
        task.cancel()
        task.add_done_callback(_retrieve)
    for t in wanted:
        if t not in inflight:
            inflight[t] = asyncio.ensure_future(fetch(t))


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a discarded task's outcome as seen (no "exception was never retrieved" noise)."""
    if not task.cancelled():
        task.exception()


# --------------------------------------------------------------------------- connector base


class HttpConnector(HttpHooks, Connector):
    """A connector over :class:`HttpClient`. Subclasses set ``platform``, ``capabilities``,
    ``options_model`` and ``credentials_model``, fill the hooks of :class:`HttpHooks`, and
    implement the :class:`Connector` methods with ``self.http.request`` / ``self.http.json``.

    The settings are validated by those models before anything else (ConfigurationError naming
    each bad key): ``self.options`` and ``self.credentials`` are the validated values.
    """

    capabilities: Capabilities

    def __init__(self, settings: ConnectionSettings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.options, self.credentials = self.parse_settings(settings)
        self.settings = settings
        install_httpx_log_redaction()
        self.http = HttpClient(
            settings, self, transport=transport, default_rate_limit=self.capabilities.rate_limit, options=self.options
        )

    def bind_stop(self, stop: asyncio.Event | None, signal: threading.Event | None = None) -> None:
        self.http.stop, self.http.signal = stop, signal

    def secret(self, name: str) -> str:
        """A credential's value (use only where a request is built)."""
        return self.settings.credentials[name].get_secret_value()

    @property
    def stats(self) -> ClientStats:
        """The HTTP counters of this connection."""
        return self.http.stats

    async def aclose(self) -> None:
        await self.http.aclose()
