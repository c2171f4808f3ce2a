"""Comm100's rate budget (300 requests per 5 minutes) goes only to what the sync needs: list
pages and the writes themselves. Written contacts are not read back one by one (the next pull
reads them a hundred to a page), and updates carry the contact's name instead of fetching it.

Counts come from the Comm100 emulator's own request log."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from connectors.comm100 import CONNECTOR as Comm100Connector
from sync.apply import Backoff
from sync.cycle import CycleRunner
from sync.store.models import Conflict, Person, RemoteRecord

from .test_sync import ADA, HUMANS, seed_overlap
from .world import World

CONTACTS = "/global/contacts"
PAGE = 100  # the connector's default page size


def comm100_requests(world: World, since: int) -> Counter[str]:
    """Comm100 requests after log position ``since``: list pages, single-contact GETs, searches
    (lookups) and writes."""
    out: Counter[str] = Counter()
    for entry in world.emulators["comm100"].request_log[since:]:
        path = entry.path.split("?", 1)[0]
        if entry.method != "GET":
            out["write"] += 1
        elif path.rstrip("/").endswith(CONTACTS):
            out["list"] += 1  # a page of the scan, or a lookup (both are the list endpoint)
        else:
            out["get"] += 1
    return out


def measured(world: World) -> None:
    """Record what contactsync probe measures on the default emulator: PUT merges, identities
    sent replace the contact's. (Unmeasured, an update reads the contact first to send a full
    representation, and reads it again when it drops an identity: tests/e2e/test_variants.py.)"""
    world.store.behaviours.record_findings(
        "comm100", [("comm100.put_semantics", "merge", "probe"), ("comm100.put_identities", "replace", "probe")]
    )


def live_persons(world: World) -> int:
    with world.store.engine.connect() as conn:
        return int(
            conn.execute(select(func.count()).select_from(Person).where(Person.merged_into.is_(None))).scalar_one()
        )


def comm100_records(world: World) -> int:
    with world.store.engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(RemoteRecord)
                .where(RemoteRecord.connection == "comm100", RemoteRecord.deleted_at.is_(None))
            ).scalar_one()
        )


def seed_many(world: World, n: int) -> list[tuple[str, str]]:
    """``n`` people on Acquire only: each becomes a Comm100 create."""
    people = [(f"crowd{i}@example.org", f"+1415666{i:04d}") for i in range(n)]
    world.emulators["acquire"].seed(
        [
            {"first_name": f"Crowd{i}", "last_name": "Member", "email": email, "phone": phone}
            for i, (email, phone) in enumerate(people)
        ]
    )
    return people


def test_backfill_then_a_quiet_cycle_spend_requests_on_pages_and_writes_only(world: World) -> None:
    seed_overlap(world)
    crowd = seed_many(world, 150)
    log = world.emulators["comm100"].request_log
    measured(world)

    start = len(log)
    report = world.backfill()
    assert report.status == "ok", report.counts()
    spent = comm100_requests(world, start)
    calls = report.applied.connections["comm100"].calls if report.applied else Counter()
    # No single-contact reads: no read-back after a write, no GET for the name of an update.
    assert spent["get"] == 0, spent
    assert spent["write"] == sum(calls.values()) - calls["lookup"] - calls["get"]
    assert spent["write"] >= len(crowd)  # every crowd member was created there
    # The backfill's pull is one scan of the two seeded contacts: one page.
    assert spent["list"] == 1, spent
    spent_backfill = spent
    persons = live_persons(world)
    records = comm100_records(world)
    contacts = len(world.emulators["comm100"].records())
    assert records == contacts

    # The next cycle re-reads every contact we wrote (the cursor is not moved past our own
    # writes) and finds nothing to do: zero writes anywhere, one request per page on Comm100.
    start = len(log)
    writes_before = world.write_requests()
    quiet = world.cycle()
    assert quiet.write_calls() == 0, quiet.counts()
    assert world.write_requests() == writes_before
    spent = comm100_requests(world, start)
    assert spent == Counter({"list": math.ceil(contacts / PAGE)}), spent
    assert quiet.pulls["comm100"].records == contacts  # all of them were read (and staged) again
    # Each contact we wrote came back changed (server stamps, identity ids) and read as the
    # snapshot we confirmed: an echo, cleared before matching, so nobody was reconciled.
    assert quiet.extra["echoes"] == {"comm100": spent_backfill["write"]}, quiet.extra
    assert quiet.plan is not None and quiet.plan.summary().get("comm100") is None
    # What was read back is the same people: no new person, no second Comm100 record.
    assert live_persons(world) == persons
    assert comm100_records(world) == records == len(world.emulators["comm100"].records())
    world.assert_one_each([*HUMANS, *crowd[:5], crowd[-1]])

    # And once more: nothing was left dirty.
    start = len(log)
    assert world.cycle().write_calls() == 0
    assert comm100_requests(world, start)["write"] == 0


def comm100_contact(world: World, email: str) -> dict[str, Any]:
    (contact,) = world.holding("comm100", email=email)
    return dict(contact["_raw"])


def identities(raw: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [i for i in raw["contactIdentities"] if str(i["contactIdentityType"]).lower() == kind.lower()]


def test_an_email_change_updates_the_comm100_identity_instead_of_adding_one(world: World) -> None:
    measured(world)
    seed_overlap(world)
    world.backfill()
    world.converge()
    before = comm100_contact(world, ADA[0])
    persons = live_persons(world)

    # Ada's email changes on Acquire: Comm100's contact gets the new one in place of the old.
    (ada,) = world.holding("acquire", email=ADA[0])
    world.emulators["acquire"].external_edit(str(ada["_raw"]["id"]), {"fields": {"email": "ada@byron.example"}})
    start = len(world.emulators["comm100"].request_log)
    world.converge()
    assert comm100_requests(world, start)["get"] == 0
    after = comm100_contact(world, "ada@byron.example")
    assert after["id"] == before["id"]
    assert [i["value"] for i in identities(after, "Email")] == ["ada@byron.example"]
    assert not world.holding("comm100", email=ADA[0])
    assert after["name"] == before["name"]  # the required name was sent as it was

    # And back the other way: an agent changes it in the Comm100 console.
    changed = [
        dict(i, value="ada@analytical.example") if str(i["contactIdentityType"]).lower() == "email" else i
        for i in after["contactIdentities"]
    ]
    world.emulators["comm100"].external_edit(after["id"], {"contactIdentities": changed})
    world.converge()
    final = comm100_contact(world, "ada@analytical.example")
    assert final["id"] == before["id"]
    assert [i["value"] for i in identities(final, "Email")] == ["ada@analytical.example"]
    for name in ("acquire", "ghl"):
        assert len(world.holding(name, email="ada@analytical.example")) == 1, name
        assert not world.holding(name, email="ada@byron.example"), name
    assert live_persons(world) == persons
    world.assert_one_each([("ada@analytical.example", ADA[1]), *HUMANS[1:]])


class EditsBefore(httpx.AsyncBaseTransport):
    """A platform emulator's transport, with someone editing a contact there in its console
    just before our first request of ``method`` to that contact arrives (after our pull: before
    our read by id with ``"GET"``, before our write with ``"PUT"``)."""

    def __init__(self, world: World, name: str, method: str, contact_id: str, changes: dict[str, Any]) -> None:
        self.emulator = world.emulators[name]
        self.inner = self.emulator.transport()
        self.method, self.contact_id, self.changes = method, contact_id, changes
        self.done = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == self.method and not self.done and request.url.path.endswith(self.contact_id):
            self.emulator.external_edit(self.contact_id, self.changes)
            self.done = True
        return await self.inner.handle_async_request(request)


def test_an_outside_edit_made_between_our_pull_and_our_update_is_kept(world: World) -> None:
    """Our update carries the changed keys plus the name the store last read, and a PUT leaves
    absent keys alone: an agent's edit of the first name made after our pull, before our write,
    survives it, and the next cycle's three-way merge carries it everywhere (PUT measured to
    merge: unmeasured, the full representation read just before the PUT would overwrite it)."""
    measured(world)
    seed_overlap(world)
    world.backfill()
    world.converge()
    target = comm100_contact(world, ADA[0])
    (ada_ghl,) = world.holding("ghl", email=ADA[0])
    world.emulators["ghl"].external_edit(str(ada_ghl["_raw"]["id"]), {"companyName": "Analytical Engines"})
    agent = EditsBefore(world, "comm100", "PUT", target["id"], {"firstName": "Augusta"})
    transports = {n: e.transport() for n, e in world.emulators.items()}
    world.engine = CycleRunner(
        world.config, world.store, transports={**transports, "comm100": agent}, backoff=Backoff(base_s=0.0)
    )
    start = len(world.emulators["comm100"].request_log)
    world.cycle()
    assert agent.done  # the company went to Comm100 with one PUT, after the agent's edit
    assert comm100_requests(world, start)["get"] == 0
    raw = world.emulators["comm100"].contacts[target["id"]]
    assert raw["company"] == "Analytical Engines" and raw["firstName"] == "Augusta"
    world.converge()
    for name in ("acquire", "ghl", "comm100"):
        (ada,) = world.holding(name, email=ADA[0])
        assert ada.get("first_name") == "Augusta", (name, ada)
        assert ada.get("company", "Analytical Engines") == "Analytical Engines", (name, ada)


def _unvouched(monkeypatch: pytest.MonkeyPatch) -> None:
    """Comm100's listing vouches for no contact: every update there is checked by a read."""
    caps = dataclasses.replace(Comm100Connector.capabilities, listing_current=False)
    monkeypatch.setattr(Comm100Connector, "capabilities", caps)


