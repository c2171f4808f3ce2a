"""The apply executor against the platform emulators (in process, real HTTP through ASGI) and a
real store: creates, record-level failures, settling a create left in flight, a configuration
error stopping one connection only, tag calls on GoHighLevel."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import SecretStr
from sqlalchemy import select

from connectors.acquire import CONNECTOR as Acquire
from connectors.acquire import EMULATOR as AcquireEmulator
from connectors.dmchamp import CONNECTOR as DmChamp
from connectors.dmchamp import EMULATOR as DmChampEmulator
from connectors.gohighlevel import CONNECTOR as Ghl
from connectors.gohighlevel import EMULATOR as GhlEmulator
from sync.apply import Backoff, Target, apply_outbox, intent_for
from sync.plan import OpKind, PlanOp
from sync.store import Store
from sync.store.models import OutboxStatus, Person, RemoteRecord
from sync.store.outbox import OutboxStore

NO_WAIT = Backoff(base_s=0.0)


def _people(store: Store, n: int) -> list[int]:
    with store.session() as s:
        ps = [Person(fields={}, version=0) for _ in range(n)]
        s.add_all(ps)
        s.flush()
        return [p.id for p in ps]


def _acq_create(pid: int, email: str, name: str = "Ada Lovelace") -> PlanOp:
    fields = {"first_name": name.split()[0], "last_name": name.split()[1], "emails": (email,)}
    return PlanOp(
        "acq", pid, OpKind.CREATE, fields=fields, confirms=fields, payload={"fields": {"name": name, "email": email}}
    )


def _run(outbox: OutboxStore, targets: list[Target], **kw: Any):  # type: ignore[no-untyped-def]
    async def go():  # type: ignore[no-untyped-def]
        try:
            return await apply_outbox(outbox, targets, backoff=NO_WAIT, **kw)
        finally:
            for t in targets:
                await t.connector.aclose()

    return asyncio.run(go())


def test_creates_and_one_record_error_do_not_stop_the_rest(store: Store) -> None:
    emu = AcquireEmulator()
    outbox = store.outbox
    pids = _people(store, 3)
    outbox.enqueue(
        [
            intent_for(_acq_create(pids[0], "ada@example.com")),
            intent_for(_acq_create(pids[1], "not-an-email")),
            intent_for(_acq_create(pids[2], "grace@example.com", "Grace Hopper")),
        ]
    )
    report = _run(outbox, [Target("acq", Acquire(emu.connection_settings(name="acq"), emu.transport()))])
    r = report.connections["acq"]
    assert (r.done, r.failed, r.calls["create"]) == (2, 1, 3)
    assert sorted(c["fields"]["email"] for c in emu.records()) == ["ada@example.com", "grace@example.com"]
    failed = outbox.items([OutboxStatus.FAILED.value])
    assert len(failed) == 1 and "email" in (failed[0].last_error or "") and failed[0].next_attempt_at is not None
    with store.session() as s:
        linked = s.scalars(select(RemoteRecord).where(RemoteRecord.connection == "acq")).all()
        assert sorted(r.person_id for r in linked) == [pids[0], pids[2]]


def test_in_flight_create_is_settled_by_lookup_not_repeated(store: Store) -> None:
    emu = AcquireEmulator()
    outbox = store.outbox
    (pid,) = _people(store, 1)
    outbox.enqueue([intent_for(_acq_create(pid, "ada@example.com"))])
    item = outbox.due("acq")[0]
    outbox.mark_in_flight([item.id])

    # The call reached the platform, then the worker died before recording the result.
    async def sent_before_crash() -> str:
        c = Acquire(emu.connection_settings(name="acq"), emu.transport())
        try:
            return (await c.create(item.body)).remote_id
        finally:
            await c.aclose()

    remote_id = asyncio.run(sent_before_crash())
    report = _run(outbox, [Target("acq", Acquire(emu.connection_settings(name="acq"), emu.transport()))])
    r = report.connections["acq"]
    assert r.settled == 1 and r.calls["create"] == 0 and r.calls["lookup"] == 1
    assert len(emu.records()) == 1
    done = outbox.get(item.id)
    assert done is not None and done.status == "done" and done.result_remote_id == str(remote_id)


def test_in_flight_create_that_never_arrived_is_created_once(store: Store) -> None:
    emu = AcquireEmulator()
    outbox = store.outbox
    (pid,) = _people(store, 1)
    outbox.enqueue([intent_for(_acq_create(pid, "ada@example.com"))])
    outbox.mark_in_flight([outbox.due("acq")[0].id])
    report = _run(outbox, [Target("acq", Acquire(emu.connection_settings(name="acq"), emu.transport()))])
    assert report.connections["acq"].calls["create"] == 1 and len(emu.records()) == 1


def test_configuration_error_stops_only_that_connection(store: Store) -> None:
    acq, dm = AcquireEmulator(), DmChampEmulator()
    outbox = store.outbox
    p1, p2 = _people(store, 2)
    fields = {"first_name": "Ada", "phones": ("+14155552671",)}
    outbox.enqueue(
        [
            intent_for(_acq_create(p1, "ada@example.com")),
            intent_for(
                PlanOp(
                    "dm",
                    p2,
                    OpKind.CREATE,
                    fields=fields,
                    confirms=fields,
                    payload={"phoneNumber": "+14155552671", "firstName": "Ada"},
                )
            ),
        ]
    )
    bad = acq.connection_settings(name="acq", credentials={"api_key": SecretStr("wrong")})
    report = _run(
        outbox,
        [
            Target("acq", Acquire(bad, acq.transport())),
            Target("dm", DmChamp(dm.connection_settings(name="dm"), dm.transport())),
        ],
    )
    assert report.connections["acq"].stopped and report.connections["dm"].done == 1
    pending = outbox.due("acq")
    assert len(pending) == 1 and pending[0].attempts == 0
    assert acq.records() == [] and len(dm.records()) == 1


def test_dmchamp_create_adopts_the_existing_contact(store: Store) -> None:
    dm = DmChampEmulator()
    dm.seed([{"first_name": "Old", "last_name": "Name", "phone": "+14155552671"}])
    outbox = store.outbox
    (pid,) = _people(store, 1)
    fields = {"first_name": "Ada", "phones": ("+14155552671",)}
    outbox.enqueue(
        [
            intent_for(
                PlanOp(
                    "dm",
                    pid,
                    OpKind.CREATE,
                    fields=fields,
                    confirms=fields,
                    payload={"phoneNumber": "+14155552671", "firstName": "Ada"},
                )
            )
        ]
    )
    report = _run(outbox, [Target("dm", DmChamp(dm.connection_settings(name="dm"), dm.transport()))])
    assert report.connections["dm"].done == 1
    records = dm.records()
    assert len(records) == 1 and records[0]["firstName"] == "Ada"


def test_ghl_update_sends_tags_through_their_endpoints(store: Store) -> None:
    from connectors.base import Capabilities

    emu = GhlEmulator()
    (rid,) = emu.seed([{"first_name": "Ada", "email": "ada@example.com", "tags": ["old", "vip"]}])
    outbox = store.outbox
    (pid,) = _people(store, 1)
    connector = Ghl(emu.connection_settings(name="ghl"), emu.transport())
    caps: Capabilities = connector.capabilities
    op = PlanOp(
        "ghl",
        pid,
        OpKind.UPDATE,
        remote_id=rid,
        fields={"first_name": "Augusta", "tags": frozenset({"vip", "new"})},
        before={"first_name": "Ada", "tags": frozenset({"vip", "old"})},
        confirms={"first_name": "Augusta", "tags": frozenset({"vip", "new"})},
        payload={"firstName": "Augusta", "tags": ["new", "vip"]},
    )
    outbox.enqueue([intent_for(op, caps)])
    report = _run(outbox, [Target("ghl", connector)])
    r = report.connections["ghl"]
    assert (r.calls["update"], r.calls["add_tags"], r.calls["remove_tags"]) == (1, 1, 1)
    rec = emu.records()[0]
    assert rec["firstName"] == "Augusta" and sorted(rec["tags"]) == ["new", "vip"]


def test_a_feed_sends_each_committed_slice_while_planning_runs(store: Store) -> None:
    """With a PlanFeed the push starts on the first committed slice; a person who still had a
    row from an earlier run waits for the final pass (planning may supersede it meanwhile)."""
    from sync.apply import PlanFeed

    emu = AcquireEmulator()
    outbox = store.outbox
    old, first, later = _people(store, 3)
    outbox.enqueue([intent_for(_acq_create(old, "stale@example.com"))], run_id=1)
    target = Target("acq", Acquire(emu.connection_settings(name="acq"), emu.transport()))
    seen_before_finish: list[str] = []

    async def go() -> Any:
        feed = PlanFeed(run_id=2)
        pushing = asyncio.create_task(apply_outbox(outbox, [target], backoff=NO_WAIT, feed=feed))
        # Slice one: a new person.
        await asyncio.to_thread(outbox.enqueue, [intent_for(_acq_create(first, "first@example.com"))], 2)
        feed.notify()
        for _ in range(200):  # sent while "planning" is still running
            if emu.records():
                break
            await asyncio.sleep(0.01)
        seen_before_finish.extend(c["fields"]["email"] for c in emu.records())
        # Slice two: supersedes the old person's row, and another new person.
        await asyncio.to_thread(
            outbox.enqueue,
            [intent_for(_acq_create(old, "fresh@example.com")), intent_for(_acq_create(later, "later@example.com"))],
            2,
        )
        feed.notify(finished=True)
        try:
            return await pushing
        finally:
            await target.connector.aclose()

    report = asyncio.run(go())
    assert seen_before_finish == ["first@example.com"]
    assert report.connections["acq"].done == 3
    assert sorted(c["fields"]["email"] for c in emu.records()) == [
        "first@example.com",
        "fresh@example.com",
        "later@example.com",
    ]
    assert [i.body["fields"]["email"] for i in outbox.items([OutboxStatus.SUPERSEDED.value])] == ["stale@example.com"]
