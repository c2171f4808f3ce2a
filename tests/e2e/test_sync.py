"""End to end over the four emulators: backfill of overlapping data, edits travelling, the
Comm100 merge, conflicts, DM Champ lookups, record-level failures and quiet cycles."""

from __future__ import annotations

from pathlib import Path

import pytest

from sync.store.models import OutboxStatus

from .world import World, make_emulators

ADA = ("ada@example.com", "+14155552671")
GRACE = ("grace@navy.example", "+12125550100")
ALAN = ("alan@bletchley.example", None)
LINUS = ("linus@kernel.example", "+15035550199")
HUMANS = [ADA, GRACE, ALAN, LINUS]


def seed_overlap(w: World) -> None:
    """The same people typed differently on each platform."""
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


def test_backfill_leaves_one_contact_per_human_everywhere(world: World) -> None:
    seed_overlap(world)
    report = world.backfill()
    assert report.status == "ok", report.counts()
    world.converge()
    world.assert_one_each(HUMANS)
    # Alan has no phone: DM Champ cannot hold him, and says so.
    excluded = world.store.outbox.items([OutboxStatus.EXCLUDED.value], connection="dmchamp")
    assert len(excluded) == 1 and "phone" in (excluded[0].last_error or "")
    # The run is in the runs table with its counts.
    runs = world.store.runs.recent_runs()
    assert runs[-1].kind == "backfill" and runs[-1].counts["pull"]["acquire"]["records"] == 3


def test_quiet_cycle_makes_no_write_calls(world: World) -> None:
    seed_overlap(world)
    world.backfill()
    world.converge()
    before = world.write_requests()
    report = world.cycle()
    assert report.write_calls() == 0
    assert world.write_requests() == before


def test_an_edit_on_any_platform_reaches_the_others(world: World) -> None:
    seed_overlap(world)
    world.backfill()
    world.converge()
    edits = [
        ("acquire", {"fields": {"name": "Ada Byron"}}, "Byron"),
        ("ghl", {"lastName": "King"}, "King"),
        ("comm100", {"lastName": "Lovelace-King", "name": "Ada Lovelace-King"}, "Lovelace-King"),
    ]
    for platform, change, expected in edits:
        (target,) = world.holding(platform, email=ADA[0])
        world.emulators[platform].external_edit(str(target["_raw"]["id"]), change)
        world.converge()
        for name in ("acquire", "ghl", "comm100", "dmchamp"):
            (ada,) = world.holding(name, phone=ADA[1]) if name == "dmchamp" else world.holding(name, email=ADA[0])
            assert ada.get("last_name") == expected, (platform, name, ada)


