"""The daemon's HTTP application: the webhook receivers plus whatever else is mounted beside
them (the operator's page, ``/metrics``, ``/healthz``: ``extra_routes``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from starlette.applications import Starlette
from starlette.routing import BaseRoute, Route

from sync.config import Config
from sync.serve.counters import WebhookCounters
from sync.serve.gohighlevel import PATH as GOHIGHLEVEL_PATH
from sync.serve.gohighlevel import GoHighLevelReceiver
from sync.store import Store


def build_app(
    store: Store,
    config: Config,
    *,
    extra_routes: Sequence[BaseRoute] = (),
    counters: WebhookCounters | None = None,
    on_event: Callable[[], None] | None = None,
) -> Starlette:
    """A Starlette app with ``POST /webhooks/gohighlevel`` (when ``webhooks.gohighlevel.enabled``)
    and ``extra_routes`` (Route or Mount objects, e.g. ``web_routes(...)``, ``metrics_routes(...)``).
    ``counters`` (shared with ``/metrics``) counts each delivery's verdict; it is also
    ``app.state.webhook_counters``. ``on_event`` is called after each stored event (it wakes the
    inbox drain)."""
    counters = counters if counters is not None else WebhookCounters()
    routes: list[BaseRoute] = []
    if config.webhooks.gohighlevel.enabled:
        receiver = GoHighLevelReceiver(store, config, counters, on_event=on_event)
        routes.append(Route(GOHIGHLEVEL_PATH, receiver.handle, methods=["POST"], name="webhooks_gohighlevel"))
    routes.extend(extra_routes)
    app = Starlette(routes=routes)
    app.state.webhook_counters = counters
    app.state.store = store
    return app
