"""``contactsync check``: connect to each platform with the configured credentials, before a
run finds out. Per connection, one harmless read (a lookup of a contact that does not exist,
sent once, no retries) tells:

* **reachability** — did the platform answer at all (DNS, TCP, TLS, timeout);
* **authentication** — did it accept the credentials (401/403: "authentication failed");
* **rate limit** — the rate-limit headers of its answer (``X-RateLimit-*``, ``RateLimit-*``,
  ``Retry-After``), and the client-side budget in force;
* **clock skew** — the platform's ``Date`` header against the local clock (cursors and the
  "newest wins" rule lean on timestamps; a skew of minutes deserves a look).

Nothing is written anywhere, nor to the store."""

from __future__ import annotations

import asyncio
import email.utils
import json
import re
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime

import httpx
from rich.console import Console

from connectors.base import ConfigurationError, ConnectorError, NotFound, RecordError, RemoteUnavailable
from connectors.registry import connector_class
from sync.commands.common import EXIT_PLATFORM, CommandError, setup_logging
from sync.commands.tables import Column, fit_table
from sync.config import Config

_RATE_HEADER = re.compile(r"(rate-?limit|retry-after)", re.I)
#: A skew beyond this is reported as a problem (cursor overlap windows are about this size).
SKEW_WARN_S = 30.0
_PROBE_KEYS = {"email": "contactsync-check@example.invalid", "phone": "+15005550006"}


@dataclass
class CheckResult:
    """What ``check`` found for one connection."""

    connection: str
    platform: str
    base_url: str
    reachable: bool = False
    authenticated: bool | None = None  # None: not known (unreachable)
    status: int | None = None
    latency_ms: float | None = None
    rate_limit_headers: dict[str, str] = field(default_factory=dict)
    rate_budget: str | None = None
    clock_skew_s: float | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        skew_ok = self.clock_skew_s is None or abs(self.clock_skew_s) <= SKEW_WARN_S
        return self.reachable and self.authenticated is True and skew_ok

    def verdict(self) -> str:
        if not self.reachable:
            return "unreachable"
        if self.authenticated is False:
            return "authentication failed"
        if self.clock_skew_s is not None and abs(self.clock_skew_s) > SKEW_WARN_S:
            return "clock skew"
        return "ok"


