"""A transport that rewrites an emulator's list responses, for the C/D fault tests (see also tamper.py on main, a rule-based one): the emulator
stays the source of truth, the connector sees what a hostile or broken platform would send."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

# body (parsed JSON) -> new body as JSON text (may hold NaN, NUL escapes, anything)
Rewrite = Callable[[Any], str]


class Tamper(httpx.AsyncBaseTransport):
    """Forwards to ``inner``; a successful response to a request whose method and path match
    (``POST /contacts/search``, ``GET /global/contacts``...) has its body replaced by
    ``rewrite(body)`` while ``active``."""

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        method: str,
        path: str,
        rewrite: Rewrite,
        when: Callable[[httpx.Request], bool] | None = None,
    ) -> None:
        self.inner = inner
        self.when = when
        self.method = method
        self.path = path.rstrip("/")
        self.rewrite = rewrite
        self.active = True
        self.hits = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if not (
            self.active
            and request.method == self.method
            and request.url.path.rstrip("/").endswith(self.path)
            and response.status_code == 200
            and (self.when is None or self.when(request))
        ):
            return response
        await response.aread()
        self.hits += 1
        content = self.rewrite(json.loads(response.content)).encode("utf-8")
        headers = [(k, v) for k, v in response.headers.items() if k.lower() not in ("content-length",)]
        return httpx.Response(200, headers=headers, content=content)


#: The listing requests of each platform's pull (not its lookups, which use the same paths).
LISTINGS: dict[str, tuple[str, str, Callable[[httpx.Request], bool]]] = {
    "acquire": ("GET", "/crm/objects/contact", lambda r: "search" not in r.url.params),
    "ghl": ("POST", "/contacts/search", lambda r: True),
    "comm100": (
        "GET",
        "/global/contacts",
        lambda r: "contactIdentityValue" not in r.url.params and r.url.params.get("sortBy") != "createTime",
    ),
}


def install(world: Any, name: str, rewrite: Rewrite) -> Tamper:
    """Put a :class:`Tamper` of the pull's listing in front of ``world``'s emulator ``name``
    (the engine builds its connectors from ``world.engine.transports`` at each run)."""
    method, path, when = LISTINGS[name]
    tamper = Tamper(world.emulators[name].transport(), method, path, rewrite, when)
    world.engine.transports[name] = tamper
    return tamper
