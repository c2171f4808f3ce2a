"""A tampering httpx transport: it sits between a connector and its (emulated) platform and
rewrites what the platform answers, or fails the request before it gets there — the partial,
lying or failing platforms of issue 14, reproduced against the real emulators.

    tamper = Tamper(emulator.transport())
    tamper.rule(lying_empty_list)        # (request, response) -> response | None
    world.engine.transports["acquire"] = tamper

A rule is called for every request; it may return a replacement response (or raise, e.g.
``httpx.ConnectError``), or None to leave the answer alone. ``before`` rules run before the
request is forwarded (an unreachable host never reaches the emulator)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

Rule = Callable[[httpx.Request, httpx.Response], httpx.Response | None]
Before = Callable[[httpx.Request], httpx.Response | None]


class Tamper(httpx.AsyncBaseTransport):
    """Forwards to ``inner``, then lets its rules rewrite the answer."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.rules: list[Rule] = []
        self.befores: list[Before] = []
        self.requests: list[httpx.Request] = []

    def rule(self, fn: Rule) -> Tamper:
        self.rules.append(fn)
        return self

    def before(self, fn: Before) -> Tamper:
        self.befores.append(fn)
        return self

    def clear(self) -> None:
        self.rules.clear()
        self.befores.clear()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        for fn in self.befores:
            early = fn(request)
            if early is not None:
                return early
        response = await self.inner.handle_async_request(request)
        if not self.rules:
            return response
        await response.aread()
        for fn in self.rules:
            changed = fn(request, response)
            if changed is not None:
                response = changed
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def json_response(status: int, body: Any, request: httpx.Request) -> httpx.Response:
    return httpx.Response(
        status, content=json.dumps(body).encode(), headers={"content-type": "application/json"}, request=request
    )


def is_list(request: httpx.Request, path: str) -> bool:
    """A GET of a listing (not a search by key, not one record)."""
    return (
        request.method == "GET" and request.url.path.rstrip("/").endswith(path) and "search" not in request.url.params
    )


def rewrite_json(request: httpx.Request, response: httpx.Response, edit: Callable[[Any], Any]) -> httpx.Response:
    """The response with its JSON body passed through ``edit`` (which may change it in place)."""
    body = json.loads(response.content)
    new = edit(body)
    return json_response(response.status_code, body if new is None else new, request)


# -- ready-made rules ---------------------------------------------------------------------------


def acquire_lists_nothing(request: httpx.Request, response: httpx.Response) -> httpx.Response | None:
    """Acquire answers 200 ``{"list": [], "filteredCount": 0}`` to every listing."""
    if not is_list(request, "/crm/objects/contact"):
        return None

    def edit(body: Any) -> None:
        body["data"]["list"] = []
        body["data"].setdefault("counts", {})["filteredCount"] = 0

    return rewrite_json(request, response, edit)


def acquire_lists_only(n: int) -> Rule:
    """Acquire lists only its first ``n`` contacts, with a count that matches (a page lost and
    the count lying with it)."""

    def rule(request: httpx.Request, response: httpx.Response) -> httpx.Response | None:
        if not is_list(request, "/crm/objects/contact"):
            return None
        page = max(int(request.url.params.get("page", "1")), 1)  # page 0 is page 1 (the emulator's default)
        size = int(request.url.params.get("limit", "100"))

        def edit(body: Any) -> None:
            start = (page - 1) * size
            body["data"]["list"] = body["data"]["list"][: max(0, n - start)]
            body["data"].setdefault("counts", {})["filteredCount"] = n

        return rewrite_json(request, response, edit)

    return rule


def comm100_lists_nothing(request: httpx.Request, response: httpx.Response) -> httpx.Response | None:
    """Comm100 answers 200 with no contacts and ``total: 0``."""
    if not is_list(request, "/global/contacts") or "contactIdentityValue" in request.url.params:
        return None

    def edit(body: Any) -> None:
        body["contacts"] = []
        body["total"] = 0
        body["nextPage"] = None

    return rewrite_json(request, response, edit)


def status_for_all(status: int, message: str = "tampered") -> Before:
    """Every request answered ``status`` before it reaches the platform (e.g. 401: a wrong token)."""

    def before(request: httpx.Request) -> httpx.Response | None:
        return json_response(status, {"message": message, "statusCode": status}, request)

    return before


def unreachable(request: httpx.Request) -> httpx.Response | None:
    """The host cannot be reached at all."""
    raise httpx.ConnectError("connection refused (tampered)", request=request)


def writes_fail(status: int = 503) -> Before:
    """Every write (POST/PUT/PATCH/DELETE that is not a search) answered ``status``."""

    def before(request: httpx.Request) -> httpx.Response | None:
        if request.method in ("POST", "PUT", "PATCH", "DELETE") and "search" not in request.url.path:
            return json_response(status, {"message": "tampered outage"}, request)
        return None

    return before
