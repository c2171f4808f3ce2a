"""Issue 16 item 2: webhook events drive the sync.

A GoHighLevel contact event (delivered by the emulator, signed, to the receiver) is stored in
the inbox; the drain re-reads the contact by id, stages it and runs a focused cycle that
carries the change to every platform. A lost webhook is caught by the next scheduled poll. A
ContactDelete confirmed by a failed get is the explicit delete signal: propagated under
``deletes: propagate``, left alone under ``ignore``."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from connectors.gohighlevel.emulator import GoHighLevelEmulator
from sync.daemon import Daemon, ScheduledProfile
from sync.serve import InboxDrain, Listener, WebhookCounters, build_app
from tests.e2e.world import World

from .conftest import webhook_world

N = 4
PLATFORMS = ("acquire", "ghl", "comm100", "dmchamp")


def synced(world: World) -> list[str]:
    """``N`` people seeded on Acquire, backfilled and converged; their emails."""
    world.emulators["acquire"].seed(N)
    world.backfill()
    world.converge()
    emails = sorted(e for c in world.contacts("ghl") for e in (c.get("emails") or ()))
    assert len(emails) == N
    return emails


def drain_all(world: World, drain: InboxDrain, ghl: GoHighLevelEmulator) -> int:
    """Drain until the inbox stays empty: our own writes to GoHighLevel come back as events
    too (echoes), whose re-read finds nothing new. Returns the rounds it took."""
    for rounds in range(1, 6):
        assert ghl.webhooks is not None and ghl.webhooks.flush(5)
        if world.store.inbox.depth() == 0:
            return rounds
        drain.drain_once()
    raise AssertionError("the inbox never emptied")


def wire(world: World, **sender: object) -> tuple[GoHighLevelEmulator, InboxDrain, WebhookCounters]:
    """Receiver app on the world's store; the GHL emulator delivering to it in process."""
    counters = WebhookCounters()
    app = build_app(world.store, world.config, counters=counters)
    ghl = world.emulators["ghl"]
    assert isinstance(ghl, GoHighLevelEmulator)
    ghl.deliver_webhooks("http://daemon/webhooks/gohighlevel", transport=httpx.ASGITransport(app=app), **sender)
    return ghl, InboxDrain(world.engine, world.store, world.config, debounce_s=0), counters


def ghl_id(world: World, email: str) -> str:
    (contact,) = world.holding("ghl", email=email)
    return str(contact["_raw"]["id"])


@pytest.fixture
def propagate_world(db_url: str, tmp_path: Path) -> Iterator[World]:
    w = webhook_world(db_url, tmp_path, deletes="propagate")
    yield w
    w.close()


def test_an_inbox_event_travels_to_every_platform(world: World) -> None:
    emails = synced(world)
    ghl, drain, counters = wire(world)
    rid = ghl_id(world, emails[0])
    # The edit is not visible to search for a long while: only the webhook can carry it now.
    ghl.next_search_delay = 3600
    ghl.external_edit(rid, {"lastName": "Webhooked"})
    assert ghl.webhooks is not None and ghl.webhooks.flush(5)
    assert counters.snapshot() == {("ContactUpdate", "accepted"): 1}
    assert world.store.inbox.depth() == 1
    drain_all(world, drain, ghl)
    assert drain.cycles <= 2  # the event, then at most one round of echoes
    for name in PLATFORMS:
        (contact,) = world.holding(name, email=emails[0])
        assert contact.get("last_name") == "Webhooked", (name, contact)
    assert ghl.webhooks is not None
    ghl.webhooks.close()


def test_a_lost_webhook_is_caught_by_polling(world: World) -> None:
    emails = synced(world)
    ghl, drain, _ = wire(world, drop_share=1.0)
    rid = ghl_id(world, emails[1])
    ghl.external_edit(rid, {"lastName": "Polled"})
    assert ghl.webhooks is not None and ghl.webhooks.flush(5)
    assert ghl.webhooks.stats["dropped"] == 1
    assert drain.drain_once() is False and world.store.inbox.depth() == 0
    assert world.holding("acquire", email=emails[1])[0].get("last_name") != "Polled"
    time.sleep(0.05)  # past the (scaled) search delay
    world.cycle()  # the scheduled poll: the safety net
    for name in ("acquire", "comm100"):
        assert world.holding(name, email=emails[1])[0].get("last_name") == "Polled", name
    ghl.webhooks.close()


