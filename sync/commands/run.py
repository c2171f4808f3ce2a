"""``contactsync run``: the daemon, one scheduled job per sync profile (and, for a profile with
``schedule.adaptive``, adaptive polls of its connections between full cycles)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

from starlette.routing import BaseRoute

from connectors.base import PullMode
from connectors.registry import connector_class
from sync.adaptive import AdaptivePolicy, Limit
from sync.commands.common import open_store, setup_logging
from sync.config import Config
from sync.cycle import CycleReport, CycleRunner
from sync.daemon import AdaptivePoller, BudgetFn, Daemon, PollFn, PollResult, ScheduledProfile
from sync.serve import WebhookCounters, http_services
from sync.store import Store

#: Documented daily budgets by platform (GoHighLevel: 200,000 per app per location).
_DAILY = {"gohighlevel": 200_000}


def poll_policies(config: Config, profile: str, store: Store | None = None) -> dict[str, AdaptivePolicy]:
    """One adaptive policy per connection of ``profile`` that can be polled (not lookup-only),
    bounded by its documented limits (the config's rate-limit override, else the connector's
    documented one; the daily budget last reported, else the documented one)."""
    p = config.effective_profiles()[profile]
    sched = p.schedule
    states = store.auth.states(list(p.connections or [])) if store is not None else {}
    out = {}
    for name in p.connections or []:
        conn = config.connections[name]
        caps = connector_class(conn.platform).capabilities
        if caps.pull_mode is PullMode.LOOKUP_ONLY:
            continue
        limits = []
        if conn.rate_limit is not None:
            limits.append(Limit(conn.rate_limit.requests, conn.rate_limit.per_seconds))
        elif caps.rate_limit is not None:
            limits.append(Limit(caps.rate_limit.requests, caps.rate_limit.per_seconds))
        st = states.get(name)
        daily = (st.daily_limit if st is not None else None) or _DAILY.get(conn.platform)
        if daily:
            window = float(config.options(name).get("daily_window_s", 86_400.0))
            limits.append(Limit(daily, window))
        out[name] = AdaptivePolicy(
            min_interval_s=sched.min_interval_s,
            max_interval_s=sched.max_interval_s,
            max_budget_share=sched.max_budget_share,
            limits=tuple(limits),
        )
    return out


def scheduled_profiles(
    config: Config, only: str | None = None, *, engine: CycleRunner | None = None
) -> list[ScheduledProfile]:
    """The config's profiles as daemon schedules (with an adaptive poller when the profile
    asks for one and an engine to poll with is given)."""
    out = []
    for name, p in config.effective_profiles().items():
        if only is not None and name != only:
            continue
        poller = None
        if p.schedule.adaptive and engine is not None:
            policies = poll_policies(config, name, engine.store)
            if policies:
                # Full scans (every page, every time) poll in a lane of their own, so they
                # never hold up the quick polls of the change feeds and sorted scans.
                lanes = {
                    n: "scan"
                    if connector_class(config.connections[n].platform).capabilities.pull_mode is PullMode.FULL_SCAN
                    else "poll"
                    for n in policies
                }
                poller = AdaptivePoller(
                    policies, _poll_with(engine), budget=_budget_of(config, engine.store), lanes=lanes
                )
        out.append(
            ScheduledProfile(
                name=name,
                interval_seconds=p.schedule.interval_seconds,
                cron=p.schedule.cron,
                misfire_grace_seconds=p.misfire_grace_seconds,
                poller=poller,
            )
        )
    return out


def _poll_with(engine: CycleRunner) -> PollFn:
    def poll(profile: str, connections: list[str], stop: threading.Event) -> Mapping[str, PollResult] | None:
        report = engine.run(profile, only=connections, stop=stop)
        if report.status == "skipped":
            return None
        out: dict[str, tuple[int, int] | tuple[int, int, float]] = {}
        # What the polling itself took (reading the pages and staging them), not the wait for
        # the profile nor the writes the poll's plan made.
        seconds = float(report.timings.get("prefetch", 0.0)) + float(report.timings.get("pull", 0.0))
        for n in connections:
            pull = report.pulls.get(n)
            if pull is None or pull.error or pull.skipped:
                out[n] = (0, 1)  # no news: back off
            else:
                out[n] = (pull.inserted + pull.changed + len(pull.deleted), max(1, pull.pages), seconds)
        return out

    return poll


def _budget_of(config: Config, store: Store) -> BudgetFn:
    def budget(name: str) -> tuple[int | None, float | None]:
        st = store.auth.states([name]).get(name)
        if st is None or st.daily_remaining is None:
            return None, None
        window = float(config.options(name).get("daily_window_s", 86_400.0))
        now = datetime.now(UTC).timestamp()
        return st.daily_remaining, (int(now // window) + 1) * window - now

    return budget


def operator_routes(store: Store, config: Config) -> list[BaseRoute]:
    """What the listener serves beside the webhooks: the operator's page, ``/metrics``,
    ``/healthz`` and ``/readyz``."""
    from sync.metrics import metrics_routes
    from sync.web import web_routes

    return [*metrics_routes(store, config), *web_routes(store, config)]


RoutesFactory = Callable[[Store, WebhookCounters], Sequence[BaseRoute]]


def run_daemon(
    config: Config,
    *,
    profile: str | None = None,
    extra_routes: Sequence[BaseRoute] | RoutesFactory | None = None,
) -> int:
    """Run until SIGTERM/SIGINT; every cycle takes its profile's lock, so several daemons can
    share one PostgreSQL store. With ``http.enabled`` the daemon also listens (webhooks, and
    ``extra_routes`` mounted beside them) and drains the webhook inbox into focused cycles.
    ``extra_routes`` may be a factory called with the daemon's store and webhook counters
    (e.g. ``lambda store, counters: [*web_routes(store, config), *metrics_routes(store, counters)]``)."""
    setup_logging(config)
    store = open_store(config)
    # Scheduled cycles, poll lanes and webhook cycles share this runner: each reads its
    # listings before queueing for the turn.
    engine = CycleRunner(config, store, prefetch=True)
    try:

        def run_profile(name: str, stop: threading.Event) -> None:
            engine.run(name, stop=stop)

        daemon = Daemon(scheduled_profiles(config, profile, engine=engine), run_profile)
        try:
            counters = WebhookCounters()
            if extra_routes is None:
                routes: Sequence[BaseRoute] = operator_routes(store, config)
            elif callable(extra_routes):
                routes = extra_routes(store, counters)
            else:
                routes = extra_routes
            http = http_services(store, config, engine, daemon.stop_event, extra_routes=routes, counters=counters)
        except OSError as exc:
            print(f"error: cannot listen on {config.http.host}:{config.http.port}: {exc}", file=sys.stderr)
            return 1
        if http.drain is not None:
            pollers = {p.name: p.poller for p in daemon.profiles if p.poller is not None}

            def nudge(report: CycleReport) -> None:
                # A webhook cycle: its platform is active, and some of its deliveries may be
                # lost: its adaptive polls go back to their floor.
                poller = pollers.get(report.profile)
                if poller is None:
                    return
                for name in report.extra.get("hints") or {}:
                    poller.nudge(name)

            http.drain.on_cycle = nudge
        daemon.services.extend(http.services)
        return daemon.run()
    finally:
        store.close()
