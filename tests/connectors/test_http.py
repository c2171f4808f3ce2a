"""The shared HTTP layer: error-policy table, retries and Retry-After, fail-fast errors,
non-idempotent writes, timeouts over ASGI, rate budget, redaction, paging loops.

A small Starlette app stands in for a platform; requests go over ``httpx.ASGITransport``.
"""

from __future__ import annotations

import asyncio
import email.utils
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import structlog
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connectors.base import (
    Capabilities,
    ConfigurationError,
    ConnectionSettings,
    ConnectorCredentials,
    NotFound,
    PaginationError,
    PullMode,
    RateLimit,
    RawRecord,
    RecordError,
    RemoteUnavailable,
)
from connectors.emulation import SlidingWindow
from connectors.http import (
    Action,
    AmbiguousWrite,
    FetchedPage,
    HttpConnector,
    Paginator,
    RateBudget,
    RateObservation,
    Redactor,
    classify_exception,
    classify_status,
    paginate,
    parse_rate_headers,
    parse_retry_after,
    redact_url,
)

from helpers import run

SECRET = "s3cr3t-token-value"


class Server:
    """A scripted server: ``script`` is a list of callables (request -> Response or raise),
    consumed one per request; the last one repeats."""

    def __init__(self, script: list[Callable[[Request], Any]]) -> None:
        self.script = script
        self.calls: list[Request] = []
        self.window: SlidingWindow | None = None
        self.rejected = 0
        self.app = Starlette(routes=[Route("/{path:path}", self.handle, methods=["GET", "POST", "PUT", "DELETE"])])

    async def handle(self, request: Request) -> Response:
        self.calls.append(request)
        if self.window is not None:
            allowed, remaining, _ = self.window.hit()
            if not allowed:
                self.rejected += 1
                return JSONResponse({"message": "slow down"}, status_code=429)
        step = self.script[min(len(self.calls) - 1, len(self.script) - 1)]
        result = step(request)
        if asyncio.iscoroutine(result):
            result = await result
        return result


def ok(body: Any = None, status: int = 200, headers: dict[str, str] | None = None) -> Callable[[Request], Response]:
    return lambda _r: JSONResponse(body if body is not None else {"ok": True}, status_code=status, headers=headers)


def fail(status: int, body: Any = None, headers: dict[str, str] | None = None) -> Callable[[Request], Response]:
    return lambda _r: JSONResponse(
        body if body is not None else {"message": f"status {status}"}, status_code=status, headers=headers
    )


def raise_(exc: Exception) -> Callable[[Request], Response]:
    def step(_r: Request) -> Response:
        raise exc

    return step


class ToyCredentials(ConnectorCredentials):
    token: SecretStr


class Toy(HttpConnector):
    platform = "toy"
    credentials_model = ToyCredentials
    capabilities = Capabilities(PullMode.FULL_SCAN)

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret('token')}"}

    def auth_params(self) -> dict[str, str]:
        return {"apiKey": self.secret("token")}

    def classify(self, response: httpx.Response) -> Action | None:
        if response.status_code == 400 and "RECORD_NOT_FOUND" in response.text:
            return Action.NOT_FOUND
        return None

    async def pull(self, cursor: dict[str, Any] | None):  # type: ignore[override]
        raise NotImplementedError


def make(server: Server, **settings: Any) -> Toy:
    values: dict[str, Any] = {
        "name": "toy",
        "base_url": "http://toy.test",
        "credentials": {"token": SecretStr(SECRET)},
        "options": {"backoff_base_s": 0.001, "backoff_cap_s": 0.01},
        "timeout_s": 5.0,
        "max_retries": 3,
    }
    values.update(settings)
    return Toy(ConnectionSettings(**values), httpx.ASGITransport(app=server.app))


# --------------------------------------------------------------------------- the table


