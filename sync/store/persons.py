"""Persons in the store: what matching and reconcile read and write (bulk statements only).

* :func:`load_match_input` — the dirty records, the records sharing a key with them, and every
  record of the persons those belong to (an incremental run touches only the neighbourhood of
  what changed); everything when most of the store is dirty (a backfill).
* :func:`save_match` — new persons, person ids, folds (a person merged into another keeps its
  row with ``merged_into``; its snapshots move to the survivor), inferred merges, reviews; the
  matched records are no longer dirty and the persons they touch are.
* :func:`load_person_views` — per dirty person: golden record, records with payloads, snapshots.
* :func:`save_plan_state` — golden records, read-confirmed snapshots and conflicts of a plan.

Functions take a ``Session`` so a caller can run matching and planning in one transaction (and
roll it back for a dry run).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
from sqlalchemy import bindparam, func, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from sync.canonical import FieldDict, fields_from_json, fields_to_json
from sync.plan import Plan
from sync.store.models import (
    Conflict,
    IdentityKey,
    MatchReview,
    Person,
    RemoteRecord,
    Snapshot,
    utcnow,
)

# Ids per IN (...) list: well under SQLite's bound-parameter limit.
_CHUNK = 5_000
# Above this share of dirty records, reading everything beats chasing neighbourhoods.
_FULL_LOAD_SHARE = 0.2
_SMALL = 10_000
_BIG = 100_000


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


@dataclass
class MatchRows:
    """Columnar records and keys, ready for ``sync.match.MatchInput`` (same field names), plus
    which records were dirty."""

    record_ids: list[int] = field(default_factory=list)
    connections: list[str] = field(default_factory=list)
    remote_ids: list[str] = field(default_factory=list)
    person_ids: list[int | None] = field(default_factory=list)
    merged_into: list[str | None] = field(default_factory=list)
    deleted: list[bool] = field(default_factory=list)
    dirty: list[bool] = field(default_factory=list)
    key_records: list[int] = field(default_factory=list)
    key_kinds: list[str] = field(default_factory=list)
    key_values: list[str] = field(default_factory=list)
    full: bool = False  # every record of the store was loaded

    def __len__(self) -> int:
        return len(self.record_ids)


def load_match_input(session: Session, *, full: bool | None = None) -> MatchRows:
    """The records matching must look at now (see the module docstring). ``full`` forces (True)
    or forbids (False) loading the whole store; None decides by the share of dirty records."""
    rr = RemoteRecord.__table__.c
    ik = IdentityKey.__table__.c
    dirty_ids = [row[0] for row in _raw(session, "SELECT id FROM remote_records WHERE dirty")]
    if not dirty_ids:
        return MatchRows()
    if full is None and len(dirty_ids) < _SMALL:
        full = False  # a handful of changes: no need to count the store
    if full is None:
        total = session.execute(select(func.count()).select_from(RemoteRecord.__table__)).scalar_one()
        full = len(dirty_ids) >= _FULL_LOAD_SHARE * total
    if full:
        return _load_rows(session, None)

    ids: set[int] = set(dirty_ids)
    # 1. Keys of the dirty records, then every record holding one of them (index: kind, value).
    by_kind: dict[str, set[str]] = {}
    for chunk in _chunks(dirty_ids):
        for kind, value in session.execute(select(ik.kind, ik.value).where(ik.record_id.in_(chunk))):
            by_kind.setdefault(kind, set()).add(value)
    for kind, values in by_kind.items():
        for chunk in _chunks(sorted(values)):
            ids.update(
                session.execute(select(ik.record_id).where(ik.kind == kind, ik.value.in_(chunk))).scalars()
            )
    # 2. Merge partners: the survivors dirty records were merged into, and records merged into them.
    heads: dict[str, set[str]] = {}
    tails: dict[str, set[str]] = {}
    for chunk in _chunks(sorted(ids)):
        for conn, remote_id, merged_into in session.execute(
            select(rr.connection, rr.remote_id, rr.merged_into).where(rr.id.in_(chunk))
        ):
            tails.setdefault(conn, set()).add(remote_id)
            if merged_into:
                heads.setdefault(conn, set()).add(merged_into)
    for conn, remote_ids in heads.items():
        for chunk in _chunks(sorted(remote_ids)):
            ids.update(session.execute(select(rr.id).where(rr.connection == conn, rr.remote_id.in_(chunk))).scalars())
    for conn, remote_ids in tails.items():
        for chunk in _chunks(sorted(remote_ids)):
            ids.update(
                session.execute(select(rr.id).where(rr.connection == conn, rr.merged_into.in_(chunk))).scalars()
            )
    # 3. Whole persons: every record of every person touched (persons move as a whole).
    persons: set[int] = set()
    for chunk in _chunks(sorted(ids)):
        persons.update(
            p for p in session.execute(select(rr.person_id).where(rr.id.in_(chunk))).scalars() if p is not None
        )
    for chunk in _chunks(sorted(persons)):
        ids.update(session.execute(select(rr.id).where(rr.person_id.in_(chunk))).scalars())
    return _load_rows(session, sorted(ids))


def _raw(session: Session, sql: str) -> list[tuple[Any, ...]]:
    """All rows of a constant query, fetched by the driver in the session's transaction."""
    cursor = session.connection().connection.cursor()
    try:
        cursor.execute(sql)
        return list(cursor.fetchall())
    finally:
        cursor.close()


