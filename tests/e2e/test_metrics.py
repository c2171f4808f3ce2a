"""/metrics, /healthz and /readyz over a real cycle against the four emulators."""

from __future__ import annotations

import threading
from pathlib import Path

from starlette.applications import Starlette
from starlette.testclient import TestClient

from sync import metrics
from sync.metrics import metrics_routes, readiness, record_webhook, sample

from .test_sync import seed_overlap
from .world import World

NAMES = [
    "contactsync_runs_total",
    "contactsync_run_duration_seconds",
    "contactsync_last_success_timestamp_seconds",
    "contactsync_cursor_lag_seconds",
    "contactsync_outbox_pending",
    "contactsync_outbox_oldest_pending_age_seconds",
    "contactsync_writes_total",
    "contactsync_http_requests_total",
    "contactsync_rate_limit_wait_seconds_total",
    "contactsync_conflicts_open",
    "contactsync_webhook_events_total",
]


def _client(world: World) -> TestClient:
    return TestClient(Starlette(routes=metrics_routes(world.store, world.config)))


def test_metrics_during_and_after_a_real_cycle(world: World) -> None:
    seed_overlap(world)
    client = _client(world)
    before = client.get("/metrics").text
    runs_before = sum(sample(before, "contactsync_runs_total", {"profile": "default"}))
    http_before = sum(sample(before, "contactsync_http_requests_total", {"connection": "ghl"}))

    during: list[str] = []
    done = threading.Event()

    def scrape() -> None:
        while not done.is_set():
            during.append(client.get("/metrics").text)
            done.wait(0.05)

    scraper = threading.Thread(target=scrape)
    scraper.start()
    try:
        report = world.backfill()
        world.converge()
    finally:
        done.set()
        scraper.join()
    assert during and all("contactsync_store_up 1.0" in t for t in during)
    record_webhook("ContactUpdate", "accepted")

    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for name in NAMES:
        assert any(line.startswith(name) for line in text.splitlines()), name

    assert sum(sample(text, "contactsync_runs_total", {"profile": "default"})) >= runs_before + 2
    assert sum(sample(text, "contactsync_run_duration_seconds_count", {"profile": "default"})) >= 2
    assert sum(sample(text, "contactsync_http_requests_total", {"connection": "ghl"})) > http_before
    assert sample(text, "contactsync_http_requests_total", {"connection": "ghl", "status": "200"})
    assert sum(sample(text, "contactsync_writes_total", {"result": "done"})) >= report.applied.done > 0  # type: ignore[union-attr]
    for name in ("acquire", "ghl", "comm100"):
        (lag,) = sample(text, "contactsync_cursor_lag_seconds", {"connection": name})
        assert 0 <= lag < 600
        assert sample(text, "contactsync_outbox_pending", {"connection": name}) != []
        (age,) = sample(text, "contactsync_outbox_oldest_pending_age_seconds", {"connection": name})
        assert age >= 0
        assert sample(text, "contactsync_rate_limit_wait_seconds_total", {"connection": name})[0] >= 0
    (conflicts,) = sample(text, "contactsync_conflicts_open")
    assert conflicts >= 0
    assert sample(text, "contactsync_webhook_events_total", {"type": "ContactUpdate", "verdict": "accepted"})[0] >= 1
    last = world.store.health.snapshot().last_run["default"]
    if last.status == "ok":
        (ts,) = sample(text, "contactsync_last_success_timestamp_seconds", {"profile": "default"})
        assert ts > 1_600_000_000


def test_healthz_and_readyz(world: World, tmp_path: Path) -> None:
    client = _client(world)
    assert client.get("/healthz").status_code == 200
    first = client.get("/readyz")
    assert first.status_code == 503
    assert "has not finished a run yet" in first.json()["reasons"][0]
    seed_overlap(world)
    world.backfill()
    world.converge()
    last = world.store.health.snapshot().last_run["default"]
    ready = client.get("/readyz")
    if last.status == "ok":
        assert ready.status_code == 200, ready.json()
    else:
        assert ready.status_code == 503 and last.status in ready.json()["reasons"][0]


def test_readyz_and_metrics_when_the_store_is_gone(world: World, tmp_path: Path) -> None:
    from sync.store import Store

    gone = Store.open(f"sqlite:///{tmp_path}/no/such/dir/store.db", check=False)
    reasons = readiness(gone, world.config)
    assert reasons and "the store does not answer" in reasons[0]
    client = TestClient(Starlette(routes=metrics_routes(gone, world.config)))
    assert client.get("/readyz").status_code == 503
    scraped = client.get("/metrics")
    assert scraped.status_code == 200 and "contactsync_store_up 0.0" in scraped.text
    gone.close()


def test_the_registry_is_not_the_global_one() -> None:
    from prometheus_client import REGISTRY as GLOBAL

    assert metrics.REGISTRY is not GLOBAL
    assert "contactsync_runs_total" not in {m.name for m in GLOBAL.collect()}


def test_readiness_window_follows_the_schedule(world: World) -> None:
    from sync.config import ProfileConfig, ScheduleConfig
    from sync.metrics import schedule_interval_s

    cfg = world.config.model_copy(
        update={
            "profiles": {
                "every5": ProfileConfig(schedule=ScheduleConfig(cron="*/5 * * * *")),
                "every90s": ProfileConfig(schedule=ScheduleConfig(interval_seconds=90)),
            }
        }
    )
    assert schedule_interval_s(cfg, "every5") == 300
    assert schedule_interval_s(cfg, "every90s") == 90
    reasons = readiness(world.store, cfg)
    assert len(reasons) == 2 and all("has not finished a run yet" in r for r in reasons)


def test_readiness_goes_stale_after_twice_the_interval(world: World) -> None:
    from datetime import UTC, datetime, timedelta

    world.cycle()  # nothing seeded: an ok cycle
    last = world.store.health.snapshot().last_run["default"]
    if last.status != "ok":
        return
    assert readiness(world.store, world.config) == []
    later = datetime.now(UTC) + timedelta(seconds=2 * 300 + 5)  # the default profile: every 300 s
    (reason,) = readiness(world.store, world.config, now=later)
    assert "no successful run in the last 600s" in reason
