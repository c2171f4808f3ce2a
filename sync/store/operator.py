"""What an operator reads and decides (``store.operator``): the web page and ``contactsync
person`` go through here.

* failed writes: :meth:`Operator.retry_write` (due again at once) and :meth:`Operator.skip_write`
  (given up: ``skipped``, never sent; a later change of the person plans it afresh);
* ambiguous matches: :meth:`Operator.decide_match` stores ``link`` or ``apart`` for the weak
  key (migration 0010); :mod:`sync.store.decisions` is what matching reads back (a linked key
  joins like a strong key, an apart key joins nobody);
* persons: :meth:`Operator.search` by email, phone, name or id, and :meth:`Operator.person`
  — the golden record, the record on each platform, snapshots, writes, conflicts and merges;
* :meth:`Operator.runs` — the run log per profile, for the runs-over-time view.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Text, cast, func, or_, select, update

from sync.store.decisions import match_decisions
from sync.store.models import (
    Conflict,
    IdentityKey,
    MatchDecision,
    MatchReview,
    Outbox,
    OutboxStatus,
    Person,
    RemoteRecord,
    Run,
    Snapshot,
    utcnow,
)
from sync.store.outbox import OutboxItem, _item
from sync.store.runs import RunInfo
from sync.store.status import ConflictRow, ReviewRow

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from sync.store.db import Sessions

DECISIONS = ("link", "apart")


class NotFound(KeyError):
    """No such row (a conflict, a write, a review, a person)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "not found"


class NotAllowed(ValueError):
    """The row is not in a state that allows the action (say, retrying a write already done)."""


def split_key(key: str) -> tuple[str, str]:
    """A review key ``"phone:+1415..."`` / ``"identity:facebook:123"`` as (kind, value)."""
    if key.startswith("identity:"):
        rest = key[len("identity:") :]
        kind, _, value = rest.partition(":")
        return f"identity:{kind}", value
    kind, _, value = key.partition(":")
    return kind, value


@dataclass
class PersonHit:
    """One person found by a search."""

    person_id: int
    first_name: str | None
    last_name: str | None
    emails: list[str]
    phones: list[str]
    matched_on: str


@dataclass
class RecordDetail:
    """A person's record on one connection, as last pulled or written."""

    connection: str
    remote_id: str
    payload: dict[str, Any]
    updated_at: datetime | None
    seen_at: datetime
    deleted_at: datetime | None
    merged_into: str | None
    invalid: list[dict[str, Any]] | None


@dataclass
class PersonDetail:
    """Everything known about one person; ``asked`` is the id looked up (it may have been
    folded into ``person_id`` by a merge)."""

    person_id: int
    asked: int
    fields: dict[str, Any]
    version: int
    updated_at: datetime
    dirty: bool
    folded: list[int] = field(default_factory=list)  # persons merged into this one
    records: list[RecordDetail] = field(default_factory=list)
    snapshots: dict[str, dict[str, Any]] = field(default_factory=dict)  # connection -> {fields, updated_at}
    writes: list[OutboxItem] = field(default_factory=list)
    conflicts: list[ConflictRow] = field(default_factory=list)
    reviews: list[ReviewRow] = field(default_factory=list)


def _conflict(r: Conflict) -> ConflictRow:
    return ConflictRow(
        r.id,
        r.person_id,
        r.field,
        list(r.candidates or []),
        r.decision,
        r.rule,
        r.needs_review,
        r.resolved_at,
        r.resolved_by,
        r.created_at,
    )


def _review(r: MatchReview) -> ReviewRow:
    return ReviewRow(r.id, r.kind, r.key, list(r.records or []), r.detail, r.status)


def _live(session: Session, person_id: int) -> Person | None:
    seen: set[int] = set()
    person = session.get(Person, person_id)
    while person is not None and person.merged_into is not None and person.id not in seen:
        seen.add(person.id)
        person = session.get(Person, person.merged_into)
    return person