def _load_rows(session: Session, ids: list[int] | None) -> MatchRows:
    rr = RemoteRecord.__table__.c
    ik = IdentityKey.__table__.c
    out = MatchRows(full=ids is None)
    cols = (rr.id, rr.connection, rr.remote_id, rr.person_id, rr.merged_into, rr.deleted_at, rr.dirty)
    # Whole result sets at once, transposed in C: far cheaper than row iteration. A whole-store
    # load goes through the driver's cursor (no per-row Row objects for millions of rows).
    if ids is None:
        rows = _raw(
            session,
            "SELECT id, connection, remote_id, person_id, merged_into, deleted_at IS NOT NULL, dirty "
            "FROM remote_records ORDER BY id",
        )
    else:
        rows = [
            tuple(row)
            for chunk in _chunks(ids)
            for row in session.execute(select(*cols).where(rr.id.in_(chunk)).order_by(rr.id)).all()
        ]
    if rows:
        cols_t = list(zip(*rows))
        out.record_ids = list(cols_t[0])
        out.connections = list(cols_t[1])
        out.remote_ids = list(cols_t[2])
        out.person_ids = list(cols_t[3])
        out.merged_into = list(cols_t[4])
        out.deleted = [bool(d) for d in cols_t[5]] if ids is None else [d is not None for d in cols_t[5]]
        out.dirty = [bool(d) for d in cols_t[6]]
    del rows
    index = dict(zip(out.record_ids, range(len(out.record_ids))))
    if ids is None:
        keys = _raw(session, "SELECT record_id, kind, value FROM identity_keys")
    else:
        keys = [
            tuple(row)
            for chunk in _chunks(ids)
            for row in session.execute(select(ik.record_id, ik.kind, ik.value).where(ik.record_id.in_(chunk))).all()
        ]
    if keys:
        rec, kinds, values = zip(*keys)
        positions = list(map(index.get, rec))
        if None in positions:  # keys of records not loaded (cannot happen for whole loads)
            kept = [i for i, pos in enumerate(positions) if pos is not None]
            positions = [positions[i] for i in kept]
            kinds = tuple(kinds[i] for i in kept)
            values = tuple(values[i] for i in kept)
        out.key_records = positions  # type: ignore[assignment]
        out.key_kinds = list(kinds)
        out.key_values = list(values)
    return out


@dataclass
class ReviewRow:
    """A match review to store: ``records`` as ``[{"connection", "remote_id", "person_id"}]``."""

    kind: str
    key: str
    records: list[dict[str, Any]]
    detail: str = ""


@dataclass
class MatchOutcome:
    """What :func:`save_match` wrote: the real id of every temporary person, and the persons
    that now need reconciling."""

    new_person_ids: dict[int, int]
    dirty_persons: set[int]
    folded: dict[int, int]


