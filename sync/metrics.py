"""Prometheus metrics and health checks (``/metrics``, ``/healthz``, ``/readyz``).

Two kinds of figures, all named ``contactsync_*`` in one :class:`CollectorRegistry` of our own
(never prometheus-client's global one, so a test or an embedding process sees only ours):

* **Counters and the run histogram**, fed as things happen in this process: a run ends
  (:func:`record_run`, called by ``sync.cycle``), the executor settles a write
  (:func:`record_write`), a connector's HTTP client gets a response or waits for its rate
  budget (:class:`HttpMetrics`, an observer of ``connectors.http``), a webhook event is judged
  (:func:`record_webhook`). They start at zero when the process starts, as Prometheus expects.
* **Gauges read from the store at scrape time** (:class:`StoreCollector`): outbox backlog and
  its oldest row, cursor lag, open conflicts, each profile's last success. They hold in any
  process that can reach the store (``contactsync serve`` beside daemons elsewhere).

:func:`metrics_routes` returns the Starlette routes the daemon's HTTP listener mounts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from connectors.http import HttpObserver, add_http_observer

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import BaseRoute

    from sync.config import Config
    from sync.store import Store

PREFIX = "contactsync_"

#: The process's counters. Never registered globally.
REGISTRY = CollectorRegistry(auto_describe=True)

RUNS = Counter(
    "contactsync_runs",
    "Runs (cycles and backfills) finished, by profile and outcome.",
    ["profile", "status"],
    registry=REGISTRY,
)
RUN_DURATION = Histogram(
    "contactsync_run_duration_seconds",
    "Wall time of a run, by profile.",
    ["profile"],
    buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
    registry=REGISTRY,
)
WRITES = Counter(
    "contactsync_writes",
    "Outbox rows carried out, by connection, operation and result (done, failed, deferred, held).",
    ["connection", "op", "result"],
    registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "contactsync_http_requests",
    "HTTP requests to the platforms, by connection and status code (or transport error name).",
    ["connection", "status"],
    registry=REGISTRY,
)
RATE_WAIT = Counter(
    "contactsync_rate_limit_wait_seconds",
    "Seconds spent waiting for a connection's rate budget or a 429's Retry-After.",
    ["connection"],
    registry=REGISTRY,
)
WEBHOOKS = Counter(
    "contactsync_webhook_events",
    "Webhook events received, by event type and verdict (accepted, duplicate, rejected, ...).",
    ["type", "verdict"],
    registry=REGISTRY,
)

#: Outcomes a run can end in (pre-created so a dashboard sees zeros, not gaps).
RUN_OUTCOMES = ("ok", "partial", "failed", "interrupted", "skipped")


def record_run(profile: str, status: str, duration_s: float) -> None:
    """A run of ``profile`` ended with ``status`` after ``duration_s`` seconds."""
    RUNS.labels(profile, status).inc()
    if status != "skipped":
        RUN_DURATION.labels(profile).observe(max(0.0, duration_s))


def record_write(connection: str, op: str, result: str) -> None:
    """The executor settled one outbox row of ``connection``: ``result`` is ``done``,
    ``failed`` (the platform refused it), ``deferred`` (left for a later run) or ``held``."""
    WRITES.labels(connection, op, result).inc()


def record_webhook(type: str, verdict: str) -> None:  # noqa: A002 - the label's name
    """A webhook event of ``type`` was received and judged ``verdict`` (for example
    ``accepted``, ``duplicate``, ``bad_signature``, ``ignored``)."""
    WEBHOOKS.labels(type or "unknown", verdict).inc()


class HttpMetrics(HttpObserver):
    """Feeds the HTTP counters from every connector's client (``connectors.http`` observer)."""

    def on_response(self, connection: str, platform: str, status: str) -> None:
        HTTP_REQUESTS.labels(connection, status).inc()

    def on_rate_wait(self, connection: str, platform: str, seconds: float) -> None:
        RATE_WAIT.labels(connection).inc(seconds)


_HTTP = HttpMetrics()
_installed = threading.Lock()


def install() -> None:
    """Subscribe the HTTP counters to the connectors (idempotent; ``sync.cycle`` calls it)."""
    with _installed:
        add_http_observer(_HTTP)


def prime(config: Config) -> None:
    """Create the label sets the config implies at zero, so every series exists from the
    first scrape (a counter that never moved is otherwise absent)."""
    for profile in config.effective_profiles():
        for status in RUN_OUTCOMES:
            RUNS.labels(profile, status)
        RUN_DURATION.labels(profile)
    for name in config.connections:
        RATE_WAIT.labels(name)


# --------------------------------------------------------------------------- store gauges


def schedule_interval_s(config: Config, profile: str) -> float:
    """The profile's interval (for a cron schedule, the gap between its next two firings)."""
    prof = config.effective_profiles().get(profile)
    if prof is None:
        return 300.0
    sched = prof.schedule
    if sched.interval_seconds:
        return float(sched.interval_seconds)
    from apscheduler.triggers.cron import CronTrigger

    trigger = CronTrigger.from_crontab(sched.cron or "* * * * *", timezone=UTC)
    now = datetime.now(UTC)
    first = trigger.get_next_fire_time(None, now)
    second = trigger.get_next_fire_time(first, first + timedelta(seconds=1)) if first else None
    if first is None or second is None:
        return 86400.0
    return max(1.0, (second - first).total_seconds())


