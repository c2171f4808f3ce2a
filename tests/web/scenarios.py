"""Store states the web tests start from, made by real cycles over the emulators."""

from __future__ import annotations

from tests.e2e.world import World
from tests.faults.tamper import Tamper, acquire_lists_only

ADA = "ada@example.com"
ANN = ("ann@example.com", "+14155550001")
BOB = ("bob@example.com", "+14155550001")


def seed_overlap(w: World) -> None:
    """The same people typed differently on each platform (as in tests/e2e)."""
    w.emulators["acquire"].seed(
        [
            {"first_name": "Ada", "last_name": "Lovelace", "email": "Ada@Example.com", "phone": "(415) 555-2671"},
            {"first_name": "Grace", "last_name": "Hopper", "email": "grace@navy.example", "phone": "+1 212 555 0100"},
            {"first_name": "Alan", "last_name": "Turing", "email": "alan@bletchley.example"},
        ]
    )
    w.emulators["ghl"].seed(
        [
            {"first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com", "phone": "+14155552671"},
            {
                "first_name": "Linus",
                "last_name": "Torvalds",
                "email": "linus@kernel.example",
                "phone": "+1 503 555 0199",
            },
        ]
    )
    w.emulators["comm100"].seed(
        [
            {"first_name": "Ada", "last_name": "Lovelace", "email": "ADA@EXAMPLE.COM"},
            {"first_name": "Grace", "last_name": "Hopper", "phone": "212-555-0100"},
        ]
    )
    w.emulators["dmchamp"].seed([{"first_name": "Grace", "last_name": "H", "phone": "+12125550100"}])


def conflict(w: World) -> int:
    """Converged, then Ada's last name edited on GoHighLevel and, later, on Comm100: one
    conflict on last_name (decided by the newest rule). Returns its id."""
    seed_overlap(w)
    w.backfill()
    w.converge()
    (g,) = w.holding("ghl", email=ADA)
    (c,) = w.holding("comm100", email=ADA)
    w.emulators["ghl"].external_edit(str(g["_raw"]["id"]), {"lastName": "Older"})
    w.emulators["comm100"].clock.advance(120)
    w.emulators["comm100"].external_edit(str(c["_raw"]["id"]), {"lastName": "Newer", "name": "Ada Newer"})
    w.cycle()
    rows = [r for r in w.store.status.conflicts() if r.field == "last_name"]
    assert rows, "no conflict recorded"
    return rows[0].id


def shared_phone(w: World) -> None:
    """Ann (GoHighLevel) and Bob (Acquire) share a phone but not an email: an ambiguous match,
    kept apart; GoHighLevel refuses Bob's create (its phone is taken): a failed write."""
    w.emulators["ghl"].seed([{"first_name": "Ann", "last_name": "One", "email": ANN[0], "phone": ANN[1]}])
    w.emulators["acquire"].seed(
        [
            {"first_name": "Bob", "last_name": "Two", "email": BOB[0], "phone": BOB[1]},
            {"first_name": "Cy", "last_name": "Three", "email": "cy@example.com", "phone": "+14155550003"},
        ]
    )
    report = w.backfill()
    assert report.status == "partial"


def held_deletes(w: World, n: int = 10, listed: int = 5) -> int:
    """``n`` people on Acquire, converged; then Acquire's scan lists only ``listed`` of them (a
    lying or partial answer, kept for the rest of the test): more than deletes.max_share
    missing at once, so the breaker holds the deletes. Returns how many are held."""
    w.emulators["acquire"].seed(n)
    w.backfill()
    w.converge()
    t = Tamper(w.emulators["acquire"].transport())
    w.engine.transports["acquire"] = t
    t.rule(acquire_lists_only(listed))
    w.cycle()
    held = w.store.held.counts().get("acquire", 0)
    assert held == n - listed, w.store.held.counts()
    return held
