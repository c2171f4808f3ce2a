"""A full scan read before its cycle's turn (``CycleRunner.run`` prefetches Acquire's pages so a
webhook's focused cycle never queues behind them): staged as if pulled then, except what our
own writes changed after its pages were read, never when another pull ran meanwhile, and never
a reason to take a contact we created since for deleted."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from connectors.fleet import last_name_edit
from sync.cycle import PREFETCH_CURRENT_S

from .world import World

PEOPLE = [
    {"first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com", "phone": "+14155552671"},
    {"first_name": "Grace", "last_name": "Hopper", "email": "grace@navy.example", "phone": "+12125550100"},
]


def _linked(world: World) -> None:
    for name in ("acquire", "ghl", "comm100"):
        world.emulators[name].seed([dict(p) for p in PEOPLE])
    world.backfill()
    world.converge()


def _rid(world: World, name: str, email: str) -> str:
    (found,) = world.holding(name, email=email)
    return str(found["_raw"]["id"])


def _last(world: World, name: str, email: str) -> Any:
    (found,) = world.holding(name, email=email)
    return found.get("last_name")


def _cycle_with(world: World, prefetched: Any, **kwargs: Any) -> Any:
    """A cycle handed a prefetch read earlier (what ``run`` does between reading it and its
    turn, with something else run in between)."""
    with world.store.profile_lock("default") as lock:
        assert lock.held
        report = asyncio.run(world.engine.cycle("default", prefetched=prefetched, **kwargs))
    assert report.status in ("ok", "partial"), report.error
    return report


def test_a_cycle_stages_a_prefetched_scan_and_carries_its_edit(world: World) -> None:
    _linked(world)
    rid = _rid(world, "acquire", "ada@example.com")
    world.emulators["acquire"].external_edit(rid, last_name_edit("acquire", "Ada", "King"))
    report = world.cycle(only=["acquire"])
    pull = report.pulls["acquire"]
    assert pull.prefetched and pull.complete and pull.changed == 1, pull
    assert "prefetch" in report.timings
    for name in ("ghl", "comm100"):
        assert _last(world, name, "ada@example.com") == "King"


def test_our_write_after_the_prefetch_is_not_reverted_by_its_stale_page(world: World) -> None:
    _linked(world)
    pre = world.engine._prefetch("default", ["acquire"], None)
    assert set(pre) == {"acquire"}
    # Meanwhile a webhook-driven cycle carries a GoHighLevel edit to Acquire ...
    rid = _rid(world, "ghl", "ada@example.com")
    world.emulators["ghl"].external_edit(rid, last_name_edit("ghl", "Ada", "Byron"))
    world.cycle(only=["ghl"])
    assert _last(world, "acquire", "ada@example.com") == "Byron"
    # ... then the cycle that read Acquire before it stages its pages: the page still shows
    # "Lovelace", which must not pass for an Acquire edit.
    report = _cycle_with(world, pre, only=["acquire"])
    pull = report.pulls["acquire"]
    assert pull.prefetched and pull.skipped_stale >= 1 and not pull.deleted, pull
    world.converge()
    for name in ("acquire", "ghl", "comm100"):
        assert _last(world, name, "ada@example.com") == "Byron", name


def test_a_prefetch_is_dropped_when_another_pull_ran_meanwhile(world: World) -> None:
    _linked(world)
    pre = world.engine._prefetch("default", ["acquire"], None)
    rid = _rid(world, "acquire", "ada@example.com")
    world.emulators["acquire"].external_edit(rid, last_name_edit("acquire", "Ada", "King"))
    world.cycle()  # pulls Acquire (prefetched afresh) and carries the edit
    report = _cycle_with(world, pre, only=["acquire"])
    assert not report.pulls["acquire"].prefetched  # pulled under the lock instead
    world.converge()
    for name in ("acquire", "ghl", "comm100"):
        assert _last(world, name, "ada@example.com") == "King", name


def test_a_contact_we_created_after_the_prefetch_is_not_taken_for_deleted(world: World) -> None:
    _linked(world)
    pre = world.engine._prefetch("default", ["acquire"], None)
    world.emulators["ghl"].seed(
        [{"first_name": "Alan", "last_name": "Turing", "email": "alan@bletchley.example", "phone": "+14155550123"}]
    )
    world.cycle(only=["ghl"])  # creates Alan on Acquire, after the prefetch listed its contacts
    assert len(world.holding("acquire", email="alan@bletchley.example")) == 1
    report = _cycle_with(world, pre, only=["acquire"])
    pull = report.pulls["acquire"]
    assert pull.prefetched and pull.complete and not pull.deleted and not pull.held, pull
    world.converge()
    for name in ("acquire", "ghl", "comm100"):
        assert len(world.holding(name, email="alan@bletchley.example")) == 1, name


def test_a_prefetch_that_waited_for_its_turn_does_not_vouch_for_its_contacts(world: World) -> None:
    """A scan staged promptly vouches for what it listed, as a pull under the lock does; one
    that waited longer than ``PREFETCH_CURRENT_S`` (behind another cycle) may be older than the
    push: each update there reads the contact first, so an agent's Acquire edit made after the
    pages were read wins (newest) instead of being overwritten blind."""
    _linked(world)
    world.emulators["ghl"].external_edit(_rid(world, "ghl", "ada@example.com"), last_name_edit("ghl", "Ada", "Byron"))
    time.sleep(0.05)
    pre = world.engine._prefetch("default", None, None)
    assert set(pre) == {"acquire", "ghl", "comm100"}  # every listing (DM Champ has none)
    time.sleep(0.05)
    world.emulators["acquire"].external_edit(
        _rid(world, "acquire", "ada@example.com"), last_name_edit("acquire", "Ada", "King")
    )
    time.sleep(PREFETCH_CURRENT_S + 0.3)  # the wait for the turn
    report = _cycle_with(world, pre)
    pull = report.pulls["acquire"]
    assert pull.prefetched and pull.prefetch_age_s is not None and pull.prefetch_age_s > PREFETCH_CURRENT_S, pull
    world.converge()
    for name in ("acquire", "ghl", "comm100"):
        assert _last(world, name, "ada@example.com") == "King", name


def test_a_prompt_prefetch_vouches_like_a_pull_under_the_lock(world: World) -> None:
    """Staged at once with nothing written meanwhile, the prefetched scan is the read: the
    cycle's Acquire updates go without a read by id first (the speed of a full scan)."""
    _linked(world)
    world.emulators["ghl"].external_edit(_rid(world, "ghl", "ada@example.com"), last_name_edit("ghl", "Ada", "Byron"))
    log = world.emulators["acquire"].request_log
    seen = len(log)
    report = world.cycle()
    pull = report.pulls["acquire"]
    assert pull.prefetched and pull.skipped_stale == 0 and pull.prefetch_age_s is not None, pull
    assert pull.prefetch_age_s <= PREFETCH_CURRENT_S, pull
    rid = _rid(world, "acquire", "ada@example.com")
    about_ada = [e.method for e in log[seen:] if e.path.split("?", 1)[0].rstrip("/").endswith("/" + rid)]
    assert about_ada and "GET" not in about_ada, about_ada  # the update alone: no read of it first
    assert _last(world, "acquire", "ada@example.com") == "Byron"
