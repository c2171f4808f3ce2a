"""The shared emulator framework: a faithful fake of a platform's API over in-memory state.

A platform emulator subclasses :class:`Emulator`, declares its routes (Starlette) and fills a
few hooks (authentication, how a generated person becomes a raw record, how an outside edit
touches a record). The framework adds, around every request, what real APIs do to clients:

* a sliding-window **rate limiter** with the platform's documented limit, its window divided by
  ``rate_scale`` (so tests and benchmarks run fast), 429 on excess;
* **fault injection** (:class:`FaultConfig`, seeded): 429 with/without ``Retry-After``, 5xx,
  slow responses past the client's timeout, dropped connections, repeated or shifted pages.
  A write fault is injected either *before* the handler (nothing applied) or *after* it
  (applied, response lost) - never half-applied, never applied twice;
* a **request log** (``request_log``: ``(method, path, status, time)``; status 0 = dropped);
* a controllable **clock** for record timestamps (real time by default; frozen for tests).

In tests an emulator is reached in process through :meth:`Emulator.transport`
(``httpx.ASGITransport``); :func:`serve` runs emulators on real sockets under uvicorn.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import random
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import httpx
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from connectors.base import ConnectionSettings, RateLimit
from connectors.timestamps import iso_ms

JSON = dict[str, Any]

FAULT_KINDS: frozenset[str] = frozenset(
    {"429", "429_retry_after", "500", "502", "503", "slow", "drop", "repeat_page", "shift_page"}
)
_PAGE_KINDS = frozenset({"repeat_page", "shift_page"})
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# The fault decided for the request being handled (read by list handlers via page_fault()).
_current_fault: contextvars.ContextVar[str | None] = contextvars.ContextVar("emulator_fault", default=None)


# --------------------------------------------------------------------------- clock


class Clock:
    """The emulator's notion of "now" for record timestamps.

    Real UTC time by default; :meth:`advance` shifts it forward; a frozen clock (``frozen=True``
    or :meth:`freeze`) stands still until advanced, so tests control every timestamp.
    """

    def __init__(self, start: datetime | None = None, *, frozen: bool = False) -> None:
        self._offset = timedelta(0)
        self._frozen_at: datetime | None = None
        if frozen or start is not None:
            self.freeze(start)

    def now(self) -> datetime:
        """The current time (UTC, aware)."""
        if self._frozen_at is not None:
            return self._frozen_at
        return datetime.now(UTC) + self._offset

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        if self._frozen_at is not None:
            self._frozen_at += timedelta(seconds=seconds)
        else:
            self._offset += timedelta(seconds=seconds)

    def freeze(self, at: datetime | None = None) -> None:
        """Stop the clock (at ``at``, default: now)."""
        at = at or self.now()
        self._frozen_at = at if at.tzinfo else at.replace(tzinfo=UTC)

    @property
    def frozen(self) -> bool:
        return self._frozen_at is not None


# --------------------------------------------------------------------------- rate limiting


class SlidingWindow:
    """Server-side sliding window: at most ``limit.requests`` accepted in any ``per_seconds``.
    Uses the monotonic clock (not the record clock), so a frozen record clock does not stall it."""

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self._hits: deque[float] = deque()

    def hit(self) -> tuple[bool, int, float]:
        """Count a request if it fits: ``(allowed, remaining, retry_after_seconds)``."""
        now = time.monotonic()
        window = self.limit.per_seconds
        while self._hits and self._hits[0] <= now - window:
            self._hits.popleft()
        if len(self._hits) >= self.limit.requests:
            return False, 0, max(0.0, self._hits[0] + window - now)
        self._hits.append(now)
        return True, self.limit.requests - len(self._hits), 0.0


# --------------------------------------------------------------------------- faults


@dataclass(frozen=True)
class FaultConfig:
    """Seeded fault injection: a fraction ``rate`` of requests get one fault drawn from
    ``kinds``. ``slow_seconds`` is how long a slow response stalls (make it exceed the client's
    timeout); ``retry_after_s`` the Retry-After sent with ``429_retry_after``."""

    rate: float = 0.0
    seed: int = 0
    kinds: frozenset[str] = FAULT_KINDS
    slow_seconds: float = 1.0
    retry_after_s: float = 0.01

    def __post_init__(self) -> None:
        unknown = set(self.kinds) - FAULT_KINDS
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {sorted(FAULT_KINDS)}")
        object.__setattr__(self, "kinds", frozenset(self.kinds))


class RequestLogEntry(NamedTuple):
    """One request as the emulator saw it. ``status`` 0 means the connection was dropped;
    ``time`` is ``time.monotonic()`` at arrival."""

    method: str
    path: str
    status: int
    time: float


@dataclass
class FaultLogEntry:
    method: str
    path: str
    kind: str
    when: str  # "before" (nothing applied) or "after" (applied, response lost)


# --------------------------------------------------------------------------- indexes


class ValueIndex:
    """Which records hold a value (an email, a phone): what a real API answers from an index,
    so a duplicate check or a lookup costs the same however many contacts there are.

    The emulator calls :meth:`put` on every path that sets a record's value (create, update,
    outside edit, seed) and :meth:`drop` when a record goes away. :meth:`first` answers "the
    first record, in creation order, holding this value", the order of the scan it replaces."""

    def __init__(self) -> None:
        self._holders: dict[Hashable, set[Hashable]] = {}
        self._value_of: dict[Hashable, Hashable] = {}
        self._position: dict[Hashable, int] = {}
        self._count = itertools.count()

    def put(self, record_id: Hashable, value: Hashable | None) -> None:
        """``record_id`` now holds ``value`` (None: no value) instead of what it held."""
        if record_id not in self._position:
            self._position[record_id] = next(self._count)
        old = self._value_of.get(record_id, _ABSENT)
        if old == value and old is not _ABSENT:
            return
        if old is not _ABSENT:
            self._value_of.pop(record_id)
            holders = self._holders[old]
            holders.discard(record_id)
            if not holders:
                del self._holders[old]
        if value is not None:
            self._value_of[record_id] = value
            self._holders.setdefault(value, set()).add(record_id)

    def drop(self, record_id: Hashable) -> None:
        """The record is gone (deleted, merged away)."""
        self.put(record_id, None)
        self._position.pop(record_id, None)

    def holders(self, value: Hashable) -> AbstractSet[Hashable]:
        """The records holding ``value`` (read it, never change it)."""
        return self._holders.get(value, _NONE)

    def first(self, value: Hashable) -> Hashable | None:
        """The earliest created record holding ``value``, or None."""
        holders = self._holders.get(value)
        if not holders:
            return None
        return min(holders, key=self._position.__getitem__)


