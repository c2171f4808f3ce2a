"""The daemon's HTTP side: the listener (uvicorn on its own thread), the application
(``build_app``: webhook receivers plus extra routes), the webhook counters, and the inbox drain
that turns stored events into focused cycles.

- ``build_app(store, config, *, extra_routes=(), counters=None, on_event=None) -> Starlette``
- ``Listener(app, host, port).start() / .stop()``
- ``WebhookCounters``: ``snapshot() -> {(event type, verdict): n}``, ``total(verdict)``
- ``InboxDrain(runner, store, config, stop=...).start() / .notify() / .stop()``
- ``http_services(...)``: all of it as the daemon starts it (``contactsync run``).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from starlette.routing import BaseRoute

from sync.config import Config
from sync.cycle import CycleRunner
from sync.serve.app import build_app
from sync.serve.counters import VERDICTS, WebhookCounters
from sync.serve.drain import InboxDrain
from sync.serve.listener import Listener
from sync.store import Store

__all__ = [
    "VERDICTS",
    "HttpServices",
    "InboxDrain",
    "Listener",
    "Service",
    "WebhookCounters",
    "build_app",
    "http_services",
]


class Service(Protocol):
    """Something the daemon starts before its scheduler and stops with it."""

    def start(self) -> object: ...

    def stop(self, timeout: float = ...) -> None: ...


@dataclass
class HttpServices:
    """What :func:`http_services` built: start them in order, stop them in reverse."""

    services: list[Service] = field(default_factory=list)
    counters: WebhookCounters = field(default_factory=WebhookCounters)
    listener: Listener | None = None
    drain: InboxDrain | None = None


def http_services(
    store: Store,
    config: Config,
    runner: CycleRunner,
    stop: threading.Event,
    *,
    extra_routes: Sequence[BaseRoute] = (),
    counters: WebhookCounters | None = None,
) -> HttpServices:
    """The listener (when ``http.enabled``) with the webhook routes and ``extra_routes``, and
    the inbox drain (when GoHighLevel webhooks are enabled: it also drains events stored by
    another daemon's listener on a shared store)."""
    out = HttpServices(counters=counters or WebhookCounters())
    if config.webhooks.gohighlevel.enabled and config.http.enabled:
        out.drain = InboxDrain(runner, store, config, stop=stop)
        out.services.append(out.drain)
    if config.http.enabled:
        app = build_app(
            store,
            config,
            extra_routes=extra_routes,
            counters=out.counters,
            on_event=out.drain.notify if out.drain is not None else None,
        )
        out.listener = Listener(app, config.http.host, config.http.port)
        out.services.append(out.listener)
    return out