def _requests_for(world: World, since: int, contact_id: str) -> list[str]:
    return [
        e.method
        for e in world.emulators["comm100"].request_log[since:]
        if e.path.split("?", 1)[0].rstrip("/").endswith(contact_id)
    ]


@pytest.mark.parametrize("agent", [False, True])
def test_the_read_before_an_update_is_the_one_its_full_representation_is_built_on(
    world: World, monkeypatch: pytest.MonkeyPatch, agent: bool
) -> None:
    """PUT semantics unmeasured: an update sends the contact's full representation, read just
    before. Where the pull cannot vouch for the contact, that read is also the check that the
    fields the update writes still hold what it was planned against: one GET, then the PUT
    built on it. An agent's edit of the written field that the read shows stops the write (the
    person is planned again), exactly as before."""
    seed_overlap(world)
    world.backfill()
    world.converge()
    _unvouched(monkeypatch)
    target = comm100_contact(world, ADA[0])
    (ada_ghl,) = world.holding("ghl", email=ADA[0])
    world.emulators["ghl"].external_edit(str(ada_ghl["_raw"]["id"]), {"companyName": "Analytical Engines"})
    transports = {n: e.transport() for n, e in world.emulators.items()}
    if agent:
        reader = EditsBefore(world, "comm100", "GET", target["id"], {"company": "Difference Engines"})
        transports["comm100"] = reader  # type: ignore[assignment]
    world.engine = CycleRunner(world.config, world.store, transports=transports, backoff=Backoff(base_s=0.0))
    start = len(world.emulators["comm100"].request_log)
    report = world.cycle()
    raw = world.emulators["comm100"].contacts[target["id"]]
    if not agent:
        assert _requests_for(world, start, target["id"]) == ["GET", "PUT"]
        assert raw["company"] == "Analytical Engines"
        assert raw["firstName"] == target["firstName"] and raw["name"] == target["name"]
    else:
        assert reader.done
        assert _requests_for(world, start, target["id"]) == ["GET"]  # read, found changed: nothing sent
        assert raw["company"] == "Difference Engines"
        assert report.applied is not None and report.applied.connections["comm100"].superseded >= 1
    if not agent:
        # (With the agent's edit, what the next cycles make of the two competing companies is
        # reconcile's business, not this test's.)
        world.converge()
        companies = {name: world.holding(name, email=ADA[0])[0].get("company") for name in ("ghl", "comm100")}
        assert len(set(companies.values())) == 1, companies  # Acquire holds no company


