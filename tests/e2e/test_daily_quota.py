"""The daily quota (issue 16, item 5), on SQLite and PostgreSQL: GoHighLevel's
X-RateLimit-Daily-* headers are parsed; a connection that would exhaust its day's budget pauses
until the reset and the run is ``partial`` with that reason (shown by status), never failed and
never answered 429."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from connectors.acquire.emulator import AcquireEmulator
from connectors.gohighlevel.emulator import GoHighLevelEmulator
from connectors.http import DailyQuota, QuotaExhausted, RateObservation, parse_rate_headers
from sync.commands.status import collect

from .world import World

RATE_SCALE = 1000.0


def test_daily_headers_are_parsed() -> None:
    obs = parse_rate_headers(
        httpx.Headers(
            {
                "X-RateLimit-Limit-Daily": "200000",
                "X-RateLimit-Daily-Remaining": "199990",
                "X-RateLimit-Interval-Milliseconds": "10000",
                "X-RateLimit-Max": "100",
                "X-RateLimit-Remaining": "98",
            }
        )
    )
    assert obs == RateObservation(98, 100, 10.0, 200000, 199990)


def test_daily_quota_counts_down_pauses_and_resets() -> None:
    now = [1_000_000.0]
    quota = DailyQuota(reserve=1, window_s=100.0, clock=lambda: now[0])
    quota.check("x")  # nothing known yet: sent
    quota.observe(RateObservation(daily_limit=10, daily_remaining=3))
    quota.check("x")  # 3 -> 2 (counted as sent)
    quota.check("x")  # 2 -> 1
    try:
        quota.check("ghl POST /contacts/")
    except QuotaExhausted as exc:
        assert exc.until == datetime.fromtimestamp(1_000_100.0, UTC)
        assert "paused until" in str(exc)
    else:
        raise AssertionError("the reserve was reached: nothing more may be sent")
    now[0] = 1_000_100.0  # the next window
    assert not quota.exhausted()
    quota.check("x")


def test_a_spent_daily_quota_pauses_the_connection_never_429(db_url: str, tmp_path: Path) -> None:
    ghl = GoHighLevelEmulator(rate_scale=RATE_SCALE, daily_limit=12)
    acq = AcquireEmulator(rate_scale=RATE_SCALE)
    world = World(db_url, tmp_path, emulators={"ghl": ghl, "acquire": acq})
    try:
        acq.seed(30)
        report = world.engine.run("default", kind="backfill", full=True)
        assert report.status == "partial", report.error
        assert "ghl: daily quota: paused until" in (report.error or "")
        statuses = [e.status for e in ghl.request_log]
        assert 429 not in statuses
        assert len(ghl.request_log) == 12  # every request of the day's budget, not one more
        assert 0 < len(ghl.contacts) < 30
        state = world.store.auth.states(["ghl"])["ghl"]
        assert state.quota_paused_until is not None and state.quota_paused_until > datetime.now(UTC)
        assert state.daily_remaining == 0 and state.daily_limit == 12
        status = collect(world.config, world.store)
        assert status["connections"]["ghl"]["quota"]["paused_until"]
        assert "daily quota" in (status["connections"]["ghl"]["last_error"] or "")
        # Paused: the next cycle sends GoHighLevel nothing and is partial with the reason.
        report = world.engine.run("default")
        assert report.status == "partial" and "ghl: daily quota: paused until" in (report.error or "")
        assert len(ghl.request_log) == 12
        # The day turns (the emulator's budget and the pause end): the rest goes out.
        ghl._daily_used, ghl.daily_limit = 0, 1000
        world.store.auth.pause_quota("ghl", datetime.now(UTC) + timedelta(seconds=0.3), "test")
        time.sleep(0.4)
        reports = [world.engine.run("default") for _ in range(2)]
        assert reports[-1].status == "ok", reports[-1].error
        assert len(ghl.contacts) == 30
        assert 429 not in [e.status for e in ghl.request_log]
    finally:
        world.close()


def test_daemon_adaptive_polls_carry_an_edit_between_full_cycles(db_url: str, tmp_path: Path) -> None:
    """The wiring: a profile with ``schedule.adaptive`` gets polls between its (here hourly)
    full cycles; an outside edit on Acquire reaches GoHighLevel through a poll."""
    import threading

    from connectors.fleet import last_name_edit
    from sync.commands.run import scheduled_profiles
    from sync.daemon import Daemon

    ghl = GoHighLevelEmulator(rate_scale=RATE_SCALE)
    acq = AcquireEmulator(rate_scale=RATE_SCALE)
    schedule = {"interval_seconds": 3600, "adaptive": True, "min_interval_s": 0.2, "max_interval_s": 1.0}
    extra = {"profiles": {"default": {"connections": ["ghl", "acquire"], "schedule": schedule}}}
    world = World(db_url, tmp_path, emulators={"ghl": ghl, "acquire": acq}, extra=extra)
    try:
        acq.seed(3)
        world.engine.run("default", kind="backfill", full=True)
        profiles = scheduled_profiles(world.config, engine=world.engine)
        poller = profiles[0].poller
        assert poller is not None and set(poller.policies) == {"ghl", "acquire"}
        assert poller.lanes == {"ghl": "poll", "acquire": "scan"}  # the full scan polls apart
        profiles = [p.__class__(**{**p.__dict__, "run_at_start": False}) for p in profiles]
        daemon = Daemon(profiles, lambda name, stop: world.engine.run(name, stop=stop))
        thread = threading.Thread(target=daemon.run, kwargs={"install_signals": False})
        thread.start()
        try:
            rid = next(iter(acq.contacts))
            first = acq.contacts[rid]["fields"]["name"].split()[0]
            acq.external_edit(rid, last_name_edit("acquire", first, "Polled"))
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and not (
                poller.polls and any(c.get("lastName") == "Polled" for c in ghl.contacts.values())
            ):
                time.sleep(0.1)
            assert any(c.get("lastName") == "Polled" for c in ghl.contacts.values())
            assert poller.polls > 0
        finally:
            daemon.stop()
            thread.join(30)
    finally:
        world.close()
