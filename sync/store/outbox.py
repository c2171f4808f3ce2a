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

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, case, func, or_, select, tuple_, update
from sqlalchemy.orm import Session, sessionmaker

from sync.store.models import IdentityKey, Outbox, OutboxStatus, Person, RemoteRecord, Snapshot, utcnow
from sync.store.snapshots import drop_snapshot, put_snapshot
from sync.store.staging import payload_hash

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


def _deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def link_record(
    session: Session,
    connection: str,
    remote_id: str,
    person_id: int | None,
    payload: Mapping[str, Any] | None,
    *,
    merge_payload: bool = False,
    updated_at: datetime | None = None,
    keys: Sequence[tuple[str, str]] | None = None,
    existing: RemoteRecord | None = None,
    existing_keys: set[tuple[str, str]] | None = None,
) -> RemoteRecord:
    """Create or update the remote record (connection, remote_id) and link it to ``person_id``,
    in the caller's transaction. New records start clean (not dirty): they are what we wrote.
    ``existing``/``existing_keys``: the row and its keys when the caller loaded them already."""
    now = utcnow()
    row = existing
    if row is None and existing_keys is None:
        row = session.scalars(
            select(RemoteRecord).where(RemoteRecord.connection == connection, RemoteRecord.remote_id == remote_id)
        ).first()
    if row is None:
        body = dict(payload or {})
        row = RemoteRecord(
            connection=connection,
            remote_id=remote_id,
            payload=body,
            payload_hash=record_hash(body),
            remote_updated_at=updated_at,
            seen_at=now,
            person_id=person_id,
            dirty=False,
        )
        session.add(row)
        session.flush()
    else:
        if person_id is not None:
            row.person_id = person_id
        if payload is not None:
            body = _deep_merge(row.payload or {}, payload) if merge_payload else dict(payload)
            row.payload = body
            row.payload_hash = record_hash(body)
        if updated_at is not None:
            row.remote_updated_at = updated_at
        row.deleted_at = None
    if keys is not None:
        if existing_keys is not None:
            have = set(existing_keys) if existing is not None else set()
        else:
            have = {
                (k.kind, k.value)
                for k in session.scalars(select(IdentityKey).where(IdentityKey.record_id == row.id))
            }
        wanted = set(keys)
        if have != wanted:
            session.query(IdentityKey).filter(IdentityKey.record_id == row.id).delete(synchronize_session=False)
            session.add_all(IdentityKey(record_id=row.id, kind=k, value=v) for k, v in sorted(wanted))
    return row


def _live_person(session: Session, person_id: int | None) -> int | None:
    seen: set[int] = set()
    while person_id is not None and person_id not in seen:
        seen.add(person_id)
        row = session.get(Person, person_id)
        if row is None or row.merged_into is None:
            return person_id
        person_id = int(row.merged_into)
    return person_id