def test_comm100_merge_is_carried_to_the_other_platforms(world: World) -> None:
    world.emulators["comm100"].seed(
        [
            {"first_name": "Alan", "last_name": "Turing", "email": "alan@bletchley.example", "phone": "+441234567890"},
            {
                "first_name": "Alan",
                "last_name": "Turing",
                "email": "turing@cambridge.example",
                "phone": "+441234567891",
            },
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
    # Acquire merges natively: one contact left, holding both addresses.
    (acq,) = world.contacts("acquire")
    assert set(acq["emails"]) == {"alan@bletchley.example", "turing@cambridge.example"}
    # GoHighLevel cannot merge: the merged-away contact is tagged (merges.fallback: tag), and
    # the survivor carries the merged person's primary email.
    ghl = world.contacts("ghl")
    tagged = [c for c in ghl if "contactsync:merged" in (c.get("tags") or ())]
    live = [c for c in ghl if c not in tagged]
    assert len(tagged) == 1 and len(live) == 1
    assert live[0]["emails"][0] in {"alan@bletchley.example", "turing@cambridge.example"}
    # Nothing was deleted anywhere.
    assert len(world.contacts("dmchamp")) == 2


def edit_ada_on_two_sides(world: World) -> None:
    """Converged, then Ada's last name edited on GoHighLevel and, two minutes later, on Comm100."""
    seed_overlap(world)
    world.backfill()
    world.converge()
    (g,) = world.holding("ghl", email=ADA[0])
    (c,) = world.holding("comm100", email=ADA[0])
    world.emulators["ghl"].external_edit(str(g["_raw"]["id"]), {"lastName": "Older"})
    world.emulators["comm100"].clock.advance(120)
    world.emulators["comm100"].external_edit(str(c["_raw"]["id"]), {"lastName": "Newer", "name": "Ada Newer"})


def test_conflicting_edits_follow_the_newest_policy(world: World) -> None:
    edit_ada_on_two_sides(world)
    report = world.cycle()
    decided = [x for x in (report.plan.conflicts if report.plan else []) if x.field == "last_name"]
    assert len(decided) == 1 and decided[0].decision == "Newer" and decided[0].rule.startswith("newest")
    world.converge()
    for name in ("acquire", "ghl", "comm100"):
        (ada,) = world.holding(name, email=ADA[0])
        assert ada["last_name"] == "Newer", name
    rows = world.store.status.conflicts()
    assert any(r.field == "last_name" and r.decision == "Newer" for r in rows)


def test_dmchamp_contacts_are_found_by_lookup_and_never_duplicated(world: World) -> None:
    seed_overlap(world)
    world.backfill()
    world.converge()
    # A second full backfill, and a store that forgot the DM Champ links, still find them.
    world.backfill()
    world.converge()
    for _email, phone in HUMANS:
        if phone:
            assert len(world.holding("dmchamp", phone=phone)) == 1
    assert len(world.emulators["dmchamp"].records()) == 3


def test_record_level_failure_is_kept_and_does_not_stop_the_cycle(db_url: str, tmp_path: Path) -> None:
    # Two people share a phone (weak key, different emails: not merged). GoHighLevel refuses a
    # second contact with the same phone: that one create fails, everything else goes through.
    w = World(db_url, tmp_path, emulators=make_emulators())
    try:
        w.emulators["ghl"].seed(
            [{"first_name": "Ann", "last_name": "One", "email": "ann@example.com", "phone": "+14155550001"}]
        )
        w.emulators["acquire"].seed(
            [
                {"first_name": "Bob", "last_name": "Two", "email": "bob@example.com", "phone": "+14155550001"},
                {"first_name": "Cy", "last_name": "Three", "email": "cy@example.com", "phone": "+14155550003"},
            ]
        )
        report = w.backfill()
        assert report.status == "partial"
        failed = w.store.outbox.items([OutboxStatus.FAILED.value])
        assert len(failed) == 1 and failed[0].connection == "ghl"
        assert "already person" in (failed[0].last_error or "")
        assert len(w.holding("ghl", email="cy@example.com")) == 1
        from sync.commands.status import collect

        status = collect(w.config, w.store)
        assert status["connections"]["ghl"]["failed"] == 1
        assert "already person" in status["connections"]["ghl"]["failed_writes"][0]["error"]
        # DM Champ is keyed by phone: one of the two gets the contact, the other is refused.
        assert len(w.holding("dmchamp", phone="+14155550001")) == 1
    finally:
        w.close()


def test_a_connection_added_to_the_profile_later_receives_everyone(world: World) -> None:
    # Three platforms sync for a while; then GoHighLevel joins the profile. Its own contacts are
    # new records, but the people it does not hold yet changed nowhere: a plan of only what
    # changed would never create them there.
    seed_overlap(world)
    world.engine.config = world.config.model_copy(
        update={
            "profiles": {
                "default": world.config.effective_profiles()["default"].model_copy(
                    update={"connections": ["acquire", "dmchamp", "comm100"]}
                )
            }
        }
    )
    world.backfill()
    world.converge()
    assert world.holding("ghl", email=ALAN[0]) == []
    world.engine.config = world.config  # every connection again
    report = world.cycle()
    assert report.joined == ["ghl"]
    world.converge()
    world.assert_one_each(HUMANS)
    # Once planned, it is an ordinary member: nothing replanned, nothing written.
    quiet = world.cycle()
    assert quiet.joined == [] and quiet.write_calls() == 0


def test_a_backfill_planned_in_worker_processes_converges_as_one_planned_here(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planning in two worker processes (every plan large enough, slices of two persons) while
    the push sends each committed slice: one contact per human everywhere, then quiet."""
    import sync.plan.build
    import sync.plan.pool

    monkeypatch.setattr(sync.plan.pool, "PARALLEL_FROM", 1)
    monkeypatch.setattr(sync.plan.build, "PARALLEL_SLICE", 2)
    pooled: list[int] = []  # slices handed to workers, per plan
    real = sync.plan.pool.plan_in_workers

    def counting(*args: object, **kwargs: object) -> None:
        pooled.append(len(args[5]))  # type: ignore[arg-type]
        real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sync.plan.pool, "plan_in_workers", counting)
    world = World(db_url, tmp_path, extra={"planning": {"workers": 2}})
    try:
        seed_overlap(world)
        report = world.backfill()
        assert report.status == "ok", report.counts()
        assert pooled and pooled[0] >= 2  # the backfill's plan went to the workers, in slices
        assert report.queued is not None and report.queued.added > 0  # counted from the workers
        world.converge()
        world.assert_one_each(HUMANS)
        before = world.write_requests()
        assert world.cycle().write_calls() == 0 and world.write_requests() == before
    finally:
        world.close()