def save_match(
    session: Session,
    rows: MatchRows,
    person_of: Sequence[int],
    *,
    folds: Mapping[int, int],
    merged: Mapping[int, int],
    reviews: Sequence[ReviewRow],
    new_persons: int,
) -> MatchOutcome:
    """Write a match result (``person_of[i]`` for ``rows`` record i; negative = the i-th new
    person, numbered -1, -2, ...) in bulk. See the module docstring for what moves."""
    now = utcnow()
    if len(rows) > _BIG and session.get_bind().dialect.name == "sqlite":
        # Person ids land in random places of the person_id index: with SQLite's default 2 MB
        # page cache a million such updates thrash. This connection may keep 256 MB instead.
        session.execute(text("PRAGMA cache_size = -262144"))
    new_ids: dict[int, int] = {}
    po = np.asarray(person_of, dtype=np.int64)
    if new_persons:
        created = _allocate_person_ids(session, new_persons)
        _insert_persons(session, created, now)
        new_ids = {-(i + 1): pid for i, pid in enumerate(created)}
        lookup = np.asarray(created, dtype=np.int64)
        po = np.where(po < 0, lookup[np.clip(-po - 1, 0, None)], po)
    final = po.tolist()
    changed = [(p, rid) for rid, old, p in zip(rows.record_ids, rows.person_ids, final) if old != p]
    rr = RemoteRecord.__table__
    if changed:
        _set_person_ids(session, changed)
    inferred = [
        {"b_id": rows.record_ids[i], "b_into": rows.remote_ids[j]}
        for i, j in merged.items()
        if rows.merged_into[i] != rows.remote_ids[j]
    ]
    if inferred:
        session.execute(update(rr).where(rr.c.id == bindparam("b_id")).values(merged_into=bindparam("b_into")), inferred)

    dirty_records = [rows.record_ids[i] for i, d in enumerate(rows.dirty) if d]
    if rows.full:
        session.execute(update(rr).where(rr.c.dirty.is_(True)).values(dirty=False))
    else:
        for chunk in _chunks(dirty_records):
            session.execute(update(rr).where(rr.c.id.in_(chunk)).values(dirty=False))

    folded = {int(a): int(b) for a, b in folds.items()}
    if folded:
        _fold_persons(session, folded, now)

    touched = {final[i] for i, d in enumerate(rows.dirty) if d}
    touched.update(final[i] for i in range(len(final)) if rows.person_ids[i] != final[i])
    touched.update(folded.values())
    touched -= set(folded)
    created_ids = set(new_ids.values())
    old = sorted(p for p in touched if p not in created_ids)
    pt = Person.__table__
    for chunk in _chunks(old):
        session.execute(update(pt).where(pt.c.id.in_(chunk)).values(dirty=True))

    if reviews:
        _save_reviews(session, reviews, now)
    return MatchOutcome(new_ids, touched, folded)


def _insert_persons(session: Session, ids: Sequence[int], now: datetime) -> None:
    """New, empty, dirty persons with the given ids, in one statement (no per-row parameters)."""
    pt = Person.__table__
    if session.get_bind().dialect.name == "postgresql":
        stmt = text(
            "INSERT INTO persons (id, fields, version, updated_at, dirty) "
            "SELECT x, '{}'::jsonb, 0, :now, true FROM unnest(CAST(:ids AS bigint[])) AS x"
        ).bindparams(bindparam("now", type_=pt.c.updated_at.type))
        session.execute(stmt, {"ids": list(ids), "now": now})
        return
    # SQLite: ids are consecutive (see _allocate_person_ids).
    stmt = text(
        "WITH RECURSIVE seq(x) AS (SELECT :lo UNION ALL SELECT x + 1 FROM seq WHERE x < :hi) "
        "INSERT INTO persons (id, fields, version, updated_at, dirty) SELECT x, '{}', 0, :now, 1 FROM seq"
    ).bindparams(bindparam("now", type_=pt.c.updated_at.type))
    session.execute(stmt, {"lo": ids[0], "hi": ids[-1], "now": now})


def _set_person_ids(session: Session, pairs: Sequence[tuple[int, int]]) -> None:
    """remote_records.person_id for many (person_id, record_id) pairs: one statement over two
    arrays on PostgreSQL; the driver's executemany (no per-row SQLAlchemy work) on SQLite."""
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        persons, records = zip(*pairs)
        session.execute(
            text(
                "UPDATE remote_records AS r SET person_id = v.p FROM "
                "unnest(CAST(:p AS bigint[]), CAST(:r AS bigint[])) AS v(p, id) WHERE r.id = v.id"
            ),
            {"p": list(persons), "r": list(records)},
        )
        return
    conn.exec_driver_sql("UPDATE remote_records SET person_id = ? WHERE id = ?", list(pairs))


