"""The outbox: durable intent for every remote write (DESIGN.md, "Apply, exactly once in effect").

Life of a row::

    pending ──claim──▶ in_flight ──call ok──▶ done         (result + snapshot + link: one transaction)
       ▲                   │  └──record error──▶ failed      (retried after next_attempt_at)
       └──not sent─────────┘  └──crash──▶ stays in_flight  (settled by lookup/upsert next run)
    pending/failed ──a newer plan differs──▶ superseded
    exclude ops ──▶ excluded (reason in last_error)

``payload`` holds an *envelope* rather than the bare platform body, because one planned op can
need several idempotent calls (GoHighLevel: an update plus tag add/remove calls) and a create
must remember the keys to settle it by after a crash::

    {"body": {...raw platform payload...}, "keys": {"email": "...", "phone": "..."},
     "add_tags": [...], "remove_tags": [...], "loser_ids": [...]}

``fields`` holds the canonical values (JSON form) the snapshot becomes once the op is confirmed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, bindparam, case, delete, func, insert, or_, select, tuple_, update
from sqlalchemy.orm import Session

from sync.canonical import deep_merge_json, fields_to_json, same_json_value
from sync.store.decisions import pending_link_holders
from sync.store.models import IdentityKey, Outbox, OutboxStatus, Person, RemoteRecord, Snapshot, utcnow
from sync.store.snapshots import fields_hash
from sync.store.staging import payload_hash

if TYPE_CHECKING:
    from sync.store.db import Sessions

ACTIVE = (OutboxStatus.PENDING.value, OutboxStatus.FAILED.value, OutboxStatus.IN_FLIGHT.value)
REPLACEABLE = (OutboxStatus.PENDING.value, OutboxStatus.FAILED.value)


def record_hash(payload: Mapping[str, Any]) -> str:
    """Hash of a raw payload the way the stage computes it (so a read-back of exactly what we
    wrote is recognised as unchanged)."""
    return payload_hash(dict(payload))


@dataclass(frozen=True)
class Intent:
    """One planned write (or exclusion) to be committed before any call is made."""

    connection: str
    person_id: int | None
    op: str  # create | update | delete | merge | tag | exclude
    remote_id: str | None
    payload: dict[str, Any]  # the envelope (see module docstring)
    fields: dict[str, Any]  # canonical JSON the snapshot becomes on success
    reason: str = ""  # exclusions: why this person cannot go there
    # The remote values (canonical JSON) of the fields written, as planned against (updates).
    base: dict[str, Any] | None = None


@dataclass
class OutboxItem:
    """A row of the outbox as plain data."""

    id: int
    connection: str
    person_id: int | None
    op: str
    remote_id: str | None
    payload: dict[str, Any]
    fields: dict[str, Any]
    status: str
    attempts: int
    last_error: str | None
    result_remote_id: str | None
    next_attempt_at: datetime | None
    updated_at: datetime
    run_id: int | None = None
    person_version: int | None = None
    base: dict[str, Any] | None = None

    @property
    def body(self) -> dict[str, Any]:
        return dict(self.payload.get("body") or {})

    @property
    def keys(self) -> dict[str, str]:
        return dict(self.payload.get("keys") or {})


def _item(row: Outbox) -> OutboxItem:
    return OutboxItem(
        id=row.id,
        connection=row.connection,
        person_id=row.person_id,
        op=row.op,
        remote_id=row.remote_id,
        payload=dict(row.payload or {}),
        fields=dict(row.fields or {}),
        status=row.status,
        attempts=row.attempts,
        last_error=row.last_error,
        result_remote_id=row.result_remote_id,
        next_attempt_at=row.next_attempt_at,
        updated_at=row.updated_at,
        run_id=row.run_id,
        person_version=row.person_version,
        base=dict(row.base) if row.base is not None else None,
    )


@dataclass
class Completion:
    """A confirmed write, recorded in one transaction: outbox row done, the remote record
    linked to the person (created if new), its identity keys, and the snapshot moved."""

    item_id: int
    remote_id: str  # the record written (the survivor of a merge)
    person_id: int | None
    connection: str
    # Raw payload to keep on remote_records: the record as returned, or what we sent.
    record_payload: dict[str, Any] | None = None
    # Deep-merge ``record_payload`` into the stored payload instead of replacing it.
    merge_payload: bool = False
    record_updated_at: datetime | None = None
    # Normalized matching keys [(kind, value)] of the record; None: leave the index alone.
    keys: list[tuple[str, str]] | None = None
    snapshot: dict[str, Any] | None = None  # canonical JSON; None leaves the snapshot alone
    deleted: bool = False
    merged_losers: tuple[str, ...] = ()
    note: str | None = None
    # Leave the record dirty (a contact found by lookup whose values must be reconciled).
    dirty: bool = False
    # The write was not sent: what was read just before it shows it stale (``record_payload``
    # is that read) or the contact gone (``vanished``). The row is superseded with this reason
    # and its person marked dirty with a new version, so the next plan decides again.
    superseded: str | None = None
    # The contact was found deleted on the platform (a read by id answered "not found"): the
    # record is marked deleted and dirty, as a scan that misses it would (snapshot kept), and
    # the next plan applies the delete policy.
    vanished: bool = False


@dataclass
class Failure:
    """A write that did not succeed. ``retry_at`` None: back to pending now (not sent, or sent
    idempotently); ``status`` overrides where it goes (``in_flight`` keeps a create to settle)."""

    item_id: int
    message: str
    status: str = OutboxStatus.FAILED.value
    retry_at: datetime | None = None
    count_attempt: bool = True


@dataclass
class EnqueueResult:
    """What writing a plan's intents did."""

    added: int = 0
    kept: int = 0  # an identical pending/failed row already existed (its backoff is kept)
    superseded: int = 0
    excluded: int = 0
    skipped_in_flight: int = 0  # a create of that person there is in flight: settle it first
    refreshed_in_flight: int = 0  # of those, the ones whose body the newer plan replaced (sent only once settled)