def test_contact_delete_is_propagated_under_propagate(propagate_world: World) -> None:
    world = propagate_world
    emails = synced(world)
    ghl, drain, counters = wire(world)
    ghl.external_delete(ghl_id(world, emails[2]))
    assert ghl.webhooks is not None and ghl.webhooks.flush(5)
    assert counters.snapshot() == {("ContactDelete", "accepted"): 1}
    drain_all(world, drain, ghl)
    for name in ("acquire", "comm100"):
        assert world.holding(name, email=emails[2]) == [], name
    for email in emails[:2] + emails[3:]:
        assert len(world.holding("acquire", email=email)) == 1
    ghl.webhooks.close()


def test_contact_delete_is_left_alone_under_ignore(world: World) -> None:
    emails = synced(world)
    ghl, drain, _ = wire(world)
    rid = ghl_id(world, emails[2])
    ghl.external_delete(rid)
    drain_all(world, drain, ghl)
    for name in ("acquire", "comm100"):
        assert len(world.holding(name, email=emails[2])) == 1, name
    # The delete was seen: the record is a tombstone in the store, and nothing is recreated.
    assert world.store.inbox.live_records("ghl", [rid]) == set()
    world.cycle()
    assert world.holding("ghl", email=emails[2]) == []
    ghl.webhooks.close()


def test_a_contact_delete_not_confirmed_by_the_api_deletes_nothing(propagate_world: World) -> None:
    """A forged-looking or out-of-order ContactDelete whose contact still exists: the get
    answers it, so it is staged as it is and nothing is deleted."""
    world = propagate_world
    emails = synced(world)
    ghl, drain, _ = wire(world)
    rid = ghl_id(world, emails[0])
    ghl.emit_event("ContactDelete", ghl.contacts[rid])
    drain_all(world, drain, ghl)
    for name in ("acquire", "ghl", "comm100"):
        assert len(world.holding(name, email=emails[0])) == 1, name
    ghl.webhooks.close()


def test_the_daemon_listens_drains_and_stops_within_5s(world: World) -> None:
    emails = synced(world)
    stop = threading.Event()
    drain = InboxDrain(world.engine, world.store, world.config, stop=stop, debounce_s=0.05)
    listener = Listener(build_app(world.store, world.config, on_event=drain.notify), "127.0.0.1", 0)
    daemon = Daemon(
        [ScheduledProfile("default", interval_seconds=3600, run_at_start=False)],
        lambda name, s: world.engine.run(name, stop=s),
        services=[drain, listener],
    )
    daemon.stop_event = stop
    thread = threading.Thread(target=daemon.run, kwargs={"install_signals": False})
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while listener._server.started is False and time.monotonic() < deadline:
            time.sleep(0.02)
        ghl = world.emulators["ghl"]
        assert isinstance(ghl, GoHighLevelEmulator)
        sender = ghl.deliver_webhooks(f"{listener.url}/webhooks/gohighlevel")
        ghl.next_search_delay = 3600
        ghl.external_edit(ghl_id(world, emails[3]), {"lastName": "Realtime"})
        assert sender.flush(5) and sender.statuses == {200: 1}
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if world.holding("comm100", email=emails[3])[0].get("last_name") == "Realtime":
                break
            time.sleep(0.05)
        assert world.holding("comm100", email=emails[3])[0].get("last_name") == "Realtime"
        assert world.holding("acquire", email=emails[3])[0].get("last_name") == "Realtime"
        sender.close()
    finally:
        started = time.monotonic()
        daemon.stop()
        thread.join(10)
        assert not thread.is_alive()
        assert time.monotonic() - started < 5
    with pytest.raises(httpx.ConnectError):
        httpx.post(f"{listener.url}/webhooks/gohighlevel", content=b"{}", timeout=2)


def test_too_many_deletes_at_once_are_held(db_url: str, tmp_path: Path) -> None:
    world = webhook_world(db_url, tmp_path, deletes="propagate")
    try:
        world.config = world.config.model_copy(
            update={"deletes": world.config.deletes.model_copy(update={"max_count": 2})}
        )
        world.engine.config = world.config
        emails = synced(world)
        ghl, drain, _ = wire(world)
        for email in emails[:3]:
            ghl.external_delete(ghl_id(world, email))
        drain_all(world, drain, ghl)
        for email in emails:
            assert len(world.holding("acquire", email=email)) == 1
        assert world.store.held.counts() == {"ghl": 3}
        assert ghl.webhooks is not None
        ghl.webhooks.close()
    finally:
        world.close()
