"""``contactsync run``: the daemon, one scheduled job per sync profile."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Sequence

from starlette.routing import BaseRoute

from sync.commands.common import open_store, setup_logging
from sync.config import Config
from sync.cycle import CycleRunner
from sync.daemon import Daemon, ScheduledProfile
from sync.serve import WebhookCounters, http_services
from sync.store import Store


def scheduled_profiles(config: Config, only: str | None = None) -> list[ScheduledProfile]:
    """The config's profiles as daemon schedules."""
    out = []
    for name, p in config.effective_profiles().items():
        if only is not None and name != only:
            continue
        out.append(
            ScheduledProfile(
                name=name,
                interval_seconds=p.schedule.interval_seconds,
                cron=p.schedule.cron,
                misfire_grace_seconds=p.misfire_grace_seconds,
            )
        )
    return out


RoutesFactory = Callable[[Store, WebhookCounters], Sequence[BaseRoute]]


def run_daemon(
    config: Config,
    *,
    profile: str | None = None,
    extra_routes: Sequence[BaseRoute] | RoutesFactory = (),
) -> int:
    """Run until SIGTERM/SIGINT; every cycle takes its profile's lock, so several daemons can
    share one PostgreSQL store. With ``http.enabled`` the daemon also listens (webhooks, and
    ``extra_routes`` mounted beside them) and drains the webhook inbox into focused cycles.
    ``extra_routes`` may be a factory called with the daemon's store and webhook counters
    (e.g. ``lambda store, counters: [*web_routes(store, config), *metrics_routes(store, counters)]``)."""
    setup_logging(config)
    store = open_store(config)
    engine = CycleRunner(config, store)
    try:

        def run_profile(name: str, stop: threading.Event) -> None:
            engine.run(name, stop=stop)

        daemon = Daemon(scheduled_profiles(config, profile), run_profile)
        try:
            counters = WebhookCounters()
            routes = extra_routes(store, counters) if callable(extra_routes) else extra_routes
            http = http_services(store, config, engine, daemon.stop_event, extra_routes=routes, counters=counters)
        except OSError as exc:
            print(f"error: cannot listen on {config.http.host}:{config.http.port}: {exc}", file=sys.stderr)
            return 1
        daemon.services.extend(http.services)
        return daemon.run()
    finally:
        store.close()
