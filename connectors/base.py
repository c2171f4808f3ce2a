"""The connector contract: what the engine may ask of a platform, and what a platform declares.

A connector speaks HTTP only (never the database). It declares :class:`Capabilities`, and the
engine adapts: how to pull (change feed, sorted scan, full scan, lookup only), which writes
exist (create, update, delete, merge, tag add/remove, upsert) and which raw fields it can write.

Records cross this boundary raw (the platform's own JSON) as :class:`RawRecord`; the mapping in
``mappings/<platform>.yaml`` turns them into canonical fields elsewhere.

All network methods are ``async``: connections run concurrently and the in-process emulators are
ASGI apps reached through ``httpx.ASGITransport``.
"""

from __future__ import annotations

import asyncio
import enum
import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

JSON = dict[str, Any]


class PullMode(str, enum.Enum):
    """How a platform's changes can be found."""

    CHANGE_FEED = "change_feed"  # server-side filter on updated-at (GoHighLevel search)
    SORTED_SCAN = "sorted_scan"  # list sorted by updated-at, newest first: stop at the cursor
    FULL_SCAN = "full_scan"  # list everything every time (Acquire)
    LOOKUP_ONLY = "lookup_only"  # no listing at all; find by phone/email (DM Champ)


@dataclass(frozen=True)
class RateLimit:
    """A documented request budget: ``requests`` per ``per_seconds`` (None: no known limit)."""

    requests: int
    per_seconds: float

    @property
    def per_second(self) -> float:
        return self.requests / self.per_seconds

    def scaled(self, factor: float) -> RateLimit:
        """The same budget with the window shrunk by ``factor`` (factor 10 = ten times faster)."""
        return RateLimit(self.requests, self.per_seconds / factor)


@dataclass(frozen=True)
class Capabilities:
    """What a connector can do; the engine plans only what is declared here."""

    pull_mode: PullMode
    can_create: bool = True
    can_update: bool = True
    can_delete: bool = True
    can_merge: bool = False
    can_upsert: bool = False
    tags_via_endpoint: bool = False  # tags changed by add/remove calls, never sent on update
    # Raw top-level payload keys an update may carry (None: any mapped field).
    updatable_fields: frozenset[str] | None = None
    # Canonical fields a create needs (DM Champ: phones); a person without them is excluded.
    required_for_create: tuple[str, ...] = ()
    # Keys the platform can be searched by, in the order to try (settles in-flight creates).
    lookup_keys: tuple[str, ...] = ("email", "phone")
    # True when the platform refuses one identity key value on two of its contacts (Comm100:
    # "identity already used"): a merge's loser kept there keeps its keys off the survivor.
    unique_keys: bool = False
    # True when a full scan can prove a record is gone (deletion detection is allowed).
    deletes_detectable: bool = True
    # True when a listing shows each record as it is now. False for an eventually consistent
    # search (GoHighLevel): a record listed may still show an earlier version, so the engine
    # reads it by id before writing over it.
    listing_current: bool = True
    rate_limit: RateLimit | None = None
    # How far back an incremental pull re-reads (eventually consistent search), in seconds.
    overlap_seconds: float = 0.0
    # Canonical fields found not writable on this connection (a write the platform ignored or
    # changed; write verification, stored in the store): read from it, never written to it.
    unwritable_fields: frozenset[str] = frozenset()


@dataclass
class RawRecord:
    """One record as the platform returned it."""

    remote_id: str
    payload: JSON
    updated_at: datetime | None = None
    # The platform says this record was merged into another one (Comm100 mergeToContactId).
    merged_into: str | None = None
    # The platform says this record is deleted (explicit signal, e.g. a soft-deleted row).
    deleted: bool = False