def _allocate_person_ids(session: Session, n: int) -> list[int]:
    """``n`` fresh person ids, for one plain bulk insert (an INSERT ... RETURNING per row is
    what SQLite would otherwise do). PostgreSQL: drawn from the id sequence. SQLite: above the
    largest id — a store has one writer at a time, and a racing insert would fail on the
    primary key rather than mix persons up."""
    if session.get_bind().dialect.name == "postgresql":
        return list(
            session.execute(
                text("SELECT nextval(pg_get_serial_sequence('persons', 'id')) FROM generate_series(1, :n)"), {"n": n}
            ).scalars()
        )
    top = session.execute(select(func.max(Person.__table__.c.id))).scalar_one() or 0
    return list(range(top + 1, top + n + 1))


def _fold_persons(session: Session, folded: Mapping[int, int], now: datetime) -> None:
    """Person ``a`` folded into ``b``: ``a`` keeps its row (old ids resolve) with
    ``merged_into=b``; its snapshots move to ``b`` where ``b`` has none on that connection."""
    pt = Person.__table__
    st = Snapshot.__table__
    session.execute(
        update(pt).where(pt.c.id == bindparam("b_id")).values(merged_into=bindparam("b_into"), dirty=False, updated_at=now),
        [{"b_id": a, "b_into": b} for a, b in folded.items()],
    )
    involved = sorted(set(folded) | set(folded.values()))
    # The survivor's golden record gains the values only the folded persons had.
    goldens: dict[int, dict[str, Any]] = {}
    for chunk in _chunks(involved):
        for pid, fields in session.execute(select(pt.c.id, pt.c.fields).where(pt.c.id.in_(chunk))):
            goldens[pid] = fields
    enriched: dict[int, dict[str, Any]] = {}
    for loser, survivor in sorted(folded.items()):
        base = enriched.get(survivor, dict(goldens.get(survivor) or {}))
        for name, value in (goldens.get(loser) or {}).items():
            base.setdefault(name, value)
        enriched[survivor] = base
    changed = [{"b_id": p, "b_fields": g} for p, g in enriched.items() if g != (goldens.get(p) or {})]
    if changed:
        session.execute(update(pt).where(pt.c.id == bindparam("b_id")).values(fields=bindparam("b_fields")), changed)
    have: set[tuple[int, str]] = set()
    loser_snaps: list[tuple[int, str]] = []
    for chunk in _chunks(involved):
        for person_id, conn in session.execute(select(st.c.person_id, st.c.connection).where(st.c.person_id.in_(chunk))):
            if person_id in folded:
                loser_snaps.append((person_id, conn))
            else:
                have.add((person_id, conn))
    for person_id, conn in sorted(loser_snaps):
        target = folded[person_id]
        if (target, conn) in have:
            session.execute(st.delete().where(st.c.person_id == person_id, st.c.connection == conn))
        else:
            session.execute(
                update(st).where(st.c.person_id == person_id, st.c.connection == conn).values(person_id=target)
            )
            have.add((target, conn))


def _insert_for(session: Session) -> Any:
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def _save_reviews(session: Session, reviews: Sequence[ReviewRow], now: datetime) -> None:
    """Upsert by (kind, key): a question asked again updates its records, keeps its status."""
    unique = {(r.kind, r.key[:400]): r for r in reviews}
    ins = _insert_for(session)(MatchReview.__table__)
    stmt = ins.on_conflict_do_update(
        index_elements=["kind", "key"],
        set_={"records": ins.excluded.records, "detail": ins.excluded.detail},
    )
    for chunk in _chunks(list(unique.items()), 1_000):
        session.execute(
            stmt,
            [
                {"kind": k, "key": key, "records": r.records, "detail": r.detail, "status": "open", "created_at": now}
                for (k, key), r in chunk
            ],
        )


# -- reconcile views ---------------------------------------------------------------------------


@dataclass
class RecordRow:
    """One stored record of a person."""

    id: int
    connection: str
    remote_id: str
    payload: dict[str, Any]
    updated_at: datetime | None
    deleted: bool
    merged_into: str | None


@dataclass
class PersonRows:
    """A person as stored: golden record, records (oldest first) and snapshots."""

    person_id: int
    golden: FieldDict
    records: list[RecordRow] = field(default_factory=list)
    snapshots: dict[str, FieldDict] = field(default_factory=dict)


def dirty_person_ids(session: Session) -> list[int]:
    """Persons waiting for reconcile (not folded away)."""
    pt = Person.__table__.c
    return list(session.execute(select(pt.id).where(pt.dirty.is_(True), pt.merged_into.is_(None)).order_by(pt.id)).scalars())


