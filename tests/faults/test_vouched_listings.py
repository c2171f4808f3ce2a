"""Issue 14 A without a read per update: a listing vouches for the contacts it did not list only
when it proves it missed nothing.

Comm100's incremental listing (newest first) that went back past its cursor, with a total equal
to the records the store holds, shows every change made since: its staged contacts are current,
so an update there sends its full representation built on the staged contact, with no read by
id first. A listing that hides a contact - dropped from the page, with a total to match the page
- must not vouch: the update reads the contact first, and the agent's edit it would otherwise
have overwritten wins. Checked through the emulators' own views and request log."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from e2e.world import World  # tests/ is on sys.path (rootdir-relative packages)

from faults.listing_tamper import install

ADA = ("ada@example.com", "+14155552671")
READABLE = ("acquire", "ghl", "comm100")


def comm100_at(w: World, seconds_ago: float) -> None:
    w.emulators["comm100"].clock.freeze(datetime.now(UTC) - timedelta(seconds=seconds_ago))


@pytest.fixture
def synced(world: World) -> World:
    """Ada (from Acquire) and Grace and Linus (from Comm100) on every platform, Comm100's
    contacts stamped ten minutes ago; then an agent's edit of Linus there five minutes ago
    moves the Comm100 cursor past Ada's and Grace's stamps by more than the overlap window."""
    w = world
    comm100_at(w, 600)
    w.emulators["acquire"].seed(
        [{"first_name": "Ada", "last_name": "Lovelace", "email": ADA[0], "phone": ADA[1], "city": "London"}]
    )
    w.emulators["comm100"].seed(
        [
            {"first_name": "Grace", "last_name": "Hopper", "email": "grace@navy.example"},
            {"first_name": "Linus", "last_name": "Torvalds", "email": "linus@kernel.example"},
        ]
    )
    w.backfill()
    w.converge()
    comm100_at(w, 300)
    w.emulators["comm100"].external_edit(comm100_id(w, "linus@kernel.example"), {"lastName": "Benedict"})
    w.converge()
    comm100_at(w, 0)
    return w


def comm100_id(w: World, email: str) -> str:
    found = w.holding("comm100", email=email)
    assert len(found) == 1, found
    return str(found[0]["_raw"]["id"])


def ada(w: World, name: str) -> dict[str, Any]:
    found = w.holding(name, email=ADA[0])
    assert len(found) == 1, (name, found)
    return found[0]


def comm100_reads_by_id(w: World, since: int) -> int:
    return sum(
        1
        for e in w.emulators["comm100"].request_log[since:]
        if e.method == "GET" and not e.path.split("?", 1)[0].rstrip("/").endswith("/global/contacts")
    )


def test_a_caught_up_listing_saves_the_read_before_each_update(synced: World) -> None:
    w = synced
    start = len(w.emulators["comm100"].request_log)
    w.emulators["acquire"].external_edit(str(ada(w, "acquire")["_raw"]["id"]), {"fields": {"name": "Ada Byron"}})
    report = w.cycle()
    assert report.status == "ok", report.error
    assert report.pulls["comm100"].caught_up
    assert comm100_reads_by_id(w, start) == 0
    # The PUT was a full representation built on the staged contact: nothing else changed.
    held = ada(w, "comm100")
    assert held["last_name"] == "Byron"
    assert ADA[0] in held["emails"] and held["address.city"] == "London"
    assert {n: ada(w, n)["last_name"] for n in READABLE} == dict.fromkeys(READABLE, "Byron")
    assert w.converge()[-1].write_calls() == 0


def test_a_listing_that_hides_a_contact_behind_a_matching_total_does_not_vouch(synced: World) -> None:
    """An agent moves Ada to Paris on Comm100; another renames her on Acquire. Comm100's next
    listing leaves her contact out and lowers its total to match (it still goes back past the
    cursor). Expected: the total disagrees with the store's count, so the update reads her
    contact first, finds the city it was not planned against and sends nothing; the next cycle
    carries Paris everywhere and the new name to Comm100."""
    w = synced
    hidden = comm100_id(w, ADA[0])
    w.emulators["comm100"].external_edit(hidden, {"city": "Paris"})
    w.emulators["acquire"].external_edit(str(ada(w, "acquire")["_raw"]["id"]), {"fields": {"name": "Ada Byron"}})

    def without_ada(body: Any) -> str:
        kept = [c for c in body["contacts"] if str(c.get("id")) != hidden]
        return json.dumps({**body, "contacts": kept, "total": body["total"] - (len(body["contacts"]) - len(kept))})

    tamper = install(w, "comm100", without_ada)
    start = len(w.emulators["comm100"].request_log)
    report = w.cycle()
    assert tamper.hits >= 1
    assert not report.pulls["comm100"].caught_up
    assert comm100_reads_by_id(w, start) >= 1
    assert ada(w, "comm100")["address.city"] == "Paris"  # the agent's edit was not overwritten
    tamper.active = False
    w.converge()
    assert {n: ada(w, n)["address.city"] for n in READABLE} == dict.fromkeys(READABLE, "Paris")
    assert {n: ada(w, n)["last_name"] for n in READABLE} == dict.fromkeys(READABLE, "Byron")
    w.assert_one_each([ADA, ("grace@navy.example", None), ("linus@kernel.example", None)])
