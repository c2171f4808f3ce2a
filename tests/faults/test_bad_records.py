"""Issue 14 C: one bad record never stops a sync.

Hostile items are slipped into the platforms' list responses by a tampering transport
(tests/faults/tamper.py) or stored in an emulator directly. The end state is checked the way a
user would: the other people reach every platform, the bad records are quarantined with their
reason (``status``), nothing NUL, NaN or oversized is written anywhere, cycles do not fail; a
page that cannot be read at all fails its connection's pull only."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from sync.commands.status import collect
from tests.e2e.world import World

from .listing_tamper import install

ADA = ("ada@example.com", "+14155552671")
GRACE = ("grace@navy.example", "+12125550100")
LINUS = ("linus@kernel.example", "+15035550199")
ALAN = ("alan@bletchley.example", "+441234567890")


def seed(w: World) -> dict[str, list[str]]:
    return {
        "acquire": w.emulators["acquire"].seed(
            [
                {"first_name": "Ada", "last_name": "Lovelace", "email": ADA[0], "phone": ADA[1]},
                {"first_name": "Grace", "last_name": "Hopper", "email": GRACE[0], "phone": GRACE[1]},
            ]
        ),
        "ghl": w.emulators["ghl"].seed(
            [{"first_name": "Linus", "last_name": "Torvalds", "email": LINUS[0], "phone": LINUS[1]}]
        ),
        "comm100": w.emulators["comm100"].seed(
            [{"first_name": "Alan", "last_name": "Turing", "email": ALAN[0], "phone": ALAN[1]}]
        ),
    }


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


def assert_clean(w: World, *, skip: set[tuple[str, str]] = frozenset()) -> None:  # type: ignore[assignment]
    """No NUL or other control character, no NaN, no string over 1,000 characters in any
    contact of any platform (``skip``: (platform, id) of contacts planted hostile there)."""
    for name, emu in w.emulators.items():
        for raw in emu.records():
            if (name, str(raw.get("id"))) in skip:
                continue
            text = json.dumps(raw, default=str)
            assert "NaN" not in text and "Infinity" not in text, (name, raw)
            for s in strings(raw):
                assert not any(ord(c) < 0x20 and c not in "\t\n\r" for c in s), (name, raw)
                assert len(s) <= 1000, (name, len(s))


def hostile_acquire_items(body: Any) -> str:
    """Acquire's list with hostile items appended; returned as raw JSON text (NaN is literal)."""
    items = body["data"]["list"]
    items += [
        "not an object",
        {"fields": {"name": "No Id", "email": "noid@bad.example"}, "dateUpdated": "2024-01-01T00:00:00.000Z"},
        {"id": 7.0, "fields": {"name": "Float Id", "email": "floatid@bad.example"}},
        {"id": None, "fields": {"name": "Null Id", "email": "nullid@bad.example"}},
        {"id": 9001, "fields": {"name": "Nan Score", "email": "nan@bad.example"}, "score": "__NAN__"},
        {"id": 9002, "fields": {"name": "L" * 2000, "email": "longname@bad.example"}},
        {"id": 9003, "fields": {"name": "Big Payload", "email": "big@bad.example", "notes": "x" * 150_000}},
    ]
    return json.dumps(body).replace('"__NAN__"', "NaN")


def hostile_ghl_items(body: Any) -> str:
    body["contacts"].append(
        {
            "id": "badDate0000000000000",
            "firstName": "Bad",
            "lastName": "Date",
            "email": "baddate@bad.example",
            "dateUpdated": "last tuesday",
        }
    )
    return json.dumps(body)


