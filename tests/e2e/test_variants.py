"""The end-to-end convergence scenario over the variant matrix (tests/matrix.py): under every
plausible reading of the platforms' documentation, a backfill of overlapping people converges
to one contact per human everywhere, edits made on any platform reach the others and are never
reverted, nothing is deleted, and quiet cycles make no writes. A field a variant makes
impossible to sync is reported not writable on that connection, and left alone.

Assertions go through the emulators' own views of their contacts."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from matrix import cases

from .test_sync import ADA, HUMANS, seed_overlap
from .world import World

CASES = cases()


@pytest.fixture(params=[c[1] for c in CASES], ids=[c[0] for c in CASES])
def variant_world(request: pytest.FixtureRequest, db_url: str, tmp_path: Path) -> Iterator[World]:
    variants: Mapping[str, str] = request.param
    w = World(db_url, tmp_path, variants=variants)
    w.variants = dict(variants)  # type: ignore[attr-defined]
    yield w
    w.close()


def _counts(world: World) -> dict[str, int]:
    return {n: len(e.records()) for n, e in world.emulators.items()}


def _the(world: World, name: str) -> dict:
    found = world.holding(name, phone=ADA[1]) if name == "dmchamp" else world.holding(name, email=ADA[0])
    assert len(found) == 1, (name, found)
    return found[0]


def test_the_scenario_converges_under_the_variant(variant_world: World) -> None:
    world = variant_world
    seed_overlap(world)
    world.backfill()
    world.converge()
    world.assert_one_each(HUMANS)
    counts = _counts(world)
    unwritable = {r.connection: set() for r in world.store.behaviours.unwritable_rows()}
    for r in world.store.behaviours.unwritable_rows():
        unwritable[r.connection].add(r.field)

    # Names were never erased (a partial PUT under replace semantics would).
    for c in world.contacts("comm100"):
        assert c.get("first_name") and c.get("last_name"), c["_raw"]
    ada_c100 = _the(world, "comm100")
    assert ada_c100["first_name"] == "Ada" and ada_c100["last_name"] == "Lovelace"

    # An edit on each platform reaches the others (Comm100's through an incremental pull).
    edits = [
        ("acquire", {"fields": {"name": "Ada Byron"}}, "Byron"),
        ("ghl", {"lastName": "King"}, "King"),
        ("comm100", {"lastName": "Lovelace-King", "name": "Ada Lovelace-King"}, "Lovelace-King"),
    ]
    for platform, change, expected in edits:
        target = _the(world, platform)
        world.emulators[platform].external_edit(str(target["_raw"]["id"]), change)
        world.converge()
        for name in ("acquire", "ghl", "comm100", "dmchamp"):
            assert _the(world, name).get("last_name") == expected, (platform, name)

    # A company set on GoHighLevel is never reverted by a platform that ignores it.
    ghl_ada = _the(world, "ghl")
    world.emulators["ghl"].external_edit(str(ghl_ada["_raw"]["id"]), {"companyName": "Analytical Engines"})
    world.converge()
    world.converge()
    assert _the(world, "ghl").get("company") == "Analytical Engines"
    assert _the(world, "acquire").get("company") in (None, "Analytical Engines")
    c100 = _the(world, "comm100")
    assert c100.get("company") == "Analytical Engines" or "company" in world.store.behaviours.unwritable("comm100")

    # Nothing deleted, nothing duplicated, and quiet cycles are quiet (no endless rewrites).
    assert _counts(world) == counts
    world.assert_one_each(HUMANS)
    before = world.write_requests()
    assert world.cycle().write_calls() == 0
    assert world.cycle().write_calls() == 0
    assert world.write_requests() == before

    # A new phone set on GoHighLevel stays there and reaches Acquire; a Comm100 that ignores
    # phones never reads back as an edit reverting it (it is reported not writable there).
    new_phone = "+14155559999"
    ghl_ada = _the(world, "ghl")
    world.emulators["ghl"].external_edit(str(ghl_ada["_raw"]["id"]), {"phone": new_phone})
    world.converge()
    world.converge()
    assert new_phone in (_the(world, "ghl").get("phones") or ())
    assert new_phone in (_the(world, "acquire").get("phones") or ())
    c100_phones = _the(world, "comm100").get("phones") or ()
    assert new_phone in c100_phones or "phones" in world.store.behaviours.unwritable("comm100")
    assert world.cycle().write_calls() == 0
    del unwritable


def test_a_comm100_merge_converges_under_the_variant(variant_world: World) -> None:
    """An agent merges two contacts on Comm100: carried to Acquire (a native merge, whatever
    its result shape), GoHighLevel (tagged) and DM Champ (nothing deleted); no endless rewrites."""
    world = variant_world
    alan = ("alan@bletchley.example", "+441234567890")
    turing = ("turing@cambridge.example", "+441234567891")
    world.emulators["comm100"].seed(
        [
            {"first_name": "Alan", "last_name": "Turing", "email": alan[0], "phone": alan[1]},
            {"first_name": "Alan", "last_name": "Turing", "email": turing[0], "phone": turing[1]},
        ]
    )
    world.backfill()
    world.converge()
    for name in ("acquire", "ghl", "comm100", "dmchamp"):
        assert len(world.contacts(name)) == 2, name
    c100 = world.emulators["comm100"]
    survivor, loser = (str(c["_raw"]["id"]) for c in sorted(world.contacts("comm100"), key=lambda c: c["emails"][0]))
    c100.merge_contacts(survivor, loser)  # type: ignore[attr-defined]
    world.converge()
    # Acquire merged natively: one contact, holding at least the survivor's primary email (the
    # loser's details are kept or not, as the variant has it).
    (acq,) = world.contacts("acquire")
    assert set(acq["emails"]) & {alan[0], turing[0]}
    if world.variants.get("acquire.merge_result", "other_fields") == "other_fields":  # type: ignore[attr-defined]
        assert set(acq["emails"]) == {alan[0], turing[0]}
    ghl = world.contacts("ghl")
    live = [c for c in ghl if "contactsync:merged" not in (c.get("tags") or ())]
    assert len(live) == 1 and len(ghl) == 2
    assert len(world.contacts("dmchamp")) == 2
    assert world.cycle().write_calls() == 0


def test_fields_a_platform_ignores_are_reported_not_writable_and_left_alone(db_url: str, tmp_path: Path) -> None:
    """Comm100 ignoring phone/company/address (the strictest reading of seed 004): the first
    write shows it, status reports each such field on that connection with its evidence, the
    next cycle's connector is told (never written again), and the other platforms keep them."""
    import io

    from rich.console import Console

    from sync.commands.status import show

    world = World(db_url, tmp_path, variants={"comm100.undocumented_fields": "ignored"})
    try:
        seed_overlap(world)
        world.backfill()
        world.converge()
        rows = {r.field: r.evidence for r in world.store.behaviours.unwritable_rows("comm100")}
        assert "phones" in rows and "the platform holds" in rows["phones"]
        assert not world.store.behaviours.unwritable_rows("acquire")
        assert not world.store.behaviours.unwritable_rows("ghl")
        data = show(world.config, as_json=True, console=Console(file=io.StringIO()))
        assert {u["field"] for u in data["connections"]["comm100"]["unwritable"]} == set(rows)
        text = io.StringIO()
        show(world.config, console=Console(file=text, width=300))
        assert "not writable comm100 phones" in text.getvalue()
        connector = world.engine.connector("comm100")
        assert "phones" in connector.capabilities.unwritable_fields
        # Ada's phone is on every other platform, and nothing is sent to Comm100 again.
        for name in ("acquire", "ghl", "dmchamp"):
            assert world.holding(name, phone=ADA[1]), name
        puts = sum(1 for e in world.emulators["comm100"].request_log if e.method in ("PUT", "POST"))
        assert world.cycle().write_calls() == 0
        assert sum(1 for e in world.emulators["comm100"].request_log if e.method in ("PUT", "POST")) == puts
    finally:
        world.close()