class _Recording(httpx.AsyncBaseTransport):
    """Wraps the transport and keeps the last response's status and headers."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.status: int | None = None
        self.headers: httpx.Headers | None = None
        self.sent_at: float | None = None
        self.answered_at: float | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent_at = time.time()
        response = await self.inner.handle_async_request(request)
        self.answered_at = time.time()
        self.status, self.headers = response.status_code, response.headers
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def _skew(headers: httpx.Headers, sent: float, answered: float) -> float | None:
    value = headers.get("date")
    if not value:
        return None
    try:
        server = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if server.tzinfo is None:
        server = server.replace(tzinfo=UTC)
    # The Date header has one-second resolution: compare with the middle of the exchange.
    local = datetime.fromtimestamp((sent + answered) / 2, UTC)
    return round((server - local).total_seconds(), 1)


async def check_one(
    config: Config, name: str, *, transport: httpx.AsyncBaseTransport | None = None, timeout_s: float = 10.0
) -> CheckResult:
    """Check one connection (``transport``: tests pass an emulator's)."""
    conn = config.connections[name]
    settings = replace(config.connection_settings(name), max_retries=0, timeout_s=min(timeout_s, 30.0))
    result = CheckResult(name, conn.platform, str(conn.base_url))
    recording = _Recording(transport or httpx.AsyncHTTPTransport())
    try:
        connector = connector_class(conn.platform)(settings, recording)
    except ConfigurationError as exc:
        result.problem = f"configuration: {exc}"
        return result
    budget = connector.capabilities.rate_limit
    limit = settings.rate_limit or budget
    if limit is not None:
        result.rate_budget = f"{limit.requests} requests per {limit.per_seconds:g}s (client-side budget)"
    started = time.monotonic()
    try:
        await connector.lookup(_PROBE_KEYS)
    except ConfigurationError as exc:
        result.authenticated = False
        result.problem = str(exc)
    except (NotFound, RecordError):
        result.authenticated = True  # it answered about the contact: the credentials passed
    except RemoteUnavailable as exc:
        result.problem = str(exc)
    except (ConnectorError, NotImplementedError, ValueError) as exc:
        result.problem = f"{type(exc).__name__}: {exc}"
    except (TimeoutError, httpx.HTTPError, OSError) as exc:
        result.problem = f"{type(exc).__name__}: {exc}"
    else:
        result.authenticated = True
    finally:
        await connector.aclose()
    if recording.status is not None:
        result.reachable = True
        result.status = recording.status
        result.latency_ms = round((time.monotonic() - started) * 1000, 1)
        if recording.status in (401, 403):
            result.authenticated = False
        elif result.authenticated is None and recording.status < 500:
            result.authenticated = True
        headers = recording.headers or httpx.Headers()
        result.rate_limit_headers = {k: v for k, v in headers.items() if _RATE_HEADER.search(k)}
        if recording.sent_at and recording.answered_at:
            result.clock_skew_s = _skew(headers, recording.sent_at, recording.answered_at)
    return result


async def check_all(
    config: Config, names: list[str], *, transports: dict[str, httpx.AsyncBaseTransport] | None = None
) -> list[CheckResult]:
    """Check ``names`` concurrently."""
    transports = transports or {}
    return list(await asyncio.gather(*(check_one(config, n, transport=transports.get(n)) for n in names)))


def check(
    config: Config,
    *,
    connections: list[str] | None = None,
    as_json: bool = False,
    console: Console | None = None,
    transports: dict[str, httpx.AsyncBaseTransport] | None = None,
) -> list[CheckResult]:
    """Check every enabled connection (or ``connections``) and print the findings; raises
    :class:`CommandError` (exit 7) when any connection is unreachable, refuses the credentials
    or has a clock off by more than :data:`SKEW_WARN_S`."""
    console = console or Console()
    setup_logging(config)
    names = connections or config.enabled_connections()
    unknown = [n for n in names if n not in config.connections]
    if unknown:
        raise CommandError(f"unknown connection {unknown[0]!r}; known: {', '.join(config.connections)}", 2)
    results = asyncio.run(check_all(config, names, transports=transports))
    if as_json:
        console.print_json(json.dumps([{**asdict(r), "verdict": r.verdict()} for r in results], default=str))
    else:
        _print(results, console)
    bad = [r for r in results if not r.ok]
    if bad:
        raise CommandError(
            f"{len(bad)} of {len(results)} connections failed the check ("
            + ", ".join(f"{r.connection}: {r.verdict()}" for r in bad)
            + "). An unreachable platform: check base_url, DNS and the network (a proxy or firewall) from "
            "this machine. Authentication failed: the credentials in the config (or the environment "
            "variables and files they name) are wrong, expired or for another account - replace them. "
            "Clock skew: synchronize this machine's clock (NTP).",
            EXIT_PLATFORM,
        )
    return results


def _print(results: list[CheckResult], console: Console) -> None:
    columns = [
        Column("connection", keep=True, wrap=True, min_wrap=10),
        Column("verdict", keep=True, wrap=True, min_wrap=12),
        Column("HTTP", justify="right", rank=2),
        Column("ms", justify="right", rank=1),
        Column("clock skew", justify="right", rank=3),
    ]
    rows = [
        [
            f"{r.connection} ({r.platform})",
            r.verdict(),
            str(r.status) if r.status is not None else "-",
            f"{r.latency_ms:.0f}" if r.latency_ms is not None else "-",
            f"{r.clock_skew_s:+.1f}s" if r.clock_skew_s is not None else "no Date",
        ]
        for r in results
    ]
    console.print(fit_table(columns, rows, console=console))
    for r in results:
        console.print(f"  {r.connection}: {r.base_url}", highlight=False)
        if r.rate_limit_headers:
            shown = ", ".join(f"{k}: {v}" for k, v in sorted(r.rate_limit_headers.items()))
            console.print(f"    rate-limit headers: {shown}", highlight=False)
        elif r.reachable:
            console.print("    rate-limit headers: none in the answer", highlight=False)
        if r.rate_budget:
            console.print(f"    rate budget: {r.rate_budget}", highlight=False)
        if r.problem:
            console.print(f"    {r.verdict()}: {r.problem}", highlight=False)


__all__: list[str] = ["CheckResult", "check", "check_all", "check_one"]