@pytest.mark.parametrize(
    ("status", "action"),
    [
        (200, Action.SUCCESS),
        (201, Action.SUCCESS),
        (204, Action.SUCCESS),
        (401, Action.FAIL_CONFIG),
        (403, Action.FAIL_CONFIG),
        (404, Action.NOT_FOUND),
        (400, Action.RECORD_ERROR),
        (409, Action.RECORD_ERROR),
        (422, Action.RECORD_ERROR),
        (429, Action.RATE_LIMITED),
        (500, Action.RETRY),
        (502, Action.RETRY),
        (503, Action.RETRY),
        (504, Action.RETRY),
        (599, Action.RETRY),
    ],
)
def test_status_policy(status: int, action: Action) -> None:
    assert classify_status(status) is action


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ReadError("x"),
        httpx.RemoteProtocolError("x"),
        httpx.ConnectError("x"),
        httpx.ReadTimeout("x"),
        httpx.WriteError("x"),
        TimeoutError(),
    ],
)
def test_transport_failures_are_retried(exc: Exception) -> None:
    assert classify_exception(exc) is Action.RETRY


def test_other_exceptions_are_not_classified() -> None:
    assert classify_exception(ValueError("bug")) is None


def test_retry_after_seconds_decimal_and_http_date() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("0.25") == 0.25
    date = email.utils.format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(date, now=now) == 30.0
    assert parse_retry_after(email.utils.format_datetime(now - timedelta(seconds=5), usegmt=True), now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


# --------------------------------------------------------------------------- the loop


def test_retries_transient_failures_then_succeeds() -> None:
    server = Server([fail(503), fail(502), raise_(httpx.ReadError("dropped")), ok({"n": 1})])
    toy = make(server)
    assert run(toy.http.json("GET", "/things")) == {"n": 1}
    assert len(server.calls) == 4
    assert toy.stats.retries == 3 and toy.stats.http_5xx == 2 and toy.stats.connection_errors == 1


def test_honours_retry_after() -> None:
    server = Server([fail(429, headers={"Retry-After": "0.05"}), ok()])
    toy = make(server)
    with structlog.testing.capture_logs() as logs:
        run(toy.http.request("GET", "/things"))
    retries = [e for e in logs if e["event"] == "http.retry"]
    assert [e["sleep_s"] for e in retries] == [0.05]
    assert toy.stats.http_429 == 1


def test_too_long_retry_after_gives_up() -> None:
    server = Server([fail(429, headers={"Retry-After": "86400"})])
    with pytest.raises(RemoteUnavailable, match="Retry-After"):
        run(make(server).http.request("GET", "/things"))
    assert len(server.calls) == 1


def test_retries_exhausted_is_remote_unavailable() -> None:
    server = Server([fail(500)])
    with pytest.raises(RemoteUnavailable, match="after 4 attempts"):
        run(make(server, max_retries=3).http.request("GET", "/things"))
    assert len(server.calls) == 4


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failures_fail_fast(status: int) -> None:
    server = Server([fail(status, {"message": f"bad token {SECRET}"})])
    with pytest.raises(ConfigurationError) as info:
        run(make(server).http.request("GET", "/things"))
    assert len(server.calls) == 1
    assert SECRET not in str(info.value)


def test_record_errors_are_carried_back_not_retried() -> None:
    server = Server([fail(422, {"message": ["email must be an email"], "echo": SECRET})])
    with pytest.raises(RecordError) as info:
        run(make(server).http.request("POST", "/things", json_body={"email": "x"}))
    assert info.value.status == 422 and not isinstance(info.value, NotFound)
    assert "email must be an email" in str(info.value)
    assert SECRET not in str(info.value.body)
    assert len(server.calls) == 1


def test_not_found_spellings() -> None:
    server = Server([fail(404), fail(400, {"type": "ERROR_RECORD_NOT_FOUND"})])
    toy = make(server)
    with pytest.raises(NotFound):
        run(toy.http.request("GET", "/things/1"))
    with pytest.raises(NotFound):
        run(toy.http.request("GET", "/things/2"))


def test_allowed_status_is_returned() -> None:
    server = Server([fail(404)])
    assert run(make(server).http.request("GET", "/x", allow=(404,))).status_code == 404


def test_timeout_is_enforced_over_asgi() -> None:
    async def slow(_r: Request) -> Response:
        await asyncio.sleep(5)
        return JSONResponse({})

    server = Server([slow])
    toy = make(server, timeout_s=0.05, max_retries=1)
    with pytest.raises(RemoteUnavailable):
        run(toy.http.request("GET", "/slow"))
    assert toy.stats.timeouts == 2


def test_secrets_never_reach_logs_or_errors() -> None:
    server = Server([fail(500, {"message": f"upstream said {SECRET}"})])
    toy = make(server, max_retries=2)
    with structlog.testing.capture_logs() as logs, pytest.raises(RemoteUnavailable) as info:
        run(toy.http.request("GET", "/things", params={"q": "a"}))
    assert SECRET not in str(info.value)
    assert logs and all(SECRET not in repr(e) for e in logs)
    # The credential really was sent (as a query parameter and a header).
    assert server.calls[0].query_params["apiKey"] == SECRET


def test_redaction_helpers() -> None:
    assert redact_url(f"https://u:p@x.test/a?apiKey={SECRET}&page=2") == "https://x.test/a?apiKey=%2A%2A%2A&page=2"
    redact = Redactor([SECRET, "ab"])
    assert redact(f"token {SECRET} and ab") == "token *** and ab"


# --------------------------------------------------------------------------- non-idempotent writes


def test_ambiguous_create_is_settled_by_lookup_not_repeated() -> None:
    server = Server([fail(502), ok({"id": "second"})])
    toy = make(server)
    landed: list[str] = []

    async def send() -> str:
        response = await toy.http.request("POST", "/things", json_body={"a": 1}, idempotent=False)
        return response.json()["id"]

    async def recheck() -> str | None:
        landed.append("checked")
        return "first"  # the lookup finds that the first attempt landed

    assert run(toy.http.write_once(send, recheck)) == "first"
    assert len(server.calls) == 1 and landed == ["checked"]


def test_ambiguous_create_not_landed_is_sent_again() -> None:
    server = Server([raise_(httpx.ReadError("dropped")), ok({"id": "new"})])
    toy = make(server)

    async def send() -> str:
        return (await toy.http.request("POST", "/things", idempotent=False)).json()["id"]

    async def recheck() -> str | None:
        return None

    assert run(toy.http.write_once(send, recheck)) == "new"
    assert len(server.calls) == 2 and toy.stats.rechecks == 1


def test_non_idempotent_request_retries_429_itself() -> None:
    server = Server([fail(429), ok({"id": "x"})])
    assert run(make(server).http.request("POST", "/things", idempotent=False)).json() == {"id": "x"}


def test_non_idempotent_request_raises_ambiguous_on_5xx() -> None:
    server = Server([fail(500)])
    with pytest.raises(AmbiguousWrite):
        run(make(server).http.request("POST", "/things", idempotent=False))
    assert len(server.calls) == 1


# --------------------------------------------------------------------------- rate budget


def test_known_limit_with_concurrency_gives_no_429() -> None:
    server = Server([ok()])
    server.window = SlidingWindow(RateLimit(5, 0.05))
    toy = make(server, rate_limit=RateLimit(5, 0.05), max_concurrency=6)

    async def body() -> None:
        await asyncio.gather(*(toy.http.request("GET", f"/t/{i}") for i in range(40)))

    run(body())
    assert len(server.calls) == 40 and server.rejected == 0
    assert toy.stats.http_429 == 0


def test_a_request_held_back_longer_than_the_window_still_counts_until_it_is_answered() -> None:
    """On a loaded machine a request can reach the server a whole window after it was allowed
    out: its slot must not expire while it is in flight, or the next ones overrun the limit."""

    class SlowToArrive(Server):
        async def handle(self, request: Request) -> Response:
            if request.url.path == "/t/0":
                await asyncio.sleep(0.06)  # arrives after a whole window, among later ones
            return await super().handle(request)

    server = SlowToArrive([ok()])
    server.window = SlidingWindow(RateLimit(2, 0.05))
    toy = make(server, rate_limit=RateLimit(2, 0.05), max_concurrency=4)

    async def body() -> None:
        await asyncio.gather(*(toy.http.request("GET", f"/t/{i}") for i in range(6)))

    run(body())
    assert server.rejected == 0 and toy.stats.http_429 == 0 and len(server.calls) == 6


def test_budget_learns_limit_and_usage_from_headers() -> None:
    budget = RateBudget(None)
    budget.observe(RateObservation(remaining=1, limit=10, interval_s=10.0))
    assert budget.limit == RateLimit(10, 10.0)
    # The server counted 9 requests we never sent (another client): they fill our window.
    assert len(budget._slots) == 9

    async def body() -> None:
        await budget.acquire()  # the tenth fits

    run(body())
    assert len(budget._slots) == 10


def test_parse_rate_headers() -> None:
    headers = httpx.Headers(
        {"X-RateLimit-Max": "100", "X-RateLimit-Remaining": "42", "X-RateLimit-Interval-Milliseconds": "10000"}
    )
    assert parse_rate_headers(headers) == RateObservation(42, 100, 10.0)
    assert parse_rate_headers(httpx.Headers({})) is None


# --------------------------------------------------------------------------- paging


def test_paginator_repeated_token() -> None:
    p = Paginator("t", max_repeats=2)
    assert p.accept("a") and p.accept("b")
    assert not p.accept("a")
    assert not p.accept("b")
    with pytest.raises(PaginationError):
        p.accept("a")


def _page(ids: list[str], next_token: Any) -> FetchedPage:
    return FetchedPage([RawRecord(i, {"id": i}) for i in ids], next_token)


@pytest.mark.parametrize("read_ahead", [False, True, 3])
def test_paginate_refetches_a_repeated_page_and_drops_shifted_duplicates(read_ahead: bool | int) -> None:
    # Reading ahead (one page, or three with predicted tokens) must yield the same records as
    # fetching page by page.
    served = {
        None: [_page(["1", "2"], 1)],
        1: [_page(["1", "2"], 1), _page(["2", "3", "4"], 2)],  # repeat, then shifted back
        2: [_page(["5"], None)],
    }

    async def fetch(token: Any) -> FetchedPage:
        return served[token].pop(0)

    def successor(token: Any) -> Any:
        return token + 1 if token < 2 else None

    async def body() -> list[str]:
        return [
            r.remote_id
            async for _, page in paginate(fetch, name="t", read_ahead=read_ahead, successor=successor)
            for r in page.records
        ]

    assert run(body()) == ["1", "2", "3", "4", "5"]


def test_paginate_keeps_several_predicted_pages_in_flight_in_order() -> None:
    # Page numbers: pages 2..4 are requested before page 1's answer is used, they arrive out of
    # order, and are still yielded in order; no page past the predicted end is requested.
    requested: list[int] = []
    in_flight: list[int] = []
    most = [0]

    async def fetch(token: Any) -> FetchedPage:
        n = int(token or 1)
        requested.append(n)
        in_flight.append(n)
        most[0] = max(most[0], len(in_flight))
        await asyncio.sleep(0.01 * (5 - n))  # later pages answer sooner
        in_flight.remove(n)
        return _page([f"r{n}"], n + 1 if n < 5 else None)

    async def body() -> list[str]:
        pages = paginate(fetch, name="t", start=1, read_ahead=3, successor=lambda t: int(t) + 1 if int(t) < 5 else None)
        return [r.remote_id async for _, page in pages for r in page.records]

    assert run(body()) == ["r1", "r2", "r3", "r4", "r5"]
    assert sorted(requested) == [1, 2, 3, 4, 5]  # each page once, nothing past page 5
    assert most[0] == 3


def test_paginate_reads_the_next_page_while_the_caller_works_and_cancels_it_when_the_caller_stops() -> None:
    events: list[str] = []
    cancelled: list[Any] = []

    async def fetch(token: Any) -> FetchedPage:
        n = 0 if token is None else int(token)
        events.append(f"fetch {n}")
        try:
            await asyncio.sleep(0.05)  # longer than the caller's staging: the last one is still under way
        except asyncio.CancelledError:
            cancelled.append(n)
            raise
        return _page([str(n)], n + 1)  # endless: the caller decides when to stop

    async def body() -> None:
        pages = paginate(fetch, name="t", read_ahead=True)
        async for token, _page in pages:
            events.append(f"stage {token or 0}")
            await asyncio.sleep(0.02)  # staging: the next request is under way meanwhile
            events.append(f"staged {token or 0}")
            if token == 2:
                break
        await pages.aclose()
        await asyncio.sleep(0.05)

    run(body())
    assert events == [
        "fetch 0",
        "stage 0",
        "fetch 1",
        "staged 0",
        "stage 1",
        "fetch 2",
        "staged 1",
        "stage 2",
        "fetch 3",
        "staged 2",
    ]
    assert cancelled == [3]


def test_paginate_fails_loudly_on_a_loop() -> None:
    async def fetch(token: Any) -> FetchedPage:
        return _page([f"r{token}"], "same")

    async def body() -> None:
        async for _ in paginate(fetch, name="loop"):
            pass

    with pytest.raises(PaginationError, match="loop"):
        run(body())


def test_missing_credentials_are_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="token"):
        Toy(ConnectionSettings(name="toy", base_url="http://toy.test", credentials={}))


