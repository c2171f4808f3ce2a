"""The outbox on a real store: intents, superseding, claiming, the result transaction, backoff."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select

from sync.apply import intent_for
from sync.canonical import fields_to_json
from sync.plan import OpKind, PlanOp
from sync.store import Store
from sync.store.models import IdentityKey, OutboxStatus, Person, RemoteRecord, utcnow
from sync.store.outbox import Completion, Failure
from sync.store.snapshots import fields_hash


def _person(store: Store) -> int:
    with store.session() as s:
        p = Person(fields={}, version=0)
        s.add(p)
        s.flush()
        return p.id


def _create(pid: int, name: str = "Ada") -> PlanOp:
    fields = {"first_name": name, "emails": ("ada@example.com",), "phones": ("+14155552671",)}
    return PlanOp("acq", pid, OpKind.CREATE, fields=fields, confirms=fields, payload={"fields": {"name": name}})


def test_enqueue_keeps_identical_and_supersedes_changed(store: Store) -> None:
    outbox = store.outbox
    pid = _person(store)
    first = outbox.enqueue([intent_for(_create(pid))])
    assert first.added == 1
    again = outbox.enqueue([intent_for(_create(pid))])
    assert (again.added, again.kept) == (0, 1)
    changed = outbox.enqueue([intent_for(_create(pid, "Augusta"))])
    assert (changed.added, changed.superseded) == (1, 1)
    due = outbox.due("acq")
    assert [i.body for i in due] == [{"fields": {"name": "Augusta"}}]
    assert due[0].keys == {"email": "ada@example.com", "phone": "+14155552671"}


def test_create_in_flight_is_never_queued_twice(store: Store) -> None:
    outbox = store.outbox
    pid = _person(store)
    outbox.enqueue([intent_for(_create(pid))])
    outbox.mark_in_flight([i.id for i in outbox.due("acq")])
    res = outbox.enqueue([intent_for(_create(pid, "Other"))])
    assert res.skipped_in_flight == 1 and res.added == 0
    assert outbox.due("acq") == []
    assert [i.status for i in outbox.in_flight("acq")] == [OutboxStatus.IN_FLIGHT.value]


def test_result_links_record_keys_and_snapshot_in_one_go(store: Store) -> None:
    outbox = store.outbox
    pid = _person(store)
    outbox.enqueue([intent_for(_create(pid))])
    item = outbox.due("acq")[0]
    outbox.mark_in_flight([item.id])
    outbox.record(
        [
            Completion(
                item.id,
                "17",
                pid,
                "acq",
                record_payload={"id": 17, "fields": {"name": "Ada"}},
                keys=[("email", "ada@example.com")],
                snapshot=item.fields,
            )
        ]
    )
    done = outbox.get(item.id)
    assert done is not None and done.status == "done" and done.result_remote_id == "17" and done.attempts == 1
    with store.session() as s:
        rec = s.scalars(select(RemoteRecord).where(RemoteRecord.remote_id == "17")).one()
        assert rec.person_id == pid and rec.dirty is False
        keys = s.scalars(select(IdentityKey).where(IdentityKey.record_id == rec.id)).all()
        assert [(k.kind, k.value) for k in keys] == [("email", "ada@example.com")]
    snap = store.snapshots.get(pid, "acq")
    assert snap == {"emails": ("ada@example.com",), "first_name": "Ada", "phones": ("+14155552671",)}


def test_failure_backs_off_and_comes_due_later(store: Store) -> None:
    outbox = store.outbox
    pid = _person(store)
    outbox.enqueue([intent_for(_create(pid))])
    item = outbox.due("acq")[0]
    outbox.mark_in_flight([item.id])
    later = utcnow() + timedelta(minutes=5)
    outbox.record(failures=[Failure(item.id, "HTTP 400: bad phone", retry_at=later)])
    assert outbox.due("acq") == []
    assert [i.id for i in outbox.due("acq", now=later + timedelta(seconds=1))] == [item.id]
    failed = outbox.items(["failed"])
    assert failed[0].last_error == "HTTP 400: bad phone" and failed[0].attempts == 1
    # The same plan again keeps the failed row and its backoff rather than retrying at once.
    res = outbox.enqueue([intent_for(_create(pid))])
    assert res.kept == 1 and outbox.due("acq") == []


def test_not_sent_gives_the_attempt_back(store: Store) -> None:
    outbox = store.outbox
    pid = _person(store)
    outbox.enqueue([intent_for(_create(pid))])
    item = outbox.due("acq")[0]
    outbox.mark_in_flight([item.id])
    outbox.record(failures=[Failure(item.id, "stopped", status="pending", count_attempt=False)])
    again = outbox.due("acq")[0]
    assert again.id == item.id and again.attempts == 0


def test_exclusion_is_kept_once_and_replaces_a_queued_create(store: Store) -> None:
    outbox = store.outbox
    pid = _person(store)
    outbox.enqueue([intent_for(_create(pid))])
    excl = PlanOp("acq", pid, OpKind.EXCLUDE, reason="needs a phone")
    outbox.enqueue([intent_for(excl)])
    outbox.enqueue([intent_for(excl)])
    assert outbox.due("acq") == []
    rows = outbox.items(["excluded"])
    assert len(rows) == 1 and rows[0].last_error == "needs a phone"
    assert outbox.counts()["acq"] == {"excluded": 1, "superseded": 1}


def test_tags_via_endpoint_become_add_remove_calls() -> None:
    from connectors.base import Capabilities, PullMode

    caps = Capabilities(pull_mode=PullMode.CHANGE_FEED, tags_via_endpoint=True)
    op = PlanOp(
        "ghl",
        1,
        OpKind.UPDATE,
        remote_id="x",
        fields={"tags": frozenset({"vip", "new"})},
        before={"tags": frozenset({"vip", "old"})},
        confirms={"tags": frozenset({"vip", "new"})},
        payload={"tags": ["new", "vip"], "firstName": "A"},
    )
    intent = intent_for(op, caps)
    assert intent.payload == {"body": {"firstName": "A"}, "add_tags": ["new"], "remove_tags": ["old"]}


def test_clear_echoes_cleans_only_records_that_read_as_their_snapshot(store: Store) -> None:
    """A record we wrote comes back from the next pull with a new payload (server stamps), dirty;
    when it reads as the snapshot we confirmed it is marked clean, anything else stays dirty."""
    outbox = store.outbox
    snapshot = {"first_name": "Ada", "emails": ("ada@example.com",)}
    persons = [_person(store) for _ in range(4)]
    payloads = {
        "echo": {"id": "echo", "first": "Ada", "email": "ada@example.com", "stamp": "2026-01-01"},
        "edited": {"id": "edited", "first": "Augusta", "email": "ada@example.com", "stamp": "2026-01-01"},
        "invalid": {"id": "invalid", "first": "Ada", "email": "ada@example.com", "stamp": "2026-01-01"},
        "unlinked": {"id": "unlinked", "first": "Ada", "email": "ada@example.com", "stamp": "2026-01-01"},
    }
    with store.session() as s:
        for pid, (rid, payload) in zip(persons, payloads.items()):
            s.add(
                RemoteRecord(
                    connection="c100",
                    remote_id=rid,
                    payload=payload,
                    payload_hash=rid,
                    dirty=True,
                    person_id=None if rid == "unlinked" else pid,
                    invalid=[{"field": "phones", "reason": "bad"}] if rid == "invalid" else None,
                    seen_at=utcnow(),
                )
            )
    snapshots = store.snapshots
    for pid in persons:
        snapshots.put(pid, "c100", snapshot)

    def digest(payload: dict[str, Any]) -> str:
        fields = {"first_name": payload["first"], "emails": (payload["email"],)}
        return fields_hash(fields_to_json(fields))

    assert outbox.clear_echoes("c100", digest) == 1
    assert outbox.clear_echoes("other", digest) == 0
    with store.session() as s:
        dirty = {r.remote_id: r.dirty for r in s.scalars(select(RemoteRecord))}
    assert dirty == {"echo": False, "edited": True, "invalid": True, "unlinked": True}