def _open_conflicts(world: World, field_name: str) -> list[Conflict]:
    """Conflicts on ``field_name`` left for a person: flagged for review, not resolved."""
    with world.store.engine.connect() as conn:
        return list(
            conn.execute(
                select(Conflict).where(
                    Conflict.field == field_name, Conflict.needs_review.is_(True), Conflict.resolved_at.is_(None)
                )
            ).all()
        )


@pytest.mark.parametrize(
    ("edited", "read", "field_name", "edit", "late"),
    [
        # Issue 14: GoHighLevel's company (set on create only there) against an agent's edit
        # of Comm100's, seen by the read before the Comm100 update.
        ("ghl", "comm100", "company", {"companyName": "Analytical Engines"}, {"company": "Difference Engines"}),
        # A field both can update: the decided value must reach both.
        ("ghl", "comm100", "first_name", {"firstName": "Augusta"}, {"firstName": "Adelaide"}),
        # The read before a GoHighLevel update (its search never vouches) sees an edit made there.
        ("comm100", "ghl", "first_name", {"firstName": "Augusta"}, {"firstName": "Adelaide"}),
    ],
)
def test_a_late_edit_the_read_stops_ends_in_one_value_everywhere_or_an_open_conflict(
    world: World,
    monkeypatch: pytest.MonkeyPatch,
    edited: str,
    read: str,
    field_name: str,
    edit: dict[str, Any],
    late: dict[str, Any],
) -> None:
    """An edit on one platform is planned to the other; just before our read by id there
    (before the update), someone edits the same field there, and the read stops the write.
    The next cycles decide the two competing values as a conflict. Whatever they decide, the
    platforms never disagree for good in silence: the same value everywhere, or an open
    conflict left for a person (issue 14: GoHighLevel takes a company on create only, so a
    decision for Comm100's company can never reach it)."""
    seed_overlap(world)
    world.backfill()
    world.converge()
    _unvouched(monkeypatch)
    (source,) = world.holding(edited, email=ADA[0])
    (target,) = world.holding(read, email=ADA[0])
    world.emulators[edited].external_edit(str(source["_raw"]["id"]), edit)
    transports = {n: e.transport() for n, e in world.emulators.items()}
    reader = EditsBefore(world, read, "GET", str(target["_raw"]["id"]), late)
    transports[read] = reader  # type: ignore[assignment]
    world.engine = CycleRunner(world.config, world.store, transports=transports, backoff=Backoff(base_s=0.0))
    report = world.cycle()
    assert reader.done  # the late edit was made, and the read saw it: nothing sent there
    assert report.applied is not None and report.applied.connections[read].superseded >= 1
    world.engine = CycleRunner(
        world.config,
        world.store,
        transports={n: e.transport() for n, e in world.emulators.items()},
        backoff=Backoff(base_s=0.0),
    )
    world.converge()
    world.converge()  # and it stays so
    held = {name: world.holding(name, email=ADA[0])[0].get(field_name) for name in ("ghl", "comm100")}
    if len(set(held.values())) == 1:
        assert not _open_conflicts(world, field_name), held
        if field_name == "first_name":
            (acquire,) = world.holding("acquire", email=ADA[0])
            assert acquire.get("first_name") in held.values(), acquire
    else:
        assert len(_open_conflicts(world, field_name)) == 1, held  # left for a person, once
