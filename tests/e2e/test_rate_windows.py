"""Two processes of ours on one account never overrun its documented limit between them: what
one sent within the window is kept in the store (``store.rate_windows``) and counted by the
next one's rate budget (a daemon started just after a backfill or a probe), over the emulators'
real HTTP protocol."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from connectors.base import RateLimit
from connectors.http import RateBudget
from connectors.registry import emulator_class
from sync.apply import Backoff
from sync.commands.probe import probe_connection
from sync.cycle import CycleRunner

from .world import World, make_emulators

LIMIT = RateLimit(40, 120.0)  # a Comm100-like window long enough to span both "processes"


def _world(db_url: str, tmp_path: Path) -> World:
    emulators = make_emulators()
    emulators["comm100"] = emulator_class("comm100")(rate_limit=LIMIT)
    return World(db_url, tmp_path, emulators=emulators)


def _second_runner(world: World) -> CycleRunner:
    """Another process: its own runner (own budgets, own owner id) on the same store."""
    return CycleRunner(
        world.config,
        world.store,
        transports={n: e.transport() for n, e in world.emulators.items()},
        backoff=Backoff(base_s=0.0),
    )


def test_the_next_process_counts_what_the_last_one_sent(db_url: str, tmp_path: Path) -> None:
    world = _world(db_url, tmp_path)
    try:
        world.emulators["comm100"].seed(3)
        world.emulators["ghl"].seed(2)
        world.backfill()
        world.converge()
        sent = len(world.emulators["comm100"].request_log)
        assert sent >= 2
        first = world.engine._budgets["comm100"]
        assert first.limit == LIMIT and len(first.window_stamps()) == sent
        # A second process (the daemon after the backfill) starts from that window, not empty.
        other = _second_runner(world)
        report = other.run("default")
        assert report.status == "ok", report.error
        budget = other._budgets["comm100"]
        after = len(world.emulators["comm100"].request_log)
        assert len(budget.window_stamps(own=False)) == after  # the first one's requests and its own
        assert len(budget.window_stamps()) == after - sent  # only its own are saved as its own
        # The first runner's stamps are wall-clock in the store; they read back as sent then.
        rows = world.store.rate_windows.sent_by_others("comm100", "nobody", time.time() - 300)
        assert len(rows) == sent + (after - sent)
        assert all(e.status != 429 for e in world.emulators["comm100"].request_log)
        # A budget without a limit keeps nothing (Acquire documents none).
        assert world.store.rate_windows.sent_by_others("acquire", "nobody", 0) == []
    finally:
        world.close()


def test_a_probe_counts_in_the_window_too(db_url: str, tmp_path: Path) -> None:
    world = _world(db_url, tmp_path)
    try:
        transport = world.emulators["comm100"].transport()
        findings = asyncio.run(probe_connection(world.config, "comm100", transport=transport, store=world.store))
        assert findings
        probed = len(world.emulators["comm100"].request_log)
        report = _second_runner(world).run("default")
        assert report.status == "ok", report.error
        assert len(world.store.rate_windows.sent_by_others("comm100", "nobody", time.time() - 300)) >= probed
    finally:
        world.close()


def test_budget_counts_stamps_within_its_window_only() -> None:
    budget = RateBudget(RateLimit(3, 10.0))
    now = time.monotonic()
    assert budget.count_sent([now - 60, now - 5, now - 1]) == 2
    assert len(budget.window_stamps(own=False)) == 2 and budget.window_stamps() == []
    assert RateBudget(None).count_sent([now]) == 0 and RateBudget(None).window_stamps() == []