def _age(now: datetime, then: datetime) -> float:
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    return max(0.0, (now - then).total_seconds())


class StoreCollector(Collector):
    """Gauges read from the store on every scrape. A store that cannot be read yields no
    gauges (and ``contactsync_store_up 0``) instead of failing the scrape."""

    def __init__(self, store: Store, config: Config) -> None:
        self.store = store
        self.config = config

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(PREFIX + "store_up", "1 when the store answered this scrape.")
        try:
            snap = self.store.health.snapshot()
        except Exception:  # noqa: BLE001 - a scrape reports the store down instead of failing
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        now = datetime.now(UTC)
        names = list(self.config.connections)
        pending = GaugeMetricFamily(
            PREFIX + "outbox_pending", "Outbox rows waiting to be sent (pending or failed).", labels=["connection"]
        )
        oldest = GaugeMetricFamily(
            PREFIX + "outbox_oldest_pending_age_seconds",
            "Age of the oldest outbox row waiting to be sent (0: none waiting).",
            labels=["connection"],
        )
        lag = GaugeMetricFamily(
            PREFIX + "cursor_lag_seconds",
            "Seconds since the latest run whose pull of the connection succeeded started "
            "(how old the freshest staged data may be).",
            labels=["connection"],
        )
        for name in sorted(set(names) | set(snap.outbox_pending)):
            pending.add_metric([name], snap.outbox_pending.get(name, 0))
            then = snap.outbox_oldest_pending.get(name)
            oldest.add_metric([name], _age(now, then) if then else 0.0)
        for name in sorted(set(names) | set(snap.last_pull)):
            pulled = snap.last_pull.get(name)
            if pulled is not None:
                lag.add_metric([name], _age(now, pulled))
        yield pending
        yield oldest
        yield lag
        conflicts = GaugeMetricFamily(PREFIX + "conflicts_open", "Conflicts waiting for a person to decide.")
        conflicts.add_metric([], snap.conflicts_open)
        yield conflicts
        success = GaugeMetricFamily(
            PREFIX + "last_success_timestamp_seconds",
            "Unix time the profile's latest ok run finished.",
            labels=["profile"],
        )
        for profile, at in sorted(snap.last_success.items()):
            success.add_metric([profile], (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp())
        yield success


class _Forward(Collector):
    """Yields another registry's metrics (the process counters inside a per-app registry)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterable[Metric]:
        return self.registry.collect()


def build_registry(store: Store, config: Config) -> CollectorRegistry:
    """A registry holding the process counters and the store gauges of ``store``."""
    install()
    prime(config)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Forward(REGISTRY))
    registry.register(StoreCollector(store, config))
    return registry


# --------------------------------------------------------------------------- readiness


def readiness(store: Store, config: Config, *, now: datetime | None = None) -> list[str]:
    """Why the sync is not ready, in words (empty: ready). Ready means the store answers and
    every profile's latest run succeeded (``ok``) within twice its schedule's interval."""
    now = now or datetime.now(UTC)
    try:
        store.health.ping()
        snap = store.health.snapshot()
    except Exception as exc:  # noqa: BLE001
        return [f"the store does not answer: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"]
    reasons: list[str] = []
    for profile in config.effective_profiles():
        window = 2 * schedule_interval_s(config, profile)
        last = snap.last_run.get(profile)
        success = snap.last_success.get(profile)
        if last is None:
            reasons.append(f"profile {profile!r} has not finished a run yet")
        elif last.status != "ok":
            reasons.append(
                f"profile {profile!r}: the last run (#{last.id}) ended {last.status}"
                + (f": {last.error}" if last.error else "")
            )
        elif success is None or _age(now, success) > window:
            reasons.append(f"profile {profile!r}: no successful run in the last {window:g}s")
    return reasons


def metrics_routes(store: Store, config: Config) -> list[BaseRoute]:
    """``/metrics`` (Prometheus text format), ``/healthz`` (the process answers) and
    ``/readyz`` (200 when :func:`readiness` finds nothing wrong, else 503 with the reasons).
    Store reads run in Starlette's thread pool, off the event loop."""
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route

    registry = build_registry(store, config)

    async def metrics(request: Request) -> Response:
        body = await run_in_threadpool(generate_latest, registry)
        return PlainTextResponse(body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "alive", "time": time.time()})

    async def readyz(request: Request) -> Response:
        reasons = await run_in_threadpool(readiness, store, config)
        if reasons:
            return JSONResponse({"status": "not ready", "reasons": reasons}, status_code=503)
        return JSONResponse({"status": "ready"})

    return [
        Route("/metrics", metrics, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]


def sample(text: str, name: str, labels: Mapping[str, str] | None = None) -> list[float]:
    """Values of ``name`` (with ``labels`` among its labels) in a Prometheus text exposition
    (tests and ``bench/cycle.py`` read a scrape with it)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: list[float] = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in (labels or {}).items()):
                out.append(float(s.value))
    return out


__all__: list[str] = [
    "REGISTRY",
    "HttpMetrics",
    "StoreCollector",
    "build_registry",
    "install",
    "metrics_routes",
    "readiness",
    "record_run",
    "record_webhook",
    "record_write",
    "sample",
]