def test_retried_delete_finding_nothing_means_it_landed() -> None:
    server = Server([raise_(httpx.ReadError("response lost")), fail(404)])
    response = run(make(server).http.request("DELETE", "/things/1"))
    assert response.status_code == 404 and len(server.calls) == 2


def test_first_delete_finding_nothing_is_not_found() -> None:
    server = Server([fail(429), fail(404)])  # a 429 was never applied: the 404 is real
    with pytest.raises(NotFound):
        run(make(server).http.request("DELETE", "/things/1"))


def test_a_non_boolean_asyncio_backend_option_is_a_clear_configuration_error() -> None:
    settings = ConnectionSettings(
        name="toy",
        base_url="https://toy.test",
        credentials={"token": SecretStr(SECRET)},
        options={"asyncio_backend": "no"},
    )
    with pytest.raises(
        ConfigurationError, match=r"connections\.toy\.options\.asyncio_backend: expected true or false, found 'no'"
    ) as err:
        Toy(settings)
    assert SECRET not in str(err.value)


def test_observers_see_every_response_and_every_rate_wait() -> None:
    from connectors.http import HttpObserver, add_http_observer, remove_http_observer

    seen: list[tuple[str, str]] = []
    waits: list[float] = []

    class Watch(HttpObserver):
        def on_response(self, connection: str, platform: str, status: str) -> None:
            seen.append((connection, status))

        def on_rate_wait(self, connection: str, platform: str, seconds: float) -> None:
            waits.append(seconds)

    watch = Watch()
    add_http_observer(watch)
    add_http_observer(watch)  # idempotent
    try:
        server = Server([fail(429, headers={"Retry-After": "0.01"}), ok(), ok(), ok()])
        toy = make(server, rate_limit=RateLimit(1, 0.05))
        for _ in range(3):
            run(toy.http.request("GET", "/x"))
        run(toy.aclose())
    finally:
        remove_http_observer(watch)
    assert seen == [("toy", "429"), ("toy", "200"), ("toy", "200"), ("toy", "200")]
    assert len(waits) >= 3 and sum(waits) > 0.05  # the 429's Retry-After and the budget's waits