_ABSENT: Any = object()
_NONE: frozenset[Any] = frozenset()


# --------------------------------------------------------------------------- fake people


_FIRST = (
    "Ada",
    "Grace",
    "Alan",
    "Linus",
    "Margaret",
    "Edsger",
    "Barbara",
    "Donald",
    "Frances",
    "Ken",
    "Radia",
    "Dennis",
    "Hedy",
    "John",
    "Katherine",
    "Tim",
    "Annie",
    "Niklaus",
    "Sophie",
    "Guido",
)
_LAST = (
    "Lovelace",
    "Hopper",
    "Turing",
    "Torvalds",
    "Hamilton",
    "Dijkstra",
    "Liskov",
    "Knuth",
    "Allen",
    "Thompson",
    "Perlman",
    "Ritchie",
    "Lamarr",
    "McCarthy",
    "Johnson",
    "Berners-Lee",
    "Easley",
    "Wirth",
    "Wilson",
    "van Rossum",
)
_CITIES = (
    ("San Francisco", "CA", "US"),
    ("New York", "NY", "US"),
    ("Austin", "TX", "US"),
    ("Boston", "MA", "US"),
    ("Seattle", "WA", "US"),
    ("Chicago", "IL", "US"),
)
_AREA = (212, 213, 312, 415, 512, 617, 646, 718, 206, 305)
_TAGS = ("vip", "lead", "customer", "newsletter", "partner")