class OutboxStore:
    """The outbox and the result transaction. Takes the store's SQLAlchemy engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

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
    ) -> EnqueueResult:
        """:meth:`enqueue` inside the caller's transaction: planning queues each slice's
        intents in the same transaction that stores its golden records and clears its dirty
        flags, so a crash can never keep the one without the other (a lost edit)."""
        intents = list(intents)
        result = into if into is not None else EnqueueResult()
        now = utcnow()
        index = self._load_active(session, {i.person_id for i in intents if i.person_id is not None})
        new_rows: list[Outbox] = []
        for intent in intents:
            key = (intent.connection, intent.person_id, intent.op)
            rows = index.setdefault(key, []) if intent.person_id is not None else []
            if intent.op == "exclude":
                self._exclude(index, intent, run_id, now, new_rows)
                result.excluded += 1
                continue
            same = [r for r in rows if r.status in ACTIVE and (intent.op == "create" or r.remote_id == intent.remote_id)]
            if intent.op == "create" and any(r.status == OutboxStatus.IN_FLIGHT.value for r in same):
                result.skipped_in_flight += 1
                continue
            if any(r.status in REPLACEABLE and r.payload == intent.payload and r.fields == intent.fields for r in same):
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
            )
            new_rows.append(row)
            if intent.person_id is not None:
                rows.append(row)
            result.added += 1
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
                    Outbox.status.in_((*ACTIVE, OutboxStatus.EXCLUDED.value)),
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

    def clear_exclusions(self, connection: str, person_ids: Iterable[int]) -> int:
        """Drop exclusions that no longer hold (the person now can go there)."""
        ids = list(person_ids)
        if not ids:
            return 0
        with self._sessions.begin() as session:
            res = session.execute(
                update(Outbox)
                .where(
                    Outbox.connection == connection,
                    Outbox.person_id.in_(ids),
                    Outbox.status == OutboxStatus.EXCLUDED.value,
                )
                .values(status=OutboxStatus.SUPERSEDED.value, updated_at=utcnow())
            )
            return int(res.rowcount or 0)

    # -- claiming -----------------------------------------------------------------------------

    def due(self, connection: str, *, after_id: int = 0, limit: int = 100, now: datetime | None = None) -> list[OutboxItem]:
        """Rows ready to send on ``connection``, oldest first: pending ones, and failed ones whose
        backoff has passed. ``after_id`` lets one run walk the queue once."""
        now = now or utcnow()
        with self._sessions() as session:
            rows = session.scalars(
                select(Outbox)
                .where(
                    Outbox.connection == connection,
                    Outbox.id > after_id,
                    or_(
                        Outbox.status == OutboxStatus.PENDING.value,
                        and_(
                            Outbox.status == OutboxStatus.FAILED.value,
                            or_(Outbox.next_attempt_at.is_(None), Outbox.next_attempt_at <= now),
                        ),
                    ),
                )
                .order_by(Outbox.id)
                .limit(limit)
            )
            return [_item(r) for r in rows]

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
        snapshot together, and failures with their messages and retry times. The rows touched
        are read in bulk first (a chunk of results is a handful of statements, not hundreds)."""
        if not completions and not failures:
            return
        now = utcnow()
        with self._sessions.begin() as session:
            records, keys = self._preload(session, completions)
            for done in completions:
                self._complete(session, done, now, records, keys)
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

    def _preload(
        self, session: Session, completions: Sequence[Completion]
    ) -> tuple[dict[tuple[str, str], RemoteRecord], dict[int, set[tuple[str, str]]]]:
        """Load the outbox rows, remote records (with their keys) and snapshots the completions
        touch into the session, so the per-completion work below hits the identity map."""
        ids = [c.item_id for c in completions]
        pairs = {(c.connection, c.remote_id) for c in completions}
        snaps = {(c.person_id, c.connection) for c in completions if c.person_id is not None}
        records: dict[tuple[str, str], RemoteRecord] = {}
        keys: dict[int, set[tuple[str, str]]] = {}
        for start in range(0, len(ids), 500):
            list(session.scalars(select(Outbox).where(Outbox.id.in_(ids[start : start + 500]))))
        by_conn: dict[str, list[str]] = {}
        for conn, rid in pairs:
            by_conn.setdefault(conn, []).append(rid)
        for conn, rids in by_conn.items():
            for start in range(0, len(rids), 500):
                for rec in session.scalars(
                    select(RemoteRecord).where(RemoteRecord.connection == conn, RemoteRecord.remote_id.in_(rids[start : start + 500]))
                ):
                    records[(rec.connection, rec.remote_id)] = rec
        rec_ids = [r.id for r in records.values()]
        for start in range(0, len(rec_ids), 500):
            for k in session.scalars(select(IdentityKey).where(IdentityKey.record_id.in_(rec_ids[start : start + 500]))):
                keys.setdefault(k.record_id, set()).add((k.kind, k.value))
        snap_list = sorted(snaps)
        for start in range(0, len(snap_list), 500):
            list(session.scalars(select(Snapshot).where(tuple_(Snapshot.person_id, Snapshot.connection).in_(snap_list[start : start + 500]))))
        return records, keys

    def _complete(
        self,
        session: Session,
        done: Completion,
        now: datetime,
        records: dict[tuple[str, str], RemoteRecord],
        keys: dict[int, set[tuple[str, str]]],
    ) -> None:
        row = session.get(Outbox, done.item_id)
        if row is None:
            return
        row.status = OutboxStatus.DONE.value
        row.result_remote_id = done.remote_id
        row.last_error = done.note
        row.next_attempt_at = None
        row.updated_at = now
        rec = records.get((done.connection, done.remote_id))
        if done.deleted:
            if rec is not None:
                rec.deleted_at = now
            if done.person_id is not None:
                drop_snapshot(session, done.person_id, done.connection)
            return
        rec = link_record(
            session,
            done.connection,
            done.remote_id,
            done.person_id,
            done.record_payload,
            merge_payload=done.merge_payload,
            updated_at=done.record_updated_at,
            keys=done.keys,
            existing=rec,
            existing_keys=keys.get(rec.id, set()) if rec is not None else set(),
        )
        records[(done.connection, done.remote_id)] = rec
        keys[rec.id] = set(done.keys) if done.keys is not None else keys.get(rec.id, set())
        for loser in done.merged_losers:
            session.execute(
                update(RemoteRecord)
                .where(RemoteRecord.connection == done.connection, RemoteRecord.remote_id == loser)
                .values(merged_into=done.remote_id, deleted_at=now)
            )
        if done.snapshot is not None and done.person_id is not None:
            put_snapshot(session, done.person_id, done.connection, done.snapshot)

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
        """The live person a remote record is linked to (following person merges), or None."""
        with self._sessions() as session:
            person_id = session.scalar(
                select(RemoteRecord.person_id).where(
                    RemoteRecord.connection == connection, RemoteRecord.remote_id == remote_id
                )
            )
            return _live_person(session, person_id)

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
                for value, person_id in rows:
                    live = _live_person(session, person_id)
                    if live is not None:
                        out.setdefault(value, set()).add(live)
        return out

    def live_persons(self, person_ids: Iterable[int | None]) -> dict[int, int]:
        """Each person id mapped to the live person it is (following folds)."""
        with self._sessions() as session:
            return {p: _live_person(session, p) or p for p in set(person_ids) if p is not None}

    def live_person(self, person_id: int | None) -> int | None:
        """The person ``person_id`` was folded into, if any (else itself)."""
        with self._sessions() as session:
            return _live_person(session, person_id)

    def get(self, item_id: int) -> OutboxItem | None:
        with self._sessions() as session:
            row = session.get(Outbox, item_id)
            return None if row is None else _item(row)