@dataclass
class SendState:
    """What a chunk's rows are checked against just before they are sent: per person its
    (version, dirty), per target remote id its payload as last pulled (rows with a base, and
    updates: a connector that builds its body on the contact's current values takes the staged
    one where this cycle's pull vouches for it)."""

    persons: dict[int, tuple[int, bool]] = field(default_factory=dict)
    payloads: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Target remote ids whose staged record is deleted or merged away.
    gone: set[str] = field(default_factory=set)


def _live_person(session: Session, person_id: int | None) -> int | None:
    seen: set[int] = set()
    while person_id is not None and person_id not in seen:
        seen.add(person_id)
        row = session.get(Person, person_id)
        if row is None or row.merged_into is None:
            return person_id
        person_id = int(row.merged_into)
    return person_id


def _live_persons(session: Session, person_ids: set[int]) -> dict[int, int]:
    """:func:`_live_person` for many ids, one query per step of the longest fold chain."""
    current = {p: p for p in person_ids}
    seen = {p: {p} for p in person_ids}
    open_ids = set(person_ids)
    while open_ids:
        wanted = sorted({current[p] for p in open_ids})
        merged: dict[int, int | None] = {}
        for start in range(0, len(wanted), 500):
            for pid, into in session.execute(
                select(Person.id, Person.merged_into).where(Person.id.in_(wanted[start : start + 500]))
            ):
                merged[pid] = into
        still = set()
        for p in open_ids:
            into = merged.get(current[p])
            if into is None:
                continue  # live (or missing): this is where the chain ends
            if int(into) in seen[p]:
                current[p] = int(into)  # a cycle ends where it closes, as _live_person does
                continue
            current[p] = int(into)
            seen[p].add(int(into))
            still.add(p)
        open_ids = still
    return current


def _versions(session: Session, person_ids: Iterable[int | None]) -> dict[int, int]:
    """The current version of each person (as this transaction sees it)."""
    ids = sorted(p for p in person_ids if p is not None)
    out: dict[int, int] = {}
    for start in range(0, len(ids), 500):
        for pid, version in session.execute(
            select(Person.id, Person.version).where(Person.id.in_(ids[start : start + 500]))
        ):
            out[int(pid)] = int(version or 0)
    return out


@dataclass(eq=False)
class _RecordState:
    """A remote record as the results of one batch leave it (written once at the end)."""

    id: int | None  # None: new, inserted at the end
    payload: dict[str, Any] | None
    keys: set[tuple[str, str]]
    values: dict[str, Any] = field(default_factory=dict)  # columns to write
    keys_changed: bool = False