def load_person_views(session: Session, person_ids: Sequence[int]) -> list[PersonRows]:
    """Golden record, records and snapshots of each person, in ``person_ids`` order.

    Read through the driver's cursor (a backfill loads a million records with their payloads:
    SQLAlchemy's per-row result processing cost more than the query), JSON and timestamps
    decoded here the way the column types would."""
    out: dict[int, PersonRows] = {}
    ids = sorted({int(p) for p in person_ids})
    loads = json.loads
    for chunk in _id_ranges(ids):
        wanted = set(chunk)
        if chunk[-1] - chunk[0] < 2 * len(chunk):
            # Dense ids (a backfill: every person dirty): one range scan of the person_id index
            # beats thousands of IN probes; rows of persons not asked for are skipped below.
            within = f"BETWEEN {chunk[0]} AND {chunk[-1]}"
        else:
            within = f"IN ({','.join(map(str, chunk))})"  # ints only: safe to inline
        for pid, fields in _raw(session, f"SELECT id, fields FROM persons WHERE id {within}"):
            if pid in wanted:
                out[pid] = PersonRows(pid, fields_from_json(_json(fields) or {}))
        rows = _raw(
            session,
            "SELECT id, connection, remote_id, payload, remote_updated_at, deleted_at IS NOT NULL, merged_into, "
            f"person_id FROM remote_records WHERE person_id {within} ORDER BY id",
        )
        for rid, connection, remote_id, payload, updated_at, deleted, merged_into, pid in rows:
            person = out.get(pid)
            if person is not None:
                person.records.append(
                    RecordRow(
                        rid,
                        connection,
                        remote_id,
                        (loads(payload) if type(payload) is str else payload) or {},
                        _timestamp(updated_at),
                        bool(deleted),
                        merged_into,
                    )
                )
        del rows
        for pid, connection, fields in _raw(
            session, f"SELECT person_id, connection, fields FROM snapshots WHERE person_id {within}"
        ):
            person = out.get(pid)
            if person is not None:
                person.snapshots[connection] = fields_from_json(_json(fields) or {})
    return [out[p] for p in person_ids if p in out]


def _id_ranges(ids: list[int]) -> Iterator[list[int]]:
    """Sorted ids in chunks of at most ``_CHUNK``, or of up to 50,000 where they are dense
    (one range query then reads a whole planning slice)."""
    i = 0
    while i < len(ids):
        big = ids[i : i + 50_000]
        if big[-1] - big[0] < 2 * len(big):
            yield big
            i += len(big)
        else:
            yield ids[i : i + _CHUNK]
            i += _CHUNK


def _json(value: Any) -> Any:
    """A JSON column's value from the driver: text on SQLite, already decoded on PostgreSQL."""
    return json.loads(value) if isinstance(value, (str, bytes)) else value


_UTC = timezone.utc