@dataclass
class Page:
    """A page of pulled records and the cursor to resume *after* this page.

    ``cursor`` is plain JSON (stored as-is in the ``cursors`` table); ``total`` is optional. ``complete`` is set on
    the last page of a pull; when ``full_scan`` is also set, every live record was returned
    by this pull, so a record not seen may be treated as deleted (deletion detection).
    """

    records: list[RawRecord]
    cursor: JSON
    complete: bool = False
    full_scan: bool = False
    #: How many records the whole pull is expected to list, when the platform says (GoHighLevel's
    #: search ``total``, Comm100's ``total``, Acquire's count): progress bars show it with an ETA.
    total: int | None = None
    #: On the last page of an incremental listing sorted newest first: it went back past its
    #: cursor (met a record older than the cursor less the overlap, in an order that held), so
    #: every record changed since then is among those listed.
    caught_up: bool = False


@dataclass
class WriteResult:
    """The outcome of a successful write: the record as it now stands when the platform
    returned it (None when it returned only an id or nothing)."""

    remote_id: str
    record: RawRecord | None = None
    created: bool = False
    extra: JSON = field(default_factory=dict)


@dataclass
class ConnectionSettings:
    """What a connector needs to reach one account; built from the config by the engine.

    ``credentials`` values are SecretStr and are only unwrapped where a request is built.
    ``options`` carry platform settings (GoHighLevel ``location_id`` and ``version``, Comm100
    ``site_id``, ...). ``rate_limit`` overrides the platform's documented budget (for example a
    scaled one against an emulator); ``None`` keeps the documented one.
    """

    name: str
    base_url: str
    credentials: Mapping[str, SecretStr] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    timeout_s: float = 30.0
    max_concurrency: int = 4
    max_retries: int = 6
    rate_limit: RateLimit | None = None
    #: What ``contactsync probe`` measured on this account: behaviour name (``connectors/
    #: <platform>/behaviours.py``) -> variant. A behaviour absent here is unknown, and the
    #: connector must then be right under every one of its variants.
    behaviours: Mapping[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- settings models


class ConnectorOptions(BaseModel):
    """The options every connector understands (those of the shared HTTP layer); each platform
    subclasses it with its own. Validation of a connection's ``options`` is delegated here, by
    the config loader and by the connector itself, so the two cannot drift.

    Keys not declared are kept and passed on (the config loader warns about them: typos).
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    #: Records a page asks for (each platform sets its default and maximum).
    page_size: int = Field(default=100, ge=1, description="a page size of at least 1")
    #: Region for phone numbers written without a country code (the config's
    #: ``default_phone_region`` fills it in).
    default_region: str = Field(default="US", description="an ISO 3166 alpha-2 region code")
    backoff_base_s: float = Field(default=0.5, ge=0, description="seconds of the first retry backoff")
    backoff_cap_s: float = Field(default=30.0, ge=0, description="the longest retry backoff in seconds")
    #: A longer Retry-After gives up with RemoteUnavailable rather than stall the run.
    max_retry_after_s: float = Field(default=300.0, ge=0, description="the longest Retry-After to wait, in seconds")
    #: On real sockets, httpcore runs over ``connectors/netbackend.py`` instead of anyio.
    asyncio_backend: bool = Field(default=True, description="true or false")
    #: A record stamped later than the server's now plus this many seconds is flagged and never
    #: moves a cursor (connectors/pulls.py).
    clock_skew_s: float = Field(default=300.0, ge=0, description="seconds of allowed clock skew")
    #: Pages one pull follows at most (an endless paginator fails with a clear error).
    max_pages: int = Field(default=10_000, ge=1, description="a page count of at least 1")
    #: Daily request budget (GoHighLevel's X-RateLimit-Daily-* headers): requests kept back
    #: from it (the connection pauses at this many left) and the length of its window (aligned
    #: on UTC midnight for a day).
    daily_reserve: int = Field(default=0, ge=0, description="a number of requests of at least 0")
    daily_window_s: float = Field(default=86_400.0, gt=0, description="seconds of the daily window")

    @field_validator("asyncio_backend", mode="before")
    @classmethod
    def _strict_bool(cls, value: Any) -> Any:
        if not isinstance(value, bool):
            raise ValueError("true or false")
        return value

    @classmethod
    def unknown(cls, options: Iterable[str]) -> list[str]:
        """The option names this model does not declare (sorted)."""
        return sorted(set(options) - set(cls.model_fields))


class ConnectorCredentials(BaseModel):
    """The credentials of a connection, each a ``SecretStr`` unwrapped only where a request is
    built. A platform subclasses it with its fields; an empty value counts as absent. Names not
    declared are kept (and still redacted)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _drop_empty(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            return {k: v for k, v in data.items() if _secret_text(v)}
        return data

    def check_options(self, options: ConnectorOptions) -> None:
        """Rules that tie credentials to options (Comm100 Basic auth needs ``site_id``): raise
        :class:`SettingsProblem`."""


def _secret_text(value: Any) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return "" if value is None else str(value)


def optional_id(value: Any, what: str) -> Any:
    """An account id given as a string or a number (YAML reads ``10000`` as an int): its text;
    anything else (a bool, a mapping, an empty string) is refused as ``what``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        raise ValueError(what)
    return str(value)


class SettingsProblem(ValueError):
    """One thing wrong with a connection's settings: the key (``options.site_id``,
    ``credentials``), what was expected and what was found (never a secret's value)."""

    def __init__(self, key: str, expected: str, found: str) -> None:
        super().__init__(f"{key}: expected {expected}, found {found}")
        self.key = key
        self.expected = expected
        self.found = found


def _found(value: Any, *, secret: bool) -> str:
    if value is None:
        return "nothing"
    if secret:
        return "a value (hidden: it is a secret)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _problems(model: type[BaseModel], data: Mapping[str, Any], part: str) -> list[SettingsProblem]:
    """Validate ``data`` against ``model``: the problems, each naming its key."""
    try:
        model.model_validate(dict(data))
    except ValidationError as exc:
        out = []
        for err in exc.errors():
            loc = [str(p) for p in err["loc"]]
            key = ".".join([part, *loc])
            msg = str(err["msg"])
            for prefix in ("Value error, ", "Input should be ", "Assertion failed, "):
                msg = msg.removeprefix(prefix)
            info = model.model_fields.get(loc[0]) if loc else None
            if err["type"] == "missing":
                expected = info.description if info and info.description else "a value"
                found = "nothing"
            elif not loc and part == "credentials":
                expected, found = msg, str(sorted(data)) if data else "nothing"
            else:
                expected, found = msg, _found(err.get("input"), secret=part == "credentials")
            out.append(SettingsProblem(key, expected, found))
        return out
    return []


def settings_problems(
    options_model: type[ConnectorOptions],
    credentials_model: type[ConnectorCredentials],
    options: Mapping[str, Any],
    credentials: Mapping[str, Any],
) -> list[SettingsProblem]:
    """Everything wrong with a connection's ``options`` and ``credentials`` under a platform's
    models (empty when they are valid)."""
    problems = _problems(credentials_model, credentials, "credentials") + _problems(options_model, options, "options")
    if not problems:
        try:
            credentials_model.model_validate(dict(credentials)).check_options(
                options_model.model_validate(dict(options))
            )
        except SettingsProblem as exc:
            problems.append(exc)
    return problems


class ConnectorError(Exception):
    """Base of the errors a connector raises. Messages never carry credentials."""


class ConfigurationError(ConnectorError):
    """Credentials or account settings are wrong (401/403): fail fast, do not retry."""


class RecordError(ConnectorError):
    """A record-level rejection (a 4xx other than 401/403/429): carried back to the caller,
    stored against that record, not retried within this run."""

    def __init__(self, status: int, message: str, body: Any = None) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.body = body


class NotFound(RecordError):
    """The record does not exist on the platform (any of the platform's spellings of it)."""


class RemoteUnavailable(ConnectorError):
    """Retries exhausted on 429/5xx/timeouts/connection errors; the run records it and the
    write stays pending for a later run."""


class PaginationError(ConnectorError):
    """The platform returned the same page token twice (a loop): fail loudly."""


class UnsafeUrl(ConnectorError):
    """A URL the platform handed us (a next-page link) points off the configured origin
    (another scheme, host or port): nothing is sent there, credentials least of all."""


class Stopped(ConnectorError):
    """The run was asked to stop: a request waiting for the rate budget or a retry backoff
    gave up instead of being sent. ``may_have_landed``: an earlier attempt of the same call
    may have taken effect (a write then stays in flight, to be settled by a lookup)."""

    def __init__(self, message: str = "stopped: the run was asked to stop", *, may_have_landed: bool = False) -> None:
        super().__init__(message)
        self.may_have_landed = may_have_landed


class Connector(ABC):
    """One platform account. Subclasses fill the hooks; the shared HTTP layer
    (``connectors/http.py``) owns retry, backoff, rate budget and redaction."""

    platform: str = ""
    capabilities: Capabilities
    #: The options and credentials this connector understands (see ``connectors/<platform>/settings.py``).
    options_model: ClassVar[type[ConnectorOptions]] = ConnectorOptions
    credentials_model: ClassVar[type[ConnectorCredentials]] = ConnectorCredentials

    @classmethod
    def parse_settings(cls, settings: ConnectionSettings) -> tuple[ConnectorOptions, ConnectorCredentials]:
        """``settings.options`` and ``settings.credentials`` validated by this connector's
        models. Raises ConfigurationError naming every bad key (never a secret's value)."""
        problems = settings_problems(cls.options_model, cls.credentials_model, settings.options, settings.credentials)
        if problems:
            raise ConfigurationError(
                "\n".join(
                    f"connections.{settings.name}.{p.key}: expected {p.expected}, found {p.found}" for p in problems
                )
            )
        options = cls.options_model.model_validate(dict(settings.options))
        return options, cls.credentials_model.model_validate(dict(settings.credentials))

    @abstractmethod
    def pull(self, cursor: JSON | None) -> AsyncIterator[Page]:
        """Yield pages of records changed since ``cursor`` (None: everything). A page's cursor
        never moves past what that page (and the ones before it) yielded."""

    async def get(self, remote_id: str) -> RawRecord | None:
        """Fetch one record, or None when it does not exist."""
        raise NotImplementedError(f"{self.platform}: get")

    async def lookup(self, keys: Mapping[str, str]) -> str | None:
        """Find a record's remote id by ``{"email": ..., "phone": ...}`` (normalized values),
        trying ``capabilities.lookup_keys`` in order. None when not found."""
        raise NotImplementedError(f"{self.platform}: lookup")

    async def create(self, payload: JSON) -> WriteResult:
        raise NotImplementedError(f"{self.platform}: create")

    async def update(self, remote_id: str, changes: JSON) -> WriteResult:
        """Send only ``changes`` (raw payload keys); the platform keeps the rest."""
        raise NotImplementedError(f"{self.platform}: update")

    def update_reads_current(self, changes: JSON) -> bool:
        """Whether :meth:`update` of ``changes`` reads the contact by id before its write (a
        connector whose ``update`` takes ``current=`` is then given the staged record where the
        cycle's pull vouches for it, saving that read)."""
        return False

    async def delete(self, remote_id: str) -> None:
        raise NotImplementedError(f"{self.platform}: delete")

    async def merge(self, survivor_id: str, loser_ids: list[str]) -> WriteResult:
        raise NotImplementedError(f"{self.platform}: merge")

    async def add_tags(self, remote_id: str, tags: list[str]) -> None:
        raise NotImplementedError(f"{self.platform}: add_tags")

    async def remove_tags(self, remote_id: str, tags: list[str]) -> None:
        raise NotImplementedError(f"{self.platform}: remove_tags")

    async def upsert(self, payload: JSON) -> WriteResult:
        raise NotImplementedError(f"{self.platform}: upsert")

    def bind_stop(  # noqa: B027 - optional hook
        self, stop: asyncio.Event | None, signal: threading.Event | None = None
    ) -> None:
        """Hand the connector the run's stop event: waits (rate budget, retry backoff) wake on
        it and no request starts once it is set (raising :class:`Stopped`). ``signal``: the
        thread-world event that feeds ``stop`` (set by a signal handler), checked too before
        each request, so none starts in the moment before ``stop`` follows it."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook: most connectors hold nothing else
        """Release the HTTP client."""