class _ResultBatch:
    """The completions of one chunk, written with bulk statements (see :meth:`OutboxStore.record`)."""

    def __init__(self, session: Session, now: datetime) -> None:
        self.session = session
        self.now = now

    def apply(self, completions: Sequence[Completion]) -> None:
        session, now = self.session, self.now
        present: set[int] = set()
        ids = [c.item_id for c in completions]
        for start in range(0, len(ids), 500):
            present.update(session.scalars(select(Outbox.id).where(Outbox.id.in_(ids[start : start + 500]))))
        # A completion whose outbox row is gone (superseded and purged) records nothing.
        done = [c for c in completions if c.item_id in present]
        if not done:
            return
        outbox = Outbox.__table__
        session.execute(
            update(outbox)
            .where(outbox.c.id == bindparam("b_id"))
            .values(
                status=OutboxStatus.DONE.value,
                result_remote_id=bindparam("b_rid"),
                last_error=bindparam("b_note"),
                next_attempt_at=None,
                updated_at=now,
            ),
            [{"b_id": c.item_id, "b_rid": c.remote_id, "b_note": c.note} for c in done],
        )
        # A write queued for a person that was folded into another since (a merge, or an
        # operator linking an ambiguous match) confirms a record of the survivor: link it there,
        # never to the folded person (whose records have all moved on).
        live = _live_persons(session, {c.person_id for c in done if c.person_id is not None})
        done = [
            replace(c, person_id=live[c.person_id])
            if c.person_id is not None and live.get(c.person_id, c.person_id) != c.person_id
            else c
            for c in done
        ]
        stale = [c for c in done if c.superseded]
        if stale:
            session.execute(
                update(outbox)
                .where(outbox.c.id == bindparam("b_id"))
                .values(status=OutboxStatus.SUPERSEDED.value, last_error=bindparam("b_reason")),
                [{"b_id": c.item_id, "b_reason": (c.superseded or "")[:2000]} for c in stale],
            )
            pids = sorted({c.person_id for c in stale if c.person_id is not None})
            for start in range(0, len(pids), 500):
                session.execute(
                    update(Person)
                    .where(Person.id.in_(pids[start : start + 500]))
                    .values(dirty=True, version=Person.version + 1, updated_at=now)
                )
        records = self._load_records(done)
        snapshots: dict[tuple[int, str], dict[str, Any] | None] = {}  # None: drop
        losers: list[tuple[str, str, str]] = []
        for c in done:
            pair = (c.connection, c.remote_id)
            rec = records.get(pair)
            if c.vanished:
                if rec is not None:
                    rec.values["deleted_at"] = now
                    rec.values["dirty"] = True
                continue
            if c.deleted:
                if rec is not None:
                    rec.values["deleted_at"] = now
                if c.person_id is not None:
                    snapshots[(c.person_id, c.connection)] = None
                continue
            records[pair] = self._link(rec, c)
            losers.extend((c.connection, loser, c.remote_id) for loser in c.merged_losers)
            if c.snapshot is not None and c.person_id is not None:
                snapshots[(c.person_id, c.connection)] = fields_to_json(c.snapshot)
        self._write_records(records)
        for connection, loser, survivor in losers:
            session.execute(
                update(RemoteRecord)
                .where(RemoteRecord.connection == connection, RemoteRecord.remote_id == loser)
                .values(merged_into=survivor, deleted_at=now)
            )
        self._write_snapshots(snapshots)

    def _load_records(self, done: Sequence[Completion]) -> dict[tuple[str, str], _RecordState]:
        by_conn: dict[str, list[str]] = {}
        for c in done:
            by_conn.setdefault(c.connection, []).append(c.remote_id)
        records: dict[tuple[str, str], _RecordState] = {}
        rr = RemoteRecord.__table__
        for conn, rids in by_conn.items():
            unique = sorted(set(rids))
            for start in range(0, len(unique), 500):
                rows = self.session.execute(
                    select(rr.c.id, rr.c.remote_id, rr.c.payload).where(
                        rr.c.connection == conn, rr.c.remote_id.in_(unique[start : start + 500])
                    )
                )
                for rid, remote_id, payload in rows:
                    records[(conn, remote_id)] = _RecordState(rid, payload, set())
        # Every record here was just read from the store, so each has its id.
        by_id = {r.id: r for r in records.values() if r.id is not None}
        rec_ids = sorted(by_id)
        for start in range(0, len(rec_ids), 500):
            for record_id, kind, value in self.session.execute(
                select(IdentityKey.record_id, IdentityKey.kind, IdentityKey.value).where(
                    IdentityKey.record_id.in_(rec_ids[start : start + 500])
                )
            ):
                by_id[record_id].keys.add((kind, value))
        return records

    def _link(self, rec: _RecordState | None, c: Completion) -> _RecordState:
        """The effect of linking a record (create or update it, link it to the person, replace its keys) on the in-memory state of the record."""
        if rec is None:
            body = dict(c.record_payload or {})
            rec = _RecordState(None, body, set())
            rec.values = {
                "connection": c.connection,
                "remote_id": c.remote_id,
                "payload": body,
                "payload_hash": record_hash(body),
                "remote_updated_at": c.record_updated_at,
                "seen_at": self.now,
                "deleted_at": None,
                "merged_into": None,
                "person_id": c.person_id,
                "dirty": c.dirty,
                # No "invalid": a Python None in a JSON column is stored as JSON null, which
                # ``status`` counted as an invalid record; left out, the column is SQL NULL.
                "last_scan": None,
            }
        else:
            if c.person_id is not None:
                rec.values["person_id"] = c.person_id
            if c.record_payload is not None:
                body = (
                    deep_merge_json(rec.payload or {}, c.record_payload) if c.merge_payload else dict(c.record_payload)
                )
                rec.payload = body
                rec.values["payload"] = body
                rec.values["payload_hash"] = record_hash(body)
            if c.record_updated_at is not None:
                rec.values["remote_updated_at"] = c.record_updated_at
            rec.values["deleted_at"] = None
            if c.dirty:
                rec.values["dirty"] = True
        if c.keys is not None and set(c.keys) != rec.keys:
            rec.keys = set(c.keys)
            rec.keys_changed = True
        return rec

    def _write_records(self, records: dict[tuple[str, str], _RecordState]) -> None:
        session = self.session
        rr = RemoteRecord.__table__
        new = [r for r in records.values() if r.id is None]
        if new:
            rows = session.execute(
                insert(rr).returning(rr.c.id, sort_by_parameter_order=True), [r.values for r in new]
            ).all()
            for r, row in zip(new, rows, strict=True):
                r.id = int(row[0])
        # Existing records: one executemany per shape of change.
        shapes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for r in records.values():
            if r.values and r not in new:
                cols = tuple(sorted(r.values))
                shapes.setdefault(cols, []).append({"b_id": r.id, **{f"b_{k}": v for k, v in r.values.items()}})
        for cols, params in shapes.items():
            session.execute(
                update(rr).where(rr.c.id == bindparam("b_id")).values({k: bindparam(f"b_{k}") for k in cols}),
                params,
            )
        changed = [r for r in records.values() if r.keys_changed]
        if changed:
            old = [r.id for r in changed if r not in new]
            for start in range(0, len(old), 500):
                session.execute(delete(IdentityKey).where(IdentityKey.record_id.in_(old[start : start + 500])))
            key_rows = [{"record_id": r.id, "kind": k, "value": v} for r in changed for k, v in sorted(r.keys)]
            if key_rows:
                session.execute(insert(IdentityKey.__table__), key_rows)

    def _write_snapshots(self, snapshots: dict[tuple[int, str], dict[str, Any] | None]) -> None:
        """:func:`put_snapshot` / :func:`drop_snapshot` for many pairs: unchanged ones (same
        hash) are left alone, like a single put."""
        if not snapshots:
            return
        session = self.session
        pairs = sorted(snapshots)
        have: dict[tuple[int, str], str] = {}
        for start in range(0, len(pairs), 500):
            for person_id, connection, digest in session.execute(
                select(Snapshot.person_id, Snapshot.connection, Snapshot.hash).where(
                    tuple_(Snapshot.person_id, Snapshot.connection).in_(pairs[start : start + 500])
                )
            ):
                have[(person_id, connection)] = digest
        inserts, updates, drops = [], [], []
        for pair in pairs:
            data = snapshots[pair]
            if data is None:
                if pair in have:
                    drops.append(pair)
                continue
            digest = fields_hash(data)
            if pair not in have:
                inserts.append(
                    {
                        "person_id": pair[0],
                        "connection": pair[1],
                        "fields": data,
                        "hash": digest,
                        "updated_at": self.now,
                    }
                )
            elif have[pair] != digest:
                updates.append({"b_person": pair[0], "b_conn": pair[1], "b_fields": data, "b_hash": digest})
        snap = Snapshot.__table__
        if inserts:
            session.execute(insert(snap), inserts)
        if updates:
            session.execute(
                update(snap)
                .where(snap.c.person_id == bindparam("b_person"), snap.c.connection == bindparam("b_conn"))
                .values(fields=bindparam("b_fields"), hash=bindparam("b_hash"), updated_at=self.now),
                updates,
            )
        for start in range(0, len(drops), 500):
            session.execute(
                delete(Snapshot).where(tuple_(Snapshot.person_id, Snapshot.connection).in_(drops[start : start + 500]))
            )