def fake_person(rng: random.Random, index: int) -> JSON:
    """A platform-neutral generated person (the shape :meth:`Emulator.seed` accepts):
    unique email and E.164 phone per ``index``."""
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    city, state, country = rng.choice(_CITIES)
    area = _AREA[index % len(_AREA)]
    n = index // len(_AREA)  # < 8,000,000 unique numbers per area code
    exchange = 200 + (n // 10_000) % 800
    if exchange in (555, 911):
        exchange += 1
    phone = f"+1{area}{exchange:03d}{n % 10_000:04d}"
    return {
        "first_name": first,
        "last_name": last,
        "email": f"{first.lower()}.{last.lower().replace(' ', '')}.{index}@example.com",
        "phone": phone,
        "company": rng.choice(("Analytical Engines", "Compilers Inc", "Bletchley", "")) or None,
        "city": city,
        "state": state,
        "country": country,
        "tags": sorted(rng.sample(_TAGS, rng.randint(0, 2))),
        "custom": {"plan": rng.choice(("free", "pro", "enterprise"))},
    }


# --------------------------------------------------------------------------- the gate


class _Gate:
    """ASGI middleware: request log, rate limit, authentication, faults, around the routes."""

    def __init__(self, app: ASGIApp, emulator: Emulator) -> None:
        self.app = app
        self.emulator = emulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        emu = self.emulator
        method, path = scope["method"], scope["path"]
        arrived = time.monotonic()
        status_box: list[int] = [0]

        async def logged_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
                headers = list(message.get("headers", []))
                headers += [(k.lower().encode(), v.encode()) for k, v in rate_headers.items()]
                message = {**message, "headers": headers}
            await send(message)

        rate_headers: dict[str, str] = {}
        try:
            allowed, remaining, retry_after = emu._window.hit() if emu._window else (True, -1, 0.0)
            if emu._window is not None:
                rate_headers = emu.rate_limit_headers(remaining)
            if not allowed:
                await emu.rate_limited_response(retry_after, rate_headers)(scope, receive, logged_send)
                return
            request = Request(scope, receive)
            denied = emu.authenticate(request)
            if denied is not None:
                await denied(scope, receive, logged_send)
                return
            kind = emu._draw_fault(method, path)
            await self._with_fault(kind, scope, receive, logged_send)
        finally:
            emu.request_log.append(RequestLogEntry(method, path, status_box[0], arrived))

    async def _with_fault(self, kind: str | None, scope: Scope, receive: Receive, send: Send) -> None:
        emu = self.emulator
        method, path = scope["method"], scope["path"]
        if kind is None or kind in _PAGE_KINDS:
            token = _current_fault.set(kind)
            try:
                await self.app(scope, receive, send)
            finally:
                _current_fault.reset(token)
            return
        if kind in ("429", "429_retry_after", "503"):
            emu.fault_log.append(FaultLogEntry(method, path, kind, "before"))
            status = 503 if kind == "503" else 429
            headers = {"Retry-After": _fmt_seconds(emu.faults.retry_after_s)} if kind != "429" else {}
            await emu.error_response(status, headers)(scope, receive, send)
            return
        # 500/502/slow/drop on a write: before (nothing applied) or after (applied, response lost).
        after = method in _WRITE_METHODS and emu._rng.random() < 0.5
        emu.fault_log.append(FaultLogEntry(method, path, kind, "after" if after else "before"))
        if after:
            buffered: list[Message] = []

            async def capture(message: Message) -> None:
                buffered.append(message)

            await self.app(scope, receive, capture)
        if kind in ("500", "502"):
            await emu.error_response(int(kind), {})(scope, receive, send)
        elif kind == "slow":
            await asyncio.sleep(emu.faults.slow_seconds)
            if after:
                for message in buffered:
                    await send(message)
            else:
                await self.app(scope, receive, send)
        elif kind == "drop":
            await _drop(send)


async def _drop(send: Send) -> None:
    """Drop the connection mid-response: start a response promising a body, then fail. Through
    ``httpx.ASGITransport`` the client sees the exception; under uvicorn the started response
    makes the server close the socket, and the client sees an incomplete message."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"64")],
        }
    )
    await send({"type": "http.response.body", "body": b'{"partial":', "more_body": True})
    raise httpx.RemoteProtocolError("emulated dropped connection")


def _fmt_seconds(seconds: float) -> str:
    """Retry-After: whole seconds when whole, else a decimal (scaled-down windows)."""
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:.3f}"


# --------------------------------------------------------------------------- the base class


class Emulator:
    """Base class of a platform emulator.

    Subclasses set ``platform``, ``documented_rate_limit``, ``default_credentials`` and
    implement :meth:`routes`, :meth:`authenticate`, :meth:`insert_person` (a generated or given
    person -> a stored raw record) and :meth:`touch` (bump a record's updated time). State is
    ``self.contacts`` (remote id -> stored raw record, live) and ``self.deleted`` (remote id ->
    record, deleted or merged away); keys are remote ids as strings, exactly as the connector's
    ``RawRecord.remote_id`` (the contract suite relies on it).
    """

    platform: str = ""
    documented_rate_limit: RateLimit | None = None
    default_credentials: dict[str, str] = {}

    def __init__(
        self,
        *,
        base_url: str | None = None,
        rate_scale: float = 1.0,
        faults: FaultConfig | None = None,
        clock: Clock | None = None,
        credentials: dict[str, str] | None = None,
        rate_limit: RateLimit | None | bool = True,
    ) -> None:
        """``rate_limit``: True = the documented limit scaled by ``rate_scale``; a RateLimit
        to use instead; False/None = no limit."""
        self.base_url = (base_url or f"http://{self.platform}.emulator").rstrip("/")
        self.rate_scale = rate_scale
        self.faults = faults or FaultConfig()
        self.clock = clock or Clock()
        self.credentials: dict[str, str] = dict(credentials or self.default_credentials)
        if rate_limit is True:
            self.rate_limit = self.documented_rate_limit.scaled(rate_scale) if self.documented_rate_limit else None
        else:
            self.rate_limit = rate_limit or None
        self._window = SlidingWindow(self.rate_limit) if self.rate_limit else None
        self._rng = random.Random(self.faults.seed)
        self.request_log: list[RequestLogEntry] = []
        self.fault_log: list[FaultLogEntry] = []
        self.contacts: dict[str, JSON] = {}
        self.deleted: dict[str, JSON] = {}
        self.app = Starlette(routes=list(self.routes()), middleware=[Middleware(_Gate, emulator=self)])

    # -- hooks for subclasses

    def routes(self) -> Sequence[BaseRoute]:
        """The platform's routes (handlers are methods of the subclass)."""
        raise NotImplementedError

    def authenticate(self, request: Request) -> Response | None:
        """None when the request carries valid credentials, else the platform's 401/403."""
        raise NotImplementedError

    def insert_person(self, person: JSON) -> str:
        """Store a platform-neutral person (see :func:`fake_person`) as a raw record; its id."""
        raise NotImplementedError

    def touch(self, record: JSON) -> None:
        """Bump the record's updated time to ``self.clock.now()``."""
        raise NotImplementedError

    def apply_edit(self, record: JSON, changes: JSON) -> None:
        """Apply an outside edit's raw ``changes`` to a stored record (default: shallow update)."""
        record.update(changes)

    def connector_options(self) -> JSON:
        """Platform options the connector needs to talk to this emulator."""
        return {}

    def rate_limit_headers(self, remaining: int) -> dict[str, str]:
        """Rate-limit headers sent on every response (none unless the platform sends them)."""
        return {}

    def rate_limited_response(self, retry_after: float, headers: dict[str, str]) -> Response:
        """The platform's 429 (by default without Retry-After, as most platforms document none)."""
        return JSONResponse({"message": "Too Many Requests"}, status_code=429, headers=headers)

    def error_response(self, status: int, headers: dict[str, str]) -> Response:
        """The platform's error body for an injected 429/5xx."""
        return JSONResponse({"message": "emulated fault", "statusCode": status}, status_code=status, headers=headers)

    # -- framework

    def transport(self) -> httpx.ASGITransport:
        """An in-process transport to this emulator for ``httpx.AsyncClient``."""
        return httpx.ASGITransport(app=self.app)

    def connection_settings(self, base_url: str | None = None, **overrides: Any) -> ConnectionSettings:
        """Ready-to-use settings for this platform's connector: the accepted credentials as
        SecretStr, the options it needs, this emulator's (scaled) rate limit, a timeout below
        the slow-fault stall and backoff scaled like the rate windows. ``overrides`` replace
        any ConnectionSettings field; ``options`` are merged."""
        faults = self.faults
        slow = faults.rate > 0 and "slow" in faults.kinds
        scale = max(self.rate_scale, 1.0)
        options = {
            **self.connector_options(),
            "backoff_base_s": 0.5 / scale,
            "backoff_cap_s": 30.0 / scale,
            **overrides.pop("options", {}),
        }
        values: dict[str, Any] = {
            "name": self.platform,
            "base_url": base_url or self.base_url,
            "credentials": {k: SecretStr(v) for k, v in self.credentials.items()},
            "options": options,
            "timeout_s": min(10.0, faults.slow_seconds / 2) if slow else 10.0,
            "rate_limit": self.rate_limit,
        }
        values.update(overrides)
        return ConnectionSettings(**values)

    def _draw_fault(self, method: str, path: str) -> str | None:
        if self.faults.rate <= 0 or not self.faults.kinds:
            return None
        if self._rng.random() >= self.faults.rate:
            return None
        return self._rng.choice(sorted(self.faults.kinds))

    def page_fault(self) -> str | None:
        """For list handlers: ``"repeat_page"``, ``"shift_page"`` or None for this request.
        A handler serves the previous page again on repeat, and starts one record earlier on
        shift - never later, so a pull that tolerates repeats stays complete."""
        kind = _current_fault.get()
        if kind in _PAGE_KINDS:
            self.fault_log.append(FaultLogEntry("GET", "<list>", kind, "before"))
            return kind
        return None

    def page_window(self, start: int, page_size: int) -> tuple[int, int]:
        """The slice ``[lo, hi)`` a list handler should serve for a page that should be
        ``[start, start + page_size)``, after any page fault of this request: a repeat serves
        the previous page again; a shift starts one record earlier (as if a record had been
        inserted ahead) and still ends where the page should, so nothing is ever skipped."""
        kind = self.page_fault() if start > 0 else None
        if kind == "repeat_page":
            return max(0, start - page_size), start
        if kind == "shift_page":
            return start - 1, start + page_size
        return start, start + page_size

    def count_status(self, status: int) -> int:
        """How many logged requests got ``status``."""
        return sum(1 for e in self.request_log if e.status == status)

    def now_iso(self) -> str:
        """The clock's now as ISO-8601 UTC with milliseconds and ``Z``."""
        return iso_ms(self.clock.now())

    # -- test helpers

    def seed(self, contacts: int | Iterable[JSON], rng_seed: int = 0) -> list[str]:
        """Load ``n`` generated persons or the given platform-neutral person dicts (keys of
        :func:`fake_person`; missing keys are absent). Returns the new remote ids."""
        rng = random.Random(rng_seed)
        start = len(self.contacts) + len(self.deleted)
        people: Iterable[JSON]
        if isinstance(contacts, int):
            people = (fake_person(rng, start + i) for i in range(contacts))
        else:
            people = contacts
        return [self.insert_person(dict(p)) for p in people]

    def external_edit(self, remote_id: str, changes: JSON) -> JSON:
        """An edit made by a person on the platform itself: applies raw ``changes`` and bumps
        the updated time. Returns the record."""
        record = self.contacts[remote_id]
        self.apply_edit(record, changes)
        self.touch(record)
        return record

    def records(self, include_deleted: bool = False) -> list[JSON]:
        """Copies of the stored raw records (for assertions)."""
        import copy

        out = [copy.deepcopy(r) for r in self.contacts.values()]
        if include_deleted:
            out += [copy.deepcopy(r) for r in self.deleted.values()]
        return out


class RecordingTransport(httpx.AsyncBaseTransport):
    """A transport wrapper for tests: forwards to ``inner`` (e.g. :meth:`Emulator.transport`)
    and records every (request, response) pair with both bodies read, so a test can inspect
    exactly what a connector sent and what it got back."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.exchanges: list[tuple[httpx.Request, httpx.Response]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        response = await self.inner.handle_async_request(request)
        body = await response.aread()
        self.exchanges.append(
            (request, httpx.Response(response.status_code, headers=response.headers, content=body, request=request))
        )
        return httpx.Response(response.status_code, headers=response.headers, content=body, request=request)

    def sent(self, method: str, path: str) -> list[httpx.Request]:
        """Recorded requests with this method and path."""
        return [q for q, _ in self.exchanges if q.method == method and q.url.path == path]


# --------------------------------------------------------------------------- serving


@dataclass
class Served:
    """An emulator bound to a port."""

    emulator: Emulator
    host: str
    port: int
    extra: JSON = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def serve(
    emulators: Sequence[Emulator],
    host: str = "127.0.0.1",
    port: int = 8700,
    on_ready: Callable[[list[Served]], None] | None = None,
) -> list[Served]:
    """Serve emulators under uvicorn on consecutive ports from ``port`` until SIGINT or
    SIGTERM, then stop every server cleanly and return (no signal is re-raised, so the
    process can exit 0). ``on_ready`` is called once every server listens. Raises OSError
    when a port cannot be bound."""
    import signal

    import uvicorn

    class _Server(uvicorn.Server):
        # We own the signals: one handler stops every server, nothing is re-raised after.
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    served = [Served(e, host, port + i) for i, e in enumerate(emulators)]
    servers = [
        _Server(
            uvicorn.Config(
                s.emulator.app,
                host=host,
                port=s.port,
                log_level="warning",
                lifespan="off",
                access_log=False,
                log_config=None,  # uvicorn's records go to the root logger: the process's one format
            )
        )
        for s in served
    ]
    failed: list[int] = []

    def stop(*_: Any) -> None:
        for server in servers:
            server.should_exit = True

    async def run_one(server: uvicorn.Server) -> None:
        try:
            await server.serve()
        except SystemExit:  # uvicorn exits on a bind failure
            failed.append(server.config.port)
            stop()

    async def ready() -> None:
        while not all(s.started for s in servers):
            if any(s.should_exit for s in servers):
                return
            await asyncio.sleep(0.02)
        if on_ready is not None:
            on_ready(served)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop)
        try:
            await asyncio.gather(*(run_one(s) for s in servers), ready())
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    asyncio.run(main())
    if failed:
        raise OSError(f"could not listen on {host}:{', '.join(map(str, sorted(failed)))}")
    return served