def test_bad_records_are_quarantined_and_the_rest_syncs(world: World) -> None:
    ids = seed(world)
    # A NUL and other control characters inside a real GoHighLevel contact.
    linus = ids["ghl"][0]
    world.emulators["ghl"].contacts[linus]["lastName"] = "Tor\x00val\x07ds"
    install(world, "acquire", hostile_acquire_items)
    install(world, "ghl", hostile_ghl_items)

    reports = [world.backfill()] + [world.cycle() for _ in range(3)]
    for r in reports:
        assert r.status != "failed", r.error
        for name in ("acquire", "ghl", "comm100"):
            assert r.pulls[name].error is None, (name, r.pulls[name].error)
    assert world.cycle().write_calls() == 0  # quiet: the quarantined records are not replanned

    # Every good person is one contact on every platform; Linus's name arrives cleaned.
    world.assert_one_each([ADA, GRACE, LINUS, ALAN])
    for name in ("acquire", "comm100", "dmchamp"):
        (found,) = world.holding(name, email=LINUS[0], phone=LINUS[1])
        assert "Torvalds" in json.dumps(found["_raw"]), (name, found["_raw"])
    # None of the hostile records went anywhere.
    for email in ("noid", "floatid", "nullid", "nan", "longname", "big", "baddate"):
        for name in ("acquire", "ghl", "comm100"):
            assert not world.holding(name, email=f"{email}@bad.example"), (name, email)
    assert_clean(world, skip={("ghl", linus)})

    # Each is quarantined once (not once per cycle), with its reason, and status shows it.
    entries = world.store.staging.quarantined()
    reasons = {(q.connection, q.remote_id): q.reason for q in entries}
    by_conn = [q for q in entries if q.connection == "acquire"]
    text = " | ".join(q.reason for q in by_conn)
    assert "not an object" in text
    assert "no id" in text
    assert "7.0 is a float" in text
    assert "NaN" in reasons[("acquire", "9001")]
    assert "first_name" in reasons[("acquire", "9002")] or "1,000" in reasons[("acquire", "9002")]
    assert "100,000-byte maximum" in reasons[("acquire", "9003")]
    assert "last tuesday" in reasons[("ghl", "badDate0000000000000")]
    assert len(entries) == 8, [(q.connection, q.remote_id, q.reason) for q in entries]
    for q in entries:
        assert "\x00" not in q.raw and len(q.raw) <= 21_000
    status = collect(world.config, world.store)
    assert status["connections"]["acquire"]["quarantined"] == 7
    assert status["connections"]["ghl"]["quarantined"] == 1
    shown = json.dumps(status["connections"]["acquire"]["quarantined_records"])
    assert "7.0 is a float" in shown and "NaN" in shown


def test_a_nul_or_nan_in_a_stored_contact_never_fails_staging(world: World) -> None:
    """Stored in the emulator itself (no tampering): a NUL in a Comm100 name and a NaN-free but
    control-laden Acquire name are cleaned; PostgreSQL and SQLite both stage the page."""
    ids = seed(world)
    alan = ids["comm100"][0]
    world.emulators["comm100"].contacts[alan]["lastName"] = "Tu\x00ring"
    world.emulators["comm100"].contacts[alan]["name"] = "Alan Tu\x00ring"
    world.backfill()
    world.converge()
    world.assert_one_each([ADA, GRACE, LINUS, ALAN])
    assert_clean(world, skip={("comm100", alan)})
    for name in ("acquire", "ghl"):
        (found,) = world.holding(name, email=ALAN[0])
        assert "Turing" in json.dumps(found["_raw"])


def test_a_200_error_body_fails_that_pull_only(world: World) -> None:
    seed(world)
    world.backfill()
    world.converge()
    tamper = install(world, "ghl", lambda body: json.dumps({"statusCode": 400, "message": "locationId is invalid"}))
    newcomer = ("hedy@lamarr.example", "+13105550123")
    world.emulators["acquire"].seed(
        [{"first_name": "Hedy", "last_name": "Lamarr", "email": newcomer[0], "phone": newcomer[1]}]
    )
    report = world.cycle()
    assert report.status != "failed"
    error = report.pulls["ghl"].error or ""
    assert "contacts" in error and "locationId is invalid" in error, error
    assert report.pulls["acquire"].error is None and report.pulls["comm100"].error is None
    assert len(world.holding("comm100", email=newcomer[0])) == 1  # the others went on
    # A search answering 200 without a contacts key is an error too, not "nothing changed".
    tamper.rewrite = lambda body: json.dumps({"total": 0})
    report = world.cycle()
    assert "contacts" in (report.pulls["ghl"].error or "")
    tamper.active = False
    world.converge()
    world.assert_one_each([ADA, GRACE, LINUS, ALAN, newcomer])


def test_an_unreadable_page_fails_that_pull_only(world: World) -> None:
    seed(world)
    world.backfill()
    world.converge()
    deep = 200_000
    install(world, "comm100", lambda body: "[" * deep + "]" * deep)
    newcomer = ("hedy@lamarr.example", "+13105550123")
    world.emulators["ghl"].seed(
        [{"first_name": "Hedy", "last_name": "Lamarr", "email": newcomer[0], "phone": newcomer[1]}]
    )
    report = world.cycle()
    assert report.status != "failed"
    assert "cannot be read" in (report.pulls["comm100"].error or ""), report.pulls["comm100"].error
    assert report.pulls["ghl"].error is None and report.pulls["acquire"].error is None
    assert len(world.holding("acquire", email=newcomer[0])) == 1
