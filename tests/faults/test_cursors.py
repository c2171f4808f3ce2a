"""Issue 14 D: a future timestamp never freezes a cursor.

One contact of GoHighLevel (``dateUpdated``) or Comm100 (``lastUpdatedTime``) is stamped in
2099 in every list response (a tampering transport); later honest edits on that platform must
still be pulled and carried everywhere, the cursor must stay at or before now plus the skew, and
``status`` must show the future-stamped record."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from connectors.timestamps import parse_iso
from sync.commands.status import collect
from tests.e2e.world import World

from .listing_tamper import install

ADA = ("ada@example.com", "+14155552671")
LINUS = ("linus@kernel.example", "+15035550199")
FUTURE = "2099-01-01T00:00:00.000Z"

# platform -> (its updated-time key, its cursor key)
STAMP = {"ghl": ("dateUpdated", "date_updated"), "comm100": ("lastUpdatedTime", "since")}


def stamp_in_future(name: str, remote_id: str) -> Any:
    key = STAMP[name][0]

    def rewrite(body: Any) -> str:
        for contact in body.get("contacts") or []:
            if contact.get("id") == remote_id:
                contact[key] = FUTURE
                contact.pop("searchAfter", None)
        return json.dumps(body)

    return rewrite


def cursor_time(w: World, name: str) -> datetime | None:
    position = w.store.cursors.get_cursor(name).position or {}
    value = position.get(STAMP[name][1])
    return parse_iso(value) if value else None


@pytest.mark.parametrize("name", ["ghl", "comm100"])
def test_a_2099_stamp_never_hides_later_edits(world: World, name: str) -> None:
    ada, linus = world.emulators[name].seed(
        [
            {"first_name": "Ada", "last_name": "Lovelace", "email": ADA[0], "phone": ADA[1]},
            {"first_name": "Linus", "last_name": "Torvalds", "email": LINUS[0], "phone": LINUS[1]},
        ]
    )
    world.backfill()
    world.converge()
    install(world, name, stamp_in_future(name, ada))
    world.emulators[name].external_edit(ada, {"lastName": "Byron"})  # Ada's (lying) edit
    world.cycle()
    limit = datetime.now(UTC) + timedelta(minutes=6)
    moment = cursor_time(world, name)
    assert moment is not None and moment <= limit, moment

    # Honest edits made afterwards are pulled and reach every platform, cycle after cycle.
    for last in ("King", "Benedict"):
        world.emulators[name].external_edit(linus, {"lastName": last})
        world.converge()
        for other in ("acquire", "ghl", "comm100"):
            (found,) = world.holding(other, email=LINUS[0])
            assert found.get("last_name") == last, (other, found.get("last_name"), last)
        moment = cursor_time(world, name)
        assert moment is not None and moment <= datetime.now(UTC) + timedelta(minutes=6), moment
    # Ada's values are real (staged and carried), only her stamp is not believed.
    for other in ("acquire", "ghl", "comm100"):
        (found,) = world.holding(other, email=ADA[0])
        assert found.get("last_name") == "Byron", (other, found.get("last_name"))

    status = collect(world.config, world.store)
    assert status["connections"][name]["future_stamped"] == 1


@pytest.mark.parametrize("name", ["ghl", "comm100"])
def test_a_cursor_already_frozen_in_the_future_is_recovered(world: World, name: str) -> None:
    (linus,) = world.emulators[name].seed(
        [{"first_name": "Linus", "last_name": "Torvalds", "email": LINUS[0], "phone": LINUS[1]}]
    )
    world.backfill()
    world.converge()
    # As an earlier release left it after believing a 2099 stamp.
    world.store.staging.stage_page(name, [], cursor={STAMP[name][1]: FUTURE})
    world.emulators[name].external_edit(linus, {"lastName": "Benedict"})
    world.converge()
    for other in ("acquire", "ghl", "comm100"):
        (found,) = world.holding(other, email=LINUS[0])
        assert found.get("last_name") == "Benedict", (other, found.get("last_name"))
    moment = cursor_time(world, name)
    assert moment is not None and moment <= datetime.now(UTC) + timedelta(minutes=6), moment