def _timestamp(value: Any) -> datetime | None:
    """A timestamp column from the driver as a UTC-aware datetime (SQLite keeps naive UTC text)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=_UTC)


def _aware(value: datetime | None) -> datetime | None:
    # Core selects bypass the column type's result processing on some drivers: make it UTC-aware.
    from datetime import timezone

    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=timezone.utc)


def _hash(data: Mapping[str, Any]) -> str:
    return hashlib.sha256(_blob(data).encode("utf-8")).hexdigest()


# json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False) without building
# an encoder per call (the hash of sync.store.snapshots.fields_hash).
_ENCODE = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode


def _blob(data: Mapping[str, Any]) -> str:
    """The canonical JSON text of a snapshot: what its hash is taken of, and (being valid JSON)
    what is stored, so each snapshot is serialized once."""
    return _ENCODE(data)


def save_plan_state(session: Session, plan: Plan, *, run_id: int | None = None, existing: Iterable[tuple[int, str]] = ()) -> None:
    """Store what a plan decided that needs no remote call: golden records (version + 1, no
    longer dirty), snapshots confirmed by reading (``plan.snapshots``) and conflicts.
    ``existing``: the (person, connection) snapshots already stored (inserts vs updates).

    A backfill stores a million of each: the rows go to the driver as plain tuples (JSON text
    serialized here, the timestamp converted once) — one ``executemany`` per statement on
    SQLite, one statement over arrays on PostgreSQL — not through per-row SQLAlchemy
    parameter processing."""
    now = utcnow()
    conn = session.connection()
    pg = conn.dialect.name == "postgresql"
    stamp = _bind_value(conn, Person.__table__.c.updated_at, now)
    texts_of: dict[int, str] = {}
    if plan.golden:
        ids = list(plan.golden)
        texts = [_blob(fields_to_json(g)) for g in plan.golden.values()]
        texts_of = dict(zip(ids, texts))
        if pg:
            conn.execute(
                text(
                    "UPDATE persons AS p SET fields = v.f, version = p.version + 1, updated_at = :now, dirty = false "
                    "FROM unnest(CAST(:ids AS bigint[]), CAST(:fs AS jsonb[])) AS v(id, f) WHERE p.id = v.id"
                ).bindparams(bindparam("now", type_=Person.__table__.c.updated_at.type)),
                {"ids": ids, "fs": texts, "now": now},
            )
        else:
            conn.exec_driver_sql(
                "UPDATE persons SET fields = ?, version = version + 1, updated_at = ?, dirty = 0 WHERE id = ?",
                [(f, stamp, pid) for pid, f in zip(ids, texts)],
            )
    stored = set(existing)
    inserts: list[tuple[int, str, str, str]] = []
    updates: list[tuple[int, str, str, str]] = []
    golden = plan.golden
    for (pid, connection), snap in plan.snapshots.items():
        # A person first seen on one connection: its snapshot there is its golden record,
        # already serialized above.
        g = golden.get(pid)
        blob = texts_of[pid] if g is not None and (snap is g or snap == g) else _blob(fields_to_json(snap))
        row = (pid, connection, blob, hashlib.sha256(blob.encode("utf-8")).hexdigest())
        (updates if (pid, connection) in stored else inserts).append(row)
    if inserts:
        if pg:
            pids, conns, blobs, hashes = (list(c) for c in zip(*inserts))
            conn.execute(
                text(
                    "INSERT INTO snapshots (person_id, connection, fields, hash, updated_at) "
                    "SELECT v.p, v.c, v.f, v.h, :now FROM unnest(CAST(:p AS bigint[]), CAST(:c AS text[]), "
                    "CAST(:f AS jsonb[]), CAST(:h AS text[])) AS v(p, c, f, h)"
                ).bindparams(bindparam("now", type_=Snapshot.__table__.c.updated_at.type)),
                {"p": pids, "c": conns, "f": blobs, "h": hashes, "now": now},
            )
        else:
            conn.exec_driver_sql(
                "INSERT INTO snapshots (person_id, connection, fields, hash, updated_at) VALUES (?, ?, ?, ?, ?)",
                [(*row, stamp) for row in inserts],
            )
    if updates:
        if pg:
            pids, conns, blobs, hashes = (list(c) for c in zip(*updates))
            conn.execute(
                text(
                    "UPDATE snapshots AS s SET fields = v.f, hash = v.h, updated_at = :now FROM unnest("
                    "CAST(:p AS bigint[]), CAST(:c AS text[]), CAST(:f AS jsonb[]), CAST(:h AS text[])) AS v(p, c, f, h) "
                    "WHERE s.person_id = v.p AND s.connection = v.c"
                ).bindparams(bindparam("now", type_=Snapshot.__table__.c.updated_at.type)),
                {"p": pids, "c": conns, "f": blobs, "h": hashes, "now": now},
            )
        else:
            conn.exec_driver_sql(
                "UPDATE snapshots SET fields = ?, hash = ?, updated_at = ? WHERE person_id = ? AND connection = ?",
                [(blob, digest, stamp, pid, connection) for pid, connection, blob, digest in updates],
            )
    if plan.conflicts:
        rows = []
        for c in plan.conflicts:
            data = c.to_json()
            rows.append(
                {
                    "run_id": run_id,
                    "person_id": c.person_id,
                    "field": c.field,
                    "candidates": data["candidates"],
                    "decision": data["decision"],
                    "rule": c.rule[:64],
                    "needs_review": c.needs_review,
                    "created_at": now,
                }
            )
        session.execute(insert(Conflict.__table__), rows)


def _bind_value(conn: Any, column: Any, value: Any) -> Any:
    """``value`` as the driver receives it for ``column`` (SQLite: the naive-UTC text form)."""
    process = column.type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
    return process(value) if process is not None else value


__all__ = [
    "MatchOutcome",
    "MatchRows",
    "PersonRows",
    "RecordRow",
    "ReviewRow",
    "dirty_person_ids",
    "load_match_input",
    "load_person_views",
    "save_match",
    "save_plan_state",
]