class OutboxStore:
    """The outbox and the result transaction: the repository ``store.outbox`` (each call its
    own transaction) / ``tx.outbox`` (calls join the unit of work: planning queues a slice's
    intents with :meth:`enqueue_into` in the transaction that stores its plan state)."""

    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions

    # -- intent -------------------------------------------------------------------------------

    def enqueue(self, intents: Iterable[Intent], run_id: int | None = None) -> EnqueueResult:
        """Commit the intents of a plan. A pending/failed row for the same person, connection,
        op and target is kept when identical (keeping its backoff) and superseded otherwise; a
        create whose earlier attempt is in flight is not queued again. One transaction, with
        the existing rows of the persons concerned read in bulk."""
        result = EnqueueResult()
        with self._sessions.begin() as session:
            self.enqueue_in(session, intents, run_id=run_id, into=result)
        return result

    def enqueue_in(
        self,
        session: Session,
        intents: Iterable[Intent],
        run_id: int | None = None,
        *,
        into: EnqueueResult | None = None,
        persons: Iterable[int] = (),
    ) -> EnqueueResult:
        """:meth:`enqueue` inside the caller's transaction: planning queues each slice's
        intents in the same transaction that stores its golden records and clears its dirty
        flags, so a crash can never keep the one without the other (a lost edit).

        ``persons``: the persons this plan covers (a planning slice). The new plan is the whole
        of what they need: any pending or failed row of theirs that it does not repeat is
        superseded (an intent queued by an earlier run is re-planned, never sent blind). A
        create of theirs still in flight (its outcome unknown) is not queued twice: it keeps
        its place and takes the newer plan's body, remembering the earlier ones so the
        settle can recognise which of them landed.

        Each new row records the person's version in this transaction (the plan's, once its
        golden record is saved) and the intent's ``base``."""
        intents = list(intents)
        planned = {int(p) for p in persons}
        result = into if into is not None else EnqueueResult()
        now = utcnow()
        ids = {i.person_id for i in intents if i.person_id is not None} | planned
        index = self._load_active(session, ids)
        versions = _versions(session, ids)
        new_rows: list[Outbox] = []
        keep: set[int] = set()  # ids of rows the plan repeats (kept as they are)
        for intent in intents:
            key = (intent.connection, intent.person_id, intent.op)
            rows = index.setdefault(key, []) if intent.person_id is not None else []
            if intent.op == "exclude":
                self._exclude(index, intent, run_id, now, new_rows)
                result.excluded += 1
                continue
            same = [
                r for r in rows if r.status in ACTIVE and (intent.op == "create" or r.remote_id == intent.remote_id)
            ]
            if intent.op == "create":
                flying = [r for r in same if r.status == OutboxStatus.IN_FLIGHT.value]
                if flying:
                    row = flying[0]
                    keep.add(id(row))
                    if row.payload.get("body") != intent.payload.get("body") or row.fields != intent.fields:
                        earlier = list(row.payload.get("earlier_fields") or [])
                        earlier.append(row.fields)
                        row.payload = {**intent.payload, "earlier_fields": earlier}
                        row.fields = intent.fields
                        row.person_version = versions.get(intent.person_id) if intent.person_id is not None else None
                        row.updated_at = now
                        result.refreshed_in_flight += 1
                    result.skipped_in_flight += 1
                    continue
            held = [r for r in rows if r.status == OutboxStatus.HELD.value and intent.op == "create"]
            if held:
                keep.add(id(held[0]))
                result.kept += 1
                continue
            same_rows = [
                r for r in same if r.status in REPLACEABLE and r.payload == intent.payload and r.fields == intent.fields
            ]
            if same_rows:
                row = same_rows[0]
                keep.add(id(row))
                row.person_version = versions.get(intent.person_id) if intent.person_id is not None else None
                row.base = intent.base
                result.kept += 1
                continue
            for row in same:
                if row.status in REPLACEABLE:
                    row.status = OutboxStatus.SUPERSEDED.value
                    row.updated_at = now
                    result.superseded += 1
            row = Outbox(
                run_id=run_id,
                connection=intent.connection,
                person_id=intent.person_id,
                op=intent.op,
                remote_id=intent.remote_id,
                payload=intent.payload,
                fields=intent.fields,
                status=OutboxStatus.PENDING.value,
                attempts=0,
                created_at=now,
                updated_at=now,
                person_version=versions.get(intent.person_id) if intent.person_id is not None else None,
                base=intent.base,
            )
            new_rows.append(row)
            keep.add(id(row))
            if intent.person_id is not None:
                rows.append(row)
            result.added += 1
        if planned:
            # What the plan no longer wants of its persons is dropped, not sent later.
            for (_, person_id, op), rows in index.items():
                if person_id not in planned or op == "exclude":
                    continue
                for row in rows:
                    if row.status in REPLACEABLE and id(row) not in keep:
                        row.status = OutboxStatus.SUPERSEDED.value
                        row.last_error = "superseded: the person was planned again"
                        row.updated_at = now
                        result.superseded += 1
        session.add_all(new_rows)
        session.flush()
        return result

    def _load_active(self, session: Session, person_ids: set[int]) -> dict[tuple[str, int | None, str], list[Outbox]]:
        index: dict[tuple[str, int | None, str], list[Outbox]] = {}
        ids = sorted(person_ids)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            for row in session.scalars(
                select(Outbox).where(
                    Outbox.person_id.in_(chunk),
                    Outbox.status.in_((*ACTIVE, OutboxStatus.EXCLUDED.value, OutboxStatus.HELD.value)),
                )
            ):
                index.setdefault((row.connection, row.person_id, row.op), []).append(row)
        return index

    def _exclude(
        self,
        index: dict[tuple[str, int | None, str], list[Outbox]],
        intent: Intent,
        run_id: int | None,
        now: datetime,
        new_rows: list[Outbox],
    ) -> None:
        # An exclusion replaces any queued create of that person there, and is kept once.
        for row in index.get((intent.connection, intent.person_id, "create"), []):
            if row.status in REPLACEABLE:
                row.status = OutboxStatus.SUPERSEDED.value
                row.updated_at = now
        rows = index.setdefault((intent.connection, intent.person_id, "exclude"), [])
        current = next((r for r in rows if r.status == OutboxStatus.EXCLUDED.value), None)
        if current is None:
            row = Outbox(
                run_id=run_id,
                connection=intent.connection,
                person_id=intent.person_id,
                op="exclude",
                remote_id=intent.remote_id,
                payload={},
                fields=intent.fields,
                status=OutboxStatus.EXCLUDED.value,
                last_error=intent.reason,
                created_at=now,
                updated_at=now,
            )
            rows.append(row)
            new_rows.append(row)
        elif current.last_error != intent.reason:
            current.last_error = intent.reason
            current.updated_at = now

    # -- claiming -----------------------------------------------------------------------------

    def due(
        self,
        connection: str,
        *,
        after_id: int = 0,
        limit: int = 100,
        now: datetime | None = None,
        run_id: int | None = None,
    ) -> list[OutboxItem]:
        """Rows ready to send on ``connection``, oldest first: pending ones, and failed ones whose
        backoff has passed. ``after_id`` lets one run walk the queue once; ``run_id`` keeps
        only the rows that run queued."""
        now = now or utcnow()
        conditions = [
            Outbox.connection == connection,
            Outbox.id > after_id,
            or_(
                Outbox.status == OutboxStatus.PENDING.value,
                and_(
                    Outbox.status == OutboxStatus.FAILED.value,
                    or_(Outbox.next_attempt_at.is_(None), Outbox.next_attempt_at <= now),
                ),
            ),
        ]
        if run_id is not None:
            conditions.append(Outbox.run_id == run_id)
        with self._sessions() as session:
            rows = session.scalars(select(Outbox).where(*conditions).order_by(Outbox.id).limit(limit))
            return [_item(r) for r in rows]

    def queued_persons(self, connection: str, *, other_than_run: int) -> set[int | None]:
        """Persons with rows still to send on ``connection`` that an earlier run queued."""
        with self._sessions() as session:
            return set(
                session.scalars(
                    select(Outbox.person_id)
                    .where(
                        Outbox.connection == connection,
                        Outbox.status.in_((OutboxStatus.PENDING.value, OutboxStatus.FAILED.value)),
                        or_(Outbox.run_id.is_(None), Outbox.run_id != other_than_run),
                    )
                    .distinct()
                )
            )

    def in_flight(self, connection: str) -> list[OutboxItem]:
        """Rows whose call may or may not have reached the platform (a crash or a lost reply)."""
        with self._sessions() as session:
            rows = session.scalars(
                select(Outbox)
                .where(Outbox.connection == connection, Outbox.status == OutboxStatus.IN_FLIGHT.value)
                .order_by(Outbox.id)
            )
            return [_item(r) for r in rows]

    def mark_in_flight(self, ids: Sequence[int]) -> None:
        """Commit that these calls are about to be made (before making them)."""
        if not ids:
            return
        with self._sessions.begin() as session:
            session.execute(
                update(Outbox)
                .where(Outbox.id.in_(list(ids)))
                .values(status=OutboxStatus.IN_FLIGHT.value, attempts=Outbox.attempts + 1, updated_at=utcnow())
            )

    # -- results ------------------------------------------------------------------------------

    def record(self, completions: Sequence[Completion] = (), failures: Sequence[Failure] = ()) -> None:
        """Commit results: each completion's outbox row, remote record link, identity keys and
        snapshot together, and failures with their messages and retry times.

        A chunk of results is a handful of bulk statements (executemany), not ORM objects: the
        rows touched are read in one query per table, the completions are folded in order in
        memory (a later completion of the same record or snapshot sees the earlier one's
        result, exactly as if they had been applied one by one), and each table is written once."""
        if not completions and not failures:
            return
        now = utcnow()
        with self._sessions.begin() as session:
            if completions:
                _ResultBatch(session, now).apply(completions)
            for fail in failures:
                values: dict[str, Any] = {
                    "status": fail.status,
                    "last_error": fail.message[:2000],
                    "next_attempt_at": fail.retry_at,
                    "updated_at": now,
                }
                if not fail.count_attempt:
                    # The call was never made: give back the attempt counted when it was claimed.
                    values["attempts"] = case((Outbox.attempts > 0, Outbox.attempts - 1), else_=0)
                session.execute(update(Outbox).where(Outbox.id == fail.item_id).values(**values))

    # -- reading ------------------------------------------------------------------------------

    def items(
        self,
        statuses: Iterable[str],
        *,
        connection: str | None = None,
        limit: int | None = 200,
    ) -> list[OutboxItem]:
        """Rows in the given statuses (newest first), e.g. failed writes or exclusions."""
        with self._sessions() as session:
            q = select(Outbox).where(Outbox.status.in_(list(statuses)))
            if connection is not None:
                q = q.where(Outbox.connection == connection)
            q = q.order_by(Outbox.id.desc())
            if limit is not None:
                q = q.limit(limit)
            return [_item(r) for r in session.scalars(q)]

    # -- held creates -------------------------------------------------------------------------

    def held(self, connections: Sequence[str] | None = None, *, limit: int | None = 200) -> list[OutboxItem]:
        """Creates held for review (a create that may have landed and that nothing can find
        again: no email or phone, no marker), oldest first, with their reason (``last_error``)."""
        with self._sessions() as session:
            q = select(Outbox).where(Outbox.status == OutboxStatus.HELD.value)
            if connections is not None:
                q = q.where(Outbox.connection.in_(list(connections)))
            q = q.order_by(Outbox.id)
            if limit is not None:
                q = q.limit(limit)
            return [_item(r) for r in session.scalars(q)]

    def _settle_held(
        self, connections: Sequence[str] | None, ids: Sequence[int] | None, values: dict[str, Any]
    ) -> dict[str, int]:
        out: dict[str, int] = {}
        with self._sessions.begin() as session:
            q = select(Outbox.id, Outbox.connection).where(Outbox.status == OutboxStatus.HELD.value)
            if connections is not None:
                q = q.where(Outbox.connection.in_(list(connections)))
            if ids is not None:
                q = q.where(Outbox.id.in_(list(ids)))
            rows = session.execute(q).all()
            for start in range(0, len(rows), 500):
                part = [int(r[0]) for r in rows[start : start + 500]]
                session.execute(
                    update(Outbox)
                    .where(Outbox.id.in_(part), Outbox.status == OutboxStatus.HELD.value)
                    .values(**values, updated_at=utcnow())
                )
            for _, conn in rows:
                out[str(conn)] = out.get(str(conn), 0) + 1
        return out

    def release_held(
        self, connections: Sequence[str] | None = None, ids: Sequence[int] | None = None
    ) -> dict[str, int]:
        """A human checked the platform and the contact is not there: the held creates (of
        ``connections`` / with these ``ids``; all when None) are sent by the next cycle (looked
        up first wherever a key allows). Returns the rows released per connection."""
        return self._settle_held(
            connections,
            ids,
            {"status": OutboxStatus.PENDING.value, "next_attempt_at": None, "last_error": "released at review"},
        )

    def reject_held(self, connections: Sequence[str] | None = None, ids: Sequence[int] | None = None) -> dict[str, int]:
        """Drop the held creates: nothing is sent (the human found the contact there, or does
        not want it). The row is superseded; the person is planned again at its next change.
        Returns the rows dropped per connection."""
        return self._settle_held(
            connections,
            ids,
            {"status": OutboxStatus.SUPERSEDED.value, "last_error": "held create rejected at review: not sent"},
        )

    def counts(self) -> dict[str, dict[str, int]]:
        """Per connection, the number of rows in each status."""
        with self._sessions() as session:
            rows = session.execute(
                select(Outbox.connection, Outbox.status, func.count()).group_by(Outbox.connection, Outbox.status)
            )
            out: dict[str, dict[str, int]] = {}
            for conn, status, n in rows:
                out.setdefault(conn, {})[status] = int(n)
            return out

    def owner(self, connection: str, remote_id: str) -> int | None:
        """The live person a remote record is linked to (following person merges), or None.
        Called once per adopted contact: one Core query, the person chain only when merged."""
        with self._sessions() as conn:
            row = conn.execute(
                select(RemoteRecord.person_id, Person.merged_into)
                .outerjoin(Person, Person.id == RemoteRecord.person_id)
                .where(RemoteRecord.connection == connection, RemoteRecord.remote_id == remote_id)
            ).first()
        if row is None or row[0] is None:
            return None
        if row[1] is None:
            return int(row[0])
        with self._sessions() as session:
            return _live_person(session, int(row[0]))

    def key_owners(self, connection: str, kind: str, values: Sequence[str]) -> dict[str, set[int]]:
        """Per key value, the live persons whose records on ``connection`` hold (kind, value)."""
        out: dict[str, set[int]] = {}
        wanted = sorted(set(values))
        with self._sessions() as session:
            for start in range(0, len(wanted), 500):
                rows = session.execute(
                    select(IdentityKey.value, RemoteRecord.person_id)
                    .join(RemoteRecord, IdentityKey.record_id == RemoteRecord.id)
                    .where(
                        RemoteRecord.connection == connection,
                        RemoteRecord.deleted_at.is_(None),
                        IdentityKey.kind == kind,
                        IdentityKey.value.in_(wanted[start : start + 500]),
                    )
                ).all()
                live = _live_persons(session, {p for _, p in rows if p is not None})
                for value, person_id in rows:
                    if person_id is not None:
                        out.setdefault(value, set()).add(live.get(person_id, person_id))
        return out

    def linked_remote_ids(self, connection: str) -> set[str]:
        """Remote ids of the live records on ``connection`` linked to a person (benchmarks
        compare them before and after a run: which existing contacts a run adopted)."""
        with self._sessions() as session:
            return set(
                session.scalars(
                    select(RemoteRecord.remote_id).where(
                        RemoteRecord.connection == connection,
                        RemoteRecord.person_id.is_not(None),
                        RemoteRecord.deleted_at.is_(None),
                    )
                )
            )

    def structural_since(self, connection: str, since: datetime) -> bool:
        """Whether a delete or merge on ``connection`` moved since ``since`` (sent, answered,
        failed) or is in flight: it changes which records exist there, so a listing fetched from
        then on may be wrong about more than values (the cycle drops such a prefetched scan)."""
        with self._sessions() as session:
            found = session.execute(
                select(Outbox.id)
                .where(
                    Outbox.connection == connection,
                    or_(Outbox.updated_at >= since, Outbox.status == OutboxStatus.IN_FLIGHT.value),
                    Outbox.op.in_(("delete", "merge")),
                )
                .limit(1)
            ).first()
        return found is not None

    def confirm_landed(self, connection: str, read_fields: Callable[[dict[str, Any]], Mapping[str, Any]]) -> int:
        """Settle the updates of ``connection`` that were sent and may have landed (pending or
        failed after an attempt: a lost response, a crash) when the pull just read their values
        back: the row is done and the snapshot takes the fields it wrote. Returns how many.

        Otherwise the next reconcile takes our own landed write for an edit made there (the
        record changed against its snapshot) and lets it beat newer decisions, e.g. a manual
        resolution made since (issue 14, machine finding seed 103). One query on the outbox's
        (status, connection) index; nothing is read when no such row exists."""
        rr = RemoteRecord.__table__
        snap = Snapshot.__table__
        ob = Outbox.__table__
        now = utcnow()
        done = 0
        with self._sessions.begin() as session:
            rows = session.execute(
                select(ob.c.id, ob.c.person_id, ob.c.fields, ob.c.base, rr.c.payload, snap.c.fields)
                .join(rr, and_(rr.c.connection == ob.c.connection, rr.c.remote_id == ob.c.remote_id))
                .join(snap, and_(snap.c.person_id == ob.c.person_id, snap.c.connection == ob.c.connection))
                .where(
                    ob.c.status.in_(REPLACEABLE),
                    ob.c.connection == connection,
                    ob.c.op == "update",
                    ob.c.attempts > 0,
                    rr.c.deleted_at.is_(None),
                )
                .order_by(ob.c.id)
            ).all()
            for item_id, person_id, fields, base, payload, snapshot in rows:
                if not base or not isinstance(payload, dict) or not fields:
                    continue
                held = fields_to_json(dict(read_fields(payload)))
                if not all(same_json_value(held.get(k), fields.get(k)) for k in base):
                    continue
                data = fields_to_json({**dict(snapshot or {}), **{k: fields.get(k) for k in base if k in fields}})
                for k in base:
                    if k not in fields:
                        data.pop(k, None)
                session.execute(
                    update(ob)
                    .where(ob.c.id == item_id, ob.c.status.in_(REPLACEABLE))
                    .values(
                        status=OutboxStatus.DONE.value,
                        last_error="landed: its values were read back by the pull",
                        next_attempt_at=None,
                        updated_at=now,
                    )
                )
                session.execute(
                    update(snap)
                    .where(snap.c.person_id == person_id, snap.c.connection == connection)
                    .values(fields=data, hash=fields_hash(data), updated_at=now)
                )
                done += 1
        return done

    def clear_echoes(self, connection: str, digest_of: Callable[[dict[str, Any]], str | None]) -> int:
        """Mark clean the dirty records of ``connection`` that read exactly as their person's
        snapshot there; returns how many.

        A contact we wrote without reading it back is stored as the body we sent, so the next
        pull, which re-reads it on purpose, finds its payload changed (server stamps, identity
        ids) and stages it dirty. When its values are the ones we confirmed (``digest_of`` the
        payload equals the snapshot's hash) there is nothing to match or reconcile: its keys
        are the snapshot's, and a side equal to its snapshot brings no change. Only live,
        linked, valid records of live persons qualify; anything else stays dirty, and so do the
        records holding a key an operator linked that no match has read yet (their dirty mark
        is the answer waiting for matching: :mod:`sync.store.decisions`)."""
        rr = RemoteRecord.__table__
        snap = Snapshot.__table__
        person = Person.__table__
        cleared = 0
        with self._sessions.begin() as session:
            rows = session.execute(
                select(rr.c.id, rr.c.payload, rr.c.invalid, snap.c.hash)
                .join(snap, and_(snap.c.person_id == rr.c.person_id, snap.c.connection == rr.c.connection))
                .join(person, person.c.id == rr.c.person_id)
                .where(
                    rr.c.dirty,  # the partial index of dirty rows (see models: never .is_(True))
                    rr.c.connection == connection,
                    rr.c.deleted_at.is_(None),
                    rr.c.merged_into.is_(None),
                    person.c.merged_into.is_(None),
                    # An operator's link answer marked these dirty for matching, not for a
                    # changed payload: theirs is no echo until a match has read the answer.
                    rr.c.id.not_in(pending_link_holders()),
                )
            ).all()
            echoes = [
                rid
                for rid, payload, invalid, digest in rows
                if not invalid and isinstance(payload, dict) and digest_of(payload) == digest
            ]
            for start in range(0, len(echoes), 500):
                session.execute(update(rr).where(rr.c.id.in_(echoes[start : start + 500])).values(dirty=False))
                cleared += len(echoes[start : start + 500])
        return cleared

    def live_persons(self, person_ids: Iterable[int | None]) -> dict[int, int]:
        """Each person id mapped to the live person it is (following folds): one query per
        step along the fold chains, not one per person."""
        with self._sessions() as session:
            return _live_persons(session, {p for p in person_ids if p is not None})

    def send_state(self, items: Sequence[OutboxItem]) -> SendState:
        """See :class:`SendState` (two queries for a chunk)."""
        state = SendState()
        pids = sorted({i.person_id for i in items if i.person_id is not None})
        targets: dict[str, set[str]] = {}
        for i in items:
            if i.remote_id is not None and (i.base or i.op == "update"):
                targets.setdefault(i.connection, set()).add(i.remote_id)
        with self._sessions() as session:
            for start in range(0, len(pids), 500):
                for pid, version, dirty in session.execute(
                    select(Person.id, Person.version, Person.dirty).where(Person.id.in_(pids[start : start + 500]))
                ):
                    state.persons[int(pid)] = (int(version or 0), bool(dirty))
            for conn, rids in targets.items():
                wanted = sorted(rids)
                for start in range(0, len(wanted), 500):
                    for rid, payload, merged_into, deleted_at in session.execute(
                        select(
                            RemoteRecord.remote_id,
                            RemoteRecord.payload,
                            RemoteRecord.merged_into,
                            RemoteRecord.deleted_at,
                        ).where(
                            RemoteRecord.connection == conn, RemoteRecord.remote_id.in_(wanted[start : start + 500])
                        )
                    ):
                        state.payloads[rid] = dict(payload or {})
                        if merged_into is not None or deleted_at is not None:
                            state.gone.add(rid)
        return state

    def supersede_stale(self, rows: Sequence[tuple[int, str]], persons: Iterable[int]) -> None:
        """Supersede rows found stale at send time (with the reason) and mark their persons
        dirty with a new version: the next plan carries what they still need, and a plan of
        theirs being computed meanwhile is not saved (its version moved)."""
        now = utcnow()
        with self._sessions.begin() as session:
            for item_id, reason in rows:
                session.execute(
                    update(Outbox)
                    .where(Outbox.id == item_id, Outbox.status.in_(ACTIVE))
                    .values(status=OutboxStatus.SUPERSEDED.value, last_error=reason[:2000], updated_at=now)
                )
            ids = sorted(set(persons))
            for start in range(0, len(ids), 500):
                session.execute(
                    update(Person)
                    .where(Person.id.in_(ids[start : start + 500]))
                    .values(dirty=True, version=Person.version + 1, updated_at=now)
                )

    def get(self, item_id: int) -> OutboxItem | None:
        with self._sessions() as session:
            row = session.get(Outbox, item_id)
            return None if row is None else _item(row)

    def enqueue_into(
        self,
        intents: Iterable[Intent],
        *,
        run_id: int | None = None,
        into: EnqueueResult,
        persons: Iterable[int] = (),
    ) -> EnqueueResult:
        """:meth:`enqueue_in` in this repository's transaction, counting into ``into``: through
        ``tx.outbox`` a plan's slice is queued in the unit of work that stores its plan state."""
        with self._sessions.begin() as session:
            return self.enqueue_in(session, intents, run_id=run_id, into=into, persons=persons)