class Operator:
    """Operator reads and decisions: the repository ``store.operator``."""

    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions

    # -- failed writes --------------------------------------------------------------------------

    def retry_write(self, item_id: int, by: str) -> OutboxItem:
        """Make a failed (or held) write due at once: the next cycle sends it, after the usual
        checks that it still carries the golden value and its target did not move."""
        with self._sessions.begin() as s:
            row = s.get(Outbox, item_id)
            if row is None:
                raise NotFound(f"no write #{item_id}")
            if row.status not in (OutboxStatus.FAILED.value, OutboxStatus.HELD.value):
                raise NotAllowed(f"write #{item_id} is {row.status}, not failed: nothing to retry")
            row.status = OutboxStatus.PENDING.value
            row.next_attempt_at = None
            row.last_error = f"retry requested by {by}; last error: {row.last_error or '-'}"[:2000]
            row.updated_at = utcnow()
            return _item(row)

    def skip_write(self, item_id: int, by: str) -> OutboxItem:
        """Give a failed (or held) write up: ``skipped``, never sent. The golden record keeps
        its value; a later change of the person plans a fresh write."""
        with self._sessions.begin() as s:
            row = s.get(Outbox, item_id)
            if row is None:
                raise NotFound(f"no write #{item_id}")
            if row.status not in (OutboxStatus.FAILED.value, OutboxStatus.HELD.value):
                raise NotAllowed(f"write #{item_id} is {row.status}, not failed: nothing to skip")
            row.status = OutboxStatus.SKIPPED.value
            row.last_error = f"skipped by {by}; last error: {row.last_error or '-'}"[:2000]
            row.updated_at = utcnow()
            return _item(row)

    # -- conflicts ------------------------------------------------------------------------------

    def conflict(self, conflict_id: int) -> ConflictRow:
        """One conflict by id."""
        with self._sessions() as s:
            row = s.get(Conflict, conflict_id)
            if row is None:
                raise NotFound(f"no conflict #{conflict_id}")
            return _conflict(row)

    # -- the review queue -----------------------------------------------------------------------

    def review(self, review_id: int) -> ReviewRow:
        with self._sessions() as s:
            row = s.get(MatchReview, review_id)
            if row is None:
                raise NotFound(f"no review #{review_id}")
            return _review(row)

    def decide_match(self, review_id: int, decision: str, by: str) -> ReviewRow:
        """Answer an ambiguous match: ``link`` joins every record holding its key into one
        person on the next cycle (its records are marked dirty, so matching sees them, and the
        answer stays pending until a match has read it, so the echo check after the next pull
        cannot clear that mark), ``apart`` keeps them apart for good. The answer is stored per
        key and read by matching."""
        if decision not in DECISIONS:
            raise NotAllowed(f"a match decision is one of {DECISIONS}, not {decision!r}")
        with self._sessions.begin() as s:
            review = s.get(MatchReview, review_id)
            if review is None:
                raise NotFound(f"no review #{review_id}")
            if review.kind != "ambiguous_match":
                raise NotAllowed(f"review #{review_id} is a {review.kind}, not an ambiguous match")
            kind, value = split_key(review.key)
            existing = s.scalars(
                select(MatchDecision).where(MatchDecision.kind == kind, MatchDecision.value == value)
            ).first()
            now = utcnow()
            if existing is None:
                s.add(
                    MatchDecision(
                        kind=kind,
                        value=value,
                        decision=decision,
                        decided_by=by[:128],
                        decided_at=now,
                        review_id=review.id,
                        applied_at=None,
                    )
                )
            else:
                existing.decision, existing.decided_by, existing.decided_at = decision, by[:128], now
                existing.review_id, existing.applied_at = review.id, None
            review.status = "linked" if decision == "link" else "apart"
            if decision == "link":
                holders = select(IdentityKey.record_id).where(IdentityKey.kind == kind, IdentityKey.value == value)
                s.execute(
                    update(RemoteRecord)
                    .where(RemoteRecord.id.in_(holders))
                    .values(dirty=True)
                    .execution_options(synchronize_session=False)
                )
            return _review(review)

    def record_owners(self, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], PersonHit]:
        """The live person of each (connection, remote id) record, for showing who a review is
        about (a review stores the person ids of the run that asked, temporary for new ones)."""
        out: dict[tuple[str, str], PersonHit] = {}
        with self._sessions() as s:
            for conn, rid in pairs:
                pid = s.scalar(
                    select(RemoteRecord.person_id).where(RemoteRecord.connection == conn, RemoteRecord.remote_id == rid)
                )
                person = _live(s, int(pid)) if pid is not None else None
                if person is None:
                    continue
                f = person.fields or {}
                out[(conn, rid)] = PersonHit(
                    person.id,
                    f.get("first_name"),
                    f.get("last_name"),
                    list(f.get("emails") or []),
                    list(f.get("phones") or []),
                    "record",
                )
        return out

    def decisions(self) -> tuple[frozenset[tuple[str, str]], frozenset[tuple[str, str]]]:
        """See :func:`match_decisions`."""
        with self._sessions() as s:
            return match_decisions(s)

    # -- runs -----------------------------------------------------------------------------------

    def runs(self, profile: str | None = None, *, limit: int = 30) -> list[RunInfo]:
        """The latest runs (of one profile), newest first."""
        with self._sessions() as s:
            q = select(Run).order_by(Run.id.desc()).limit(limit)
            if profile is not None:
                q = q.where(Run.profile == profile)
            return [
                RunInfo(r.id, r.profile, r.kind, r.started_at, r.finished_at, r.status, dict(r.counts or {}), r.error)
                for r in s.scalars(q)
            ]

    def last_success(self, profile: str) -> datetime | None:
        """When the profile's latest ``ok`` run finished."""
        with self._sessions() as s:
            return s.scalar(select(func.max(Run.finished_at)).where(Run.profile == profile, Run.status == "ok"))

    # -- persons --------------------------------------------------------------------------------

    def search(self, kind: str, value: str, *, limit: int = 50) -> list[PersonHit]:
        """Persons by ``email`` / ``phone`` (normalized values), ``id``, or ``name`` (a
        case-insensitive substring of the first or last name)."""
        with self._sessions() as s:
            ids: list[int] = []
            if kind == "id":
                person = _live(s, int(value))
                ids = [person.id] if person is not None else []
            elif kind in ("email", "phone"):
                pids = s.scalars(
                    select(RemoteRecord.person_id)
                    .join(IdentityKey, IdentityKey.record_id == RemoteRecord.id)
                    .where(IdentityKey.kind == kind, IdentityKey.value == value, RemoteRecord.person_id.is_not(None))
                    .distinct()
                )
                for pid in pids:
                    if pid is None:
                        continue
                    person = _live(s, int(pid))
                    if person is not None and person.id not in ids:
                        ids.append(person.id)
            elif kind == "name":
                needle = value.strip().lower()
                if not needle:
                    return []
                like = f"%{needle.replace('%', '').replace('_', '')}%"
                for person in s.scalars(
                    select(Person)
                    .where(Person.merged_into.is_(None), func.lower(cast(Person.fields, Text)).like(like))
                    .order_by(Person.id)
                    .limit(limit * 4)
                ):
                    f = person.fields or {}
                    full = f"{f.get('first_name') or ''} {f.get('last_name') or ''}".lower()
                    if needle in full:
                        ids.append(person.id)
            else:
                raise NotAllowed(f"search by email, phone, name or id, not {kind!r}")
            out = []
            for pid in ids[:limit]:
                p = s.get(Person, pid)
                if p is None:
                    continue
                f = p.fields or {}
                out.append(
                    PersonHit(
                        p.id,
                        f.get("first_name"),
                        f.get("last_name"),
                        list(f.get("emails") or []),
                        list(f.get("phones") or []),
                        kind,
                    )
                )
            return out

    def person(self, person_id: int, *, history: int = 200) -> PersonDetail:
        """One person (following merges to the survivor) with records, snapshots and history."""
        with self._sessions() as s:
            person = _live(s, person_id)
            if person is None:
                raise NotFound(f"no person {person_id}")
            pid = person.id
            # Persons folded into this one, transitively: their history is this person's too.
            folded: list[int] = []
            frontier = [pid]
            while frontier:
                found = list(s.scalars(select(Person.id).where(Person.merged_into.in_(frontier))))
                found = [f for f in found if f not in folded and f != pid]
                folded.extend(found)
                frontier = found
            every = [pid, *folded]
            detail = PersonDetail(
                pid,
                person_id,
                dict(person.fields or {}),
                int(person.version or 0),
                person.updated_at,
                bool(person.dirty),
                sorted(folded),
            )
            for r in s.scalars(
                select(RemoteRecord)
                .where(RemoteRecord.person_id == pid)
                .order_by(RemoteRecord.connection, RemoteRecord.id)
            ):
                detail.records.append(
                    RecordDetail(
                        r.connection,
                        r.remote_id,
                        dict(r.payload or {}),
                        r.remote_updated_at,
                        r.seen_at,
                        r.deleted_at,
                        r.merged_into,
                        list(r.invalid) if r.invalid else None,
                    )
                )
            for snap in s.scalars(select(Snapshot).where(Snapshot.person_id == pid).order_by(Snapshot.connection)):
                detail.snapshots[snap.connection] = {"fields": dict(snap.fields or {}), "updated_at": snap.updated_at}
            detail.writes = [
                _item(o)
                for o in s.scalars(
                    select(Outbox).where(Outbox.person_id.in_(every)).order_by(Outbox.id.desc()).limit(history)
                )
            ]
            detail.conflicts = [
                _conflict(c)
                for c in s.scalars(
                    select(Conflict).where(Conflict.person_id.in_(every)).order_by(Conflict.id.desc()).limit(history)
                )
            ]
            # Reviews naming this person (the JSON holds {"person_id": N}); filtered exactly here.
            pattern = or_(*[cast(MatchReview.records, Text).like(f'%"person_id": {p}%') for p in every])
            pattern_compact = or_(*[cast(MatchReview.records, Text).like(f'%"person_id":{p}%') for p in every])
            for rv in s.scalars(select(MatchReview).where(or_(pattern, pattern_compact)).order_by(MatchReview.id)):
                if any(rec.get("person_id") in every for rec in rv.records or []):
                    detail.reviews.append(_review(rv))
            return detail
