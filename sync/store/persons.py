"""Persons in the store: what matching and reconcile read and write (bulk statements only).

* :func:`load_match_input` — the dirty records, the records sharing a key with them, and every
  record of the persons those belong to (an incremental run touches only the neighbourhood of
  what changed); everything when most of the store is dirty (a backfill).
  Every incremental query is an index look-up bounded by the change (migration 0002's partial
  indexes serve the dirty and merged rows); a whole-store load reads each column as one
  aggregated string (``group_concat`` / ``string_agg``) parsed in C.
* :func:`save_match` — new persons, person ids, folds (a person merged into another keeps its
  row with ``merged_into``; its snapshots move to the survivor), inferred merges, reviews; the
  matched records are no longer dirty and the persons they touch are. A record is rewritten
  once (person id and dirty flag together).
* :func:`load_person_views` — per dirty person: golden record, records with payloads, snapshots.
* :func:`save_plan_state` — golden records, read-confirmed snapshots and conflicts of a plan.

Functions take a ``Session``; code outside ``sync/store`` calls them through the repository
:class:`Persons` — ``store.persons`` (each call its own transaction) or ``tx.persons`` of a
``store.transaction()`` (matching and planning in one unit of work, committed part-way when
streaming, rolled back for a dry run).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Row,
    Select,
    String,
    Text,
    and_,
    any_,
    bindparam,
    cast,
    func,
    insert,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session
from sqlalchemy.schema import AddConstraint, DropConstraint

from sync.arrays import sorted_unique
from sync.canonical import FieldDict, fields_from_json, fields_to_json
from sync.plan.model import Plan
from sync.store import bulk
from sync.store.decisions import mark_decisions_applied, match_decisions
from sync.store.models import (
    Conflict,
    IdentityKey,
    MatchReview,
    Person,
    RemoteRecord,
    Snapshot,
    utcnow,
)
from sync.store.replan import mark_all_persons_dirty_in
from sync.store.status import PersonRecords, persons_with_records

if TYPE_CHECKING:
    from sync.store.db import Sessions

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
    which records were dirty. Records are in id order. Numbers and flags are NumPy arrays
    (``person_ids``: -1 for a record with no person yet), strings Python lists."""

    record_ids: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    connections: list[str] = field(default_factory=list)
    remote_ids: list[str] = field(default_factory=list)
    person_ids: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    merged_into: list[str | None] = field(default_factory=list)
    deleted: npt.NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, bool))
    dirty: npt.NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, bool))
    key_records: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    key_kinds: list[str] = field(default_factory=list)
    key_values: list[str] = field(default_factory=list)
    full: bool = False  # every record of the store was loaded

    def __len__(self) -> int:
        return len(self.record_ids)


def load_match_input(session: Session, *, full: bool | None = None) -> MatchRows:
    """The records matching must look at now (see the module docstring). ``full`` forces (True)
    or forbids (False) loading the whole store; None decides by the share of dirty records.

    Every query of an incremental load is an index look-up bounded by the change: the dirty
    records (partial index), their keys, the records sharing those keys, their merge partners
    (partial index on merged records) and the records of the persons all these belong to."""
    rr = RemoteRecord.__table__.c
    ik = IdentityKey.__table__.c
    refresh_statistics(session)
    # Counted in the partial index of dirty rows (never ``.is_(True)``: SQLite would scan).
    n_dirty = session.execute(select(func.count()).select_from(RemoteRecord.__table__).where(rr.dirty)).scalar_one()
    if not n_dirty:
        return MatchRows()
    if full is None and n_dirty < _SMALL:
        full = False  # a handful of changes: no need to count the store
    if full is None:
        total = session.execute(select(func.count()).select_from(RemoteRecord.__table__)).scalar_one()
        full = n_dirty >= _FULL_LOAD_SHARE * total
    if full:
        return _load_rows(session, None)

    dirty_ids = list(session.execute(select(rr.id).where(rr.dirty)).scalars())
    ids: set[int] = set(dirty_ids)
    # 1. Keys of the dirty records, then every record holding one of them (index: kind, value).
    by_kind: dict[str, set[str]] = {}
    for kind, value in session.execute(select(ik.kind, ik.value).where(_among(session, ik.record_id, dirty_ids))):
        by_kind.setdefault(kind, set()).add(value)
    for kind, values in by_kind.items():
        ids.update(
            session.execute(
                select(ik.record_id).where(ik.kind == kind, _among(session, ik.value, sorted(values)))
            ).scalars()
        )
    # 2. Merge partners: the survivors these records were merged into (unique connection,
    # remote_id), and the records merged into them (partial index on merged records).
    heads: dict[str, set[str]] = {}
    tails: dict[str, set[str]] = {}
    for conn, remote_id, merged_into in session.execute(
        select(rr.connection, rr.remote_id, rr.merged_into).where(_among(session, rr.id, sorted(ids)))
    ):
        tails.setdefault(conn, set()).add(remote_id)
        if merged_into:
            heads.setdefault(conn, set()).add(merged_into)
    for conn, remote_ids in heads.items():
        ids.update(
            session.execute(
                select(rr.id).where(rr.connection == conn, _among(session, rr.remote_id, sorted(remote_ids)))
            ).scalars()
        )
    for conn, remote_ids in tails.items():
        ids.update(
            session.execute(
                select(rr.id).where(
                    rr.connection == conn,
                    rr.merged_into.is_not(None),  # the partial index's predicate, spelled out
                    _among(session, rr.merged_into, sorted(remote_ids)),
                )
            ).scalars()
        )
    # 3. Whole persons: every record of every person touched (persons move as a whole).
    persons = sorted(
        set(
            session.execute(
                select(rr.person_id).where(_among(session, rr.id, sorted(ids)), rr.person_id.is_not(None))
            ).scalars()
        )
    )
    if persons:
        ids.update(session.execute(select(rr.id).where(_among(session, rr.person_id, persons))).scalars())
    return _load_rows(session, sorted(ids))


def refresh_statistics(session: Session) -> None:
    """PostgreSQL: fresh statistics for matching's and planning's look-ups where their tables
    changed much since last analyzed (:func:`sync.store.bulk.refresh_stats`). Called before
    every match, and after a large plan (so the next cycle does not pay for the backfill's)."""
    if not bulk.is_postgres(session):
        return
    # The look-ups of an incremental match are planned from the table's statistics: after a
    # backfill they would still say every record is dirty and has no person (sequential scans).
    bulk.refresh_stats(session, "remote_records", ("dirty", "person_id", "merged_into"))
    # The key look-ups too: with statistics from an emptier table the planner scans every
    # key and tests each against the whole array of values (seconds for a thousand changes).
    bulk.refresh_stats(session, "identity_keys", ("kind", "value", "record_id"))
    # And what the plan reads and writes by person: a backfill's plan fills ``snapshots``
    # (never analyzed, the snapshots of a thousand persons were read by a scan of all of a
    # million, half a second) and rewrites every person.
    bulk.refresh_stats(session, "persons", ("dirty", "merged_into"))
    bulk.refresh_stats(session, "snapshots", ("person_id",))


def _among(session: Session, col: ColumnElement[Any], values: Sequence[Any]) -> ColumnElement[bool]:
    """``col IN (values)`` with ONE bound parameter, however many values: an array on
    PostgreSQL (``= ANY``), a JSON array read by ``json_each`` on SQLite. No chunking, and no
    per-value placeholders for SQLAlchemy or the driver to render and parse."""
    values = [v.item() if isinstance(v, np.generic) else v for v in values]
    if session.get_bind().dialect.name == "postgresql":
        # One array literal the server parses (psycopg adapts a list element by element).
        if isinstance(col.type, String):
            return col == any_(cast(bindparam(None, bulk.text_array(values), type_=Text()), ARRAY(String())))
        return col == any_(cast(bindparam(None, bulk.int_array(values), type_=Text()), ARRAY(BigInteger())))
    # Raw UTF-8, not \u escapes: SQLite's JSON reader then has nothing to decode.
    listed = json.dumps(values, ensure_ascii=False)
    return col.in_(select(literal_column("value")).select_from(func.json_each(bindparam(None, listed))))


# Unit separator: joins a column's strings into one aggregate. A value containing it is caught
# by the count check and its block is read row by row instead.
_SEP = "\x1f"
# Ids per block of a whole-store load: bounds the aggregated strings (~20 MB) and SQLite's
# string length limit however large the store is.
_BLOCK = 500_000

_AGG = {
    "sqlite": {
        "ints": "group_concat({c}, ',')",
        "strs": "group_concat({c}, char(31))",
        "flags": "group_concat(CASE WHEN {c} THEN '1' ELSE '0' END, '')",
    },
    "postgresql": {
        "ints": "string_agg(({c})::text, ',')",
        "strs": "string_agg({c}, chr(31))",
        "flags": "string_agg(CASE WHEN {c} THEN '1' ELSE '0' END, '')",
    },
}
# (expression, how it is aggregated): the record columns matching reads, in MatchRows order.
_RECORD_COLS = (
    ("id", "ints"),
    ("connection", "strs"),
    ("remote_id", "strs"),
    ("coalesce(person_id, -1)", "ints"),
    ("deleted_at IS NOT NULL", "flags"),
    ("dirty", "flags"),
)
_KEY_COLS = (("record_id", "ints"), ("kind", "strs"), ("value", "strs"))


def _load_rows(session: Session, ids: list[int] | None) -> MatchRows:
    """Records ``ids`` (None: all) and their keys, in columns.

    Each column comes back as ONE aggregated string (``group_concat`` / ``string_agg``) that is
    split or parsed in C: no Python row or value object per record for the driver to build,
    which is most of the cost of reading millions of rows. A whole-store load goes in blocks
    of ids."""
    rr = RemoteRecord.__table__
    ik = IdentityKey.__table__
    out = MatchRows(full=ids is None)
    if ids is None:
        rec_parts = [
            _columns(session, rr, _RECORD_COLS, rr.c.id.between(lo, hi)) for lo, hi in _blocks(session, rr.c.id)
        ]
        key_parts = [_columns(session, ik, _KEY_COLS, ik.c.id.between(lo, hi)) for lo, hi in _blocks(session, ik.c.id)]
        merged_where: ColumnElement[bool] = rr.c.merged_into.is_not(None)
    else:
        if not ids:
            return out
        rec_parts = [_columns(session, rr, _RECORD_COLS, _among(session, rr.c.id, ids))]
        key_parts = [_columns(session, ik, _KEY_COLS, _among(session, ik.c.record_id, ids))]
        merged_where = and_(rr.c.merged_into.is_not(None), _among(session, rr.c.id, ids))
    rec_ids, conns, remote_ids, person_ids, deleted, dirty = _concat(rec_parts, _RECORD_COLS)
    if len(rec_ids) and not bool(np.all(rec_ids[1:] > rec_ids[:-1])):
        order = np.argsort(rec_ids, kind="stable")
        rec_ids, person_ids, deleted, dirty = rec_ids[order], person_ids[order], deleted[order], dirty[order]
        pick = order.tolist()
        conns = [conns[i] for i in pick]
        remote_ids = [remote_ids[i] for i in pick]
    out.record_ids, out.connections, out.remote_ids = rec_ids, conns, remote_ids
    out.person_ids, out.deleted, out.dirty = person_ids, deleted, dirty
    out.merged_into = [None] * len(rec_ids)
    merged_rows = session.execute(select(rr.c.id, rr.c.merged_into).where(merged_where)).all()
    if merged_rows and len(rec_ids):
        m_ids = np.asarray([r[0] for r in merged_rows], dtype=np.int64)
        at = np.minimum(np.searchsorted(rec_ids, m_ids), len(rec_ids) - 1)
        for pos, ok, (_, into) in zip(at.tolist(), (rec_ids[at] == m_ids).tolist(), merged_rows):
            if ok:
                out.merged_into[pos] = into

    key_rec, kinds, values = _concat(key_parts, _KEY_COLS)
    positions = np.searchsorted(rec_ids, key_rec) if len(rec_ids) else np.zeros(len(key_rec), np.int64)
    found = positions < len(rec_ids)
    found[found] = rec_ids[positions[found]] == key_rec[found]
    if not bool(found.all()):  # keys of records not loaded (a record staged meanwhile on PostgreSQL)
        keep = found.tolist()
        positions = positions[found]
        kinds = list(itertools.compress(kinds, keep))
        values = list(itertools.compress(values, keep))
    out.key_records = positions.astype(np.int64)
    out.key_kinds, out.key_values = kinds, values
    return out


def _blocks(session: Session, id_col: Any) -> list[tuple[int, int]]:
    """Inclusive id ranges of at most ``_BLOCK`` ids covering a table. MIN and MAX are asked
    apart: SQLite answers each from the primary key alone, but scans the table for both."""
    lo = session.execute(select(func.min(id_col))).scalar_one()
    hi = session.execute(select(func.max(id_col))).scalar_one()
    if lo is None:
        return []
    return [(start, min(start + _BLOCK - 1, hi)) for start in range(lo, hi + 1, _BLOCK)]


def _columns(session: Session, table: Any, cols: Sequence[tuple[str, str]], where: Any) -> list[Any]:
    """The rows of ``table`` matching ``where``, as one array or list per column of ``cols``."""
    agg = _AGG[session.get_bind().dialect.name]
    stmt: Select[*tuple[Any, ...]] = (
        select(
            func.count(),
            *(literal_column(agg[how].format(c=expr)) for expr, how in cols),
        )
        .select_from(table)
        .where(where)
    )
    n, *texts = session.execute(stmt).one()
    if not n:
        return [_parse("", how, 0) for _, how in cols]
    parsed = [_parse(t, how, n) for t, (_, how) in zip(texts, cols)]
    if all(p is not None for p in parsed):
        return parsed
    # A separator inside a value: this block row by row (never in practice, always right).
    rows: Sequence[Row[*tuple[Any, ...]]] = session.execute(
        select(*(literal_column(expr) for expr, _ in cols)).select_from(table).where(where)
    ).all()
    out: list[Any] = []
    for (_, how), col in zip(cols, zip(*rows)):
        if how == "ints":
            out.append(np.asarray(col, dtype=np.int64))
        elif how == "flags":
            out.append(np.asarray([bool(v) for v in col], dtype=bool))
        else:
            out.append(list(col))
    return out


def _parse(text_: str | None, how: str, n: int) -> Any:
    """One aggregated column back into ``n`` values; None when the count does not match."""
    if n == 0:
        return np.zeros(0, np.int64) if how == "ints" else np.zeros(0, bool) if how == "flags" else []
    if text_ is None:
        return None
    values: npt.NDArray[np.int64] | npt.NDArray[np.bool_] | list[str]
    if how == "ints":
        values = np.fromstring(text_, dtype=np.int64, sep=",")
    elif how == "flags":
        values = np.frombuffer(text_.encode("ascii"), dtype=np.uint8) == ord("1")
    else:
        values = text_.split(_SEP)
    return values if len(values) == n else None


def _concat(parts: list[list[Any]], cols_spec: Sequence[tuple[str, str]]) -> list[Any]:
    """Column-wise concatenation of blocks from :func:`_columns`."""
    if not parts:
        return [_parse("", how, 0) for _, how in cols_spec]
    out: list[Any] = []
    for i in range(len(cols_spec)):
        cols = [p[i] for p in parts]
        if isinstance(cols[0], np.ndarray):
            out.append(np.concatenate(cols) if len(cols) > 1 else cols[0])
        else:
            out.append(list(itertools.chain.from_iterable(cols)) if len(cols) > 1 else cols[0])
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
    final = np.asarray(person_of, dtype=np.int64)
    created = np.zeros(0, np.int64)
    if new_persons:
        if bulk.is_postgres(session):
            created = _insert_new_persons_pg(session, new_persons, now)
        else:
            created = np.asarray(_allocate_person_ids(session, new_persons), dtype=np.int64)
            _insert_persons(session, created.tolist(), now)
        new_ids = dict(zip(range(-1, -new_persons - 1, -1), created.tolist()))
        final = np.where(final < 0, created[np.clip(-final - 1, 0, None)], final)
    old = _person_array(rows.person_ids)
    dirty = np.asarray(rows.dirty, dtype=bool)
    changed = old != final
    ids = np.asarray(rows.record_ids, dtype=np.int64)
    n_changed = int(np.count_nonzero(changed))
    rewrite = rows.full and n_changed >= _BIG and 4 * n_changed >= len(rows)
    if rewrite and bulk.is_postgres(session):
        # The same on PostgreSQL, and the foreign key to persons too: checked row by row (a
        # trigger firing a look-up and a row lock per record), where adding it back afterwards
        # validates every row in one join. Both inside this transaction, as above; the
        # constraint and the index come back under their own names and definitions.
        with _person_links_rebuilt(session):
            if not _rewrite_records_pg(session, ids, final, changed, dirty):
                _write_records(session, ids, final, changed, dirty)
    elif rewrite:
        # A backfill moves (nearly) every record: maintaining the person_id index row by row
        # (random B-tree edits competing with the row pages for the cache) costs more than
        # the rewrite itself; building it again afterwards is one sort. Inside this
        # transaction, so a failure rolls the index back with everything else.
        index = next(ix for ix in RemoteRecord.__table__.indexes if ix.name == "ix_remote_records_person_id")
        index.drop(session.connection())
        _write_records(session, ids, final, changed, dirty)
        index.create(session.connection())
    else:
        _write_records(session, ids, final, changed, dirty)
    rr = RemoteRecord.__table__
    inferred = [
        {"b_id": int(rows.record_ids[i]), "b_into": rows.remote_ids[j]}
        for i, j in merged.items()
        if rows.merged_into[i] != rows.remote_ids[j]
    ]
    if inferred:
        session.execute(
            update(rr).where(rr.c.id == bindparam("b_id")).values(merged_into=bindparam("b_into")), inferred
        )

    folded = {int(a): int(b) for a, b in folds.items()}
    if folded:
        _fold_persons(session, folded, now)

    # The persons to reconcile: those of the dirty records and of every record that moved.
    touched_arr = sorted_unique(np.concatenate([final[dirty | changed], np.asarray(list(folded.values()), np.int64)]))
    if folded:
        touched_arr = touched_arr[~np.isin(touched_arr, np.asarray(list(folded), np.int64))]
    # New persons were inserted dirty; only existing ones need the flag.
    # (created ids are consecutive from created[0] on SQLite, drawn from a sequence on PostgreSQL)
    old_persons = touched_arr[~np.isin(touched_arr, created, assume_unique=True)] if len(created) else touched_arr
    if len(old_persons):
        pt = Person.__table__
        session.execute(update(pt).where(_among(session, pt.c.id, old_persons.tolist())).values(dirty=True))

    if reviews:
        _save_reviews(session, reviews, now)
    return MatchOutcome(new_ids, set(touched_arr.tolist()), folded)


@contextmanager
def _person_links_rebuilt(session: Session) -> Iterator[None]:
    """PostgreSQL: ``remote_records.person_id``'s index and foreign key dropped for the block
    and created again after it (a rewrite of most records: see :func:`save_match`)."""
    table = RemoteRecord.__table__
    index = next(ix for ix in table.indexes if ix.name == "ix_remote_records_person_id")
    fk = next(c for c in table.foreign_key_constraints if c.column_keys == ["person_id"])
    conn = session.connection()
    conn.execute(DropConstraint(fk))
    index.drop(conn)
    yield
    index.create(conn)
    conn.execute(AddConstraint(fk))


# Ids spanned by one whole-table rewrite at most (its arrays are statement literals: 1M ids
# make some 9 MB of SQL text).
_REWRITE_SPAN = 20_000_000


def _rewrite_records_pg(
    session: Session,
    ids: npt.NDArray[np.int64],
    persons: npt.NDArray[np.int64],
    changed: npt.NDArray[np.bool_],
    dirty: npt.NDArray[np.bool_],
) -> bool:
    """PostgreSQL, a backfill's match: what :func:`_write_records` writes, as ONE rewrite of
    the table (``ALTER TABLE ... ALTER COLUMN ... TYPE ... USING``) instead of an UPDATE of
    every row. An UPDATE writes a new version of each wide row (payload and all) next to the
    old one, with a WAL record and new index entries per row: 20-28 s for a million records,
    and a table twice its size until vacuumed. The rewrite writes each page once, rebuilds
    the indexes by sorting, and leaves no dead rows: 7 s. The person and the loaded-dirty
    flag of each record are two array constants indexed by record id (the statement cannot
    take parameters); rows outside them (staged after the load) keep their values, and only
    rows loaded dirty are cleared, as in the UPDATE. The table's ACCESS EXCLUSIVE lock is
    already held (see :func:`_person_links_rebuilt`). Returns False where it does not apply
    (ids too sparse, or a record left without a person), for the caller to UPDATE instead."""
    touch = changed | dirty
    if not len(ids) or not touch.any():
        return True
    lo, hi = int(ids.min()), int(ids.max())
    if hi - lo + 1 > _REWRITE_SPAN or hi - lo + 1 > 4 * len(ids) or bool((persons[touch] < 1).any()):
        return False
    span = hi - lo + 1
    # 0: keep the row's person (ids are >= 1); dense, so subscripting is a direct offset
    # (an array holding NULLs would be scanned from its start for every row).
    person_at = np.zeros(span, np.int64)
    person_at[ids[touch] - lo] = persons[touch]
    clear_at = np.zeros(span, bool)
    clear_at[ids[dirty] - lo] = True
    p_literal = "{" + _joined(person_at) + "}"
    c_literal = "{" + ",".join(np.where(clear_at, "t", "f").tolist()) + "}"
    at = f"(id - {lo - 1})"
    session.connection().exec_driver_sql(
        "ALTER TABLE remote_records "
        f"ALTER COLUMN person_id TYPE bigint USING coalesce(nullif(('{p_literal}'::bigint[])[{at}], 0), person_id), "
        f"ALTER COLUMN dirty TYPE boolean USING dirty AND NOT coalesce(('{c_literal}'::boolean[])[{at}], false)"
    )
    # A rewrite counts as no change to PostgreSQL's statistics and drops the two columns'
    # statistics: taken again here, in this transaction (it holds the table's lock), so the
    # next incremental match finds its few dirty rows by the partial index, not a scan.
    bulk.analyze(session, "remote_records", ("dirty", "person_id", "merged_into"))
    return True


def _joined(values: npt.NDArray[np.int64], block: int = 65_536) -> str:
    """Integers as one comma-separated string, formatted a block at a time (a Python int and
    str per value for a million values at once would hold some 100 MB until joined)."""
    return ",".join(",".join(map(str, values[i : i + block].tolist())) for i in range(0, len(values), block))


def _insert_new_persons_pg(session: Session, n: int, now: datetime) -> npt.NDArray[np.int64]:
    """PostgreSQL: ``n`` new, empty, dirty persons under ids drawn from the sequence, in ONE
    statement that returns the ids as one string (no row per id to fetch), ascending."""
    stmt = text(
        "WITH created AS (INSERT INTO persons (id, fields, version, updated_at, dirty) "
        "SELECT nextval(q.seq), '{}'::jsonb, 0, :now, true "
        "FROM (SELECT pg_get_serial_sequence('persons', 'id')::regclass AS seq OFFSET 0) AS q, "
        "generate_series(1, :n) RETURNING id) "
        "SELECT string_agg(id::text, ',' ORDER BY id) FROM created"
    ).bindparams(bindparam("now", type_=Person.__table__.c.updated_at.type))
    listed = session.execute(stmt, {"n": n, "now": now}).scalar_one()
    ids = np.fromstring(listed, dtype=np.int64, sep=",")
    assert len(ids) == n
    return ids


def _person_array(person_ids: Sequence[int | None] | npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Person ids as int64, -1 for none."""
    if isinstance(person_ids, np.ndarray):
        return person_ids.astype(np.int64, copy=False)
    return np.asarray([-1 if p is None else p for p in person_ids], dtype=np.int64)


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


def _write_records(
    session: Session,
    ids: npt.NDArray[np.int64],
    persons: npt.NDArray[np.int64],
    changed: npt.NDArray[np.bool_],
    dirty: npt.NDArray[np.bool_],
) -> None:
    """New person ids and cleared dirty flags in ONE write per record: a record whose person
    changed gets both in one UPDATE (each UPDATE rewrites the whole row, payload included, so
    two passes cost twice the pages). Only records loaded dirty are cleared — never a blanket
    ``WHERE dirty``, which would swallow a record staged meanwhile (PostgreSQL)."""
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        touch = changed | dirty
        if touch.any():
            # (id, person, loaded dirty) in one binary COPY, then one UPDATE ... FROM it. Rows
            # only moved keep their dirty flag as it is now (a concurrent stage may have set it).
            with bulk.temp_table(session, "match_person", "id bigint, p bigint, c boolean") as tmp:
                bulk.copy_numbers(session, tmp, {"id": ids[touch], "p": persons[touch], "c": dirty[touch]})
                session.execute(
                    text(
                        f"UPDATE remote_records AS r SET person_id = v.p, dirty = r.dirty AND NOT v.c "
                        f"FROM {tmp} AS v WHERE r.id = v.id"
                    )
                )
        return
    # SQLite: this transaction holds the write lock since it began (BEGIN IMMEDIATE), so a row
    # read clean is still clean: every written row can be left clean.
    if changed.any():
        pairs = list(zip(ids[changed].tolist(), persons[changed].tolist()))
        if sqlite3.sqlite_version_info >= (3, 33):
            # One UPDATE ... FROM over a temporary table of (id, person): a third faster than
            # an executemany of row UPDATEs (no per-statement reset and re-bind per row).
            conn.exec_driver_sql("DROP TABLE IF EXISTS temp.match_person")
            conn.exec_driver_sql("CREATE TEMP TABLE match_person (id INTEGER PRIMARY KEY, person_id INTEGER NOT NULL)")
            try:
                conn.exec_driver_sql("INSERT INTO match_person (id, person_id) VALUES (?, ?)", pairs)
                conn.exec_driver_sql(
                    "UPDATE remote_records SET person_id = m.person_id, dirty = 0 "
                    "FROM match_person AS m WHERE remote_records.id = m.id"
                )
            finally:
                conn.exec_driver_sql("DROP TABLE match_person")
        else:  # pragma: no cover - SQLite before 3.33 (2020) has no UPDATE ... FROM
            conn.exec_driver_sql(
                "UPDATE remote_records SET person_id = ?, dirty = 0 WHERE id = ?", [(p, i) for i, p in pairs]
            )
    only_dirty = dirty & ~changed
    if only_dirty.any():
        conn.exec_driver_sql(
            "UPDATE remote_records SET dirty = 0 WHERE id = ?", [(i,) for i in ids[only_dirty].tolist()]
        )


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
        update(pt)
        .where(pt.c.id == bindparam("b_id"))
        .values(merged_into=bindparam("b_into"), dirty=False, updated_at=now),
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
        for person_id, conn in session.execute(
            select(st.c.person_id, st.c.connection).where(st.c.person_id.in_(chunk))
        ):
            if person_id in folded:
                loser_snaps.append((person_id, conn))
            else:
                have.add((person_id, conn))
    # Decided here, written in two batched statements (not a round trip per snapshot): the
    # rows dropped and the rows moved are distinct, so their order does not matter.
    drops: list[dict[str, Any]] = []
    moves: list[dict[str, Any]] = []
    for person_id, conn in sorted(loser_snaps):
        target = folded[person_id]
        if (target, conn) in have:
            drops.append({"b_p": person_id, "b_c": conn})
        else:
            moves.append({"b_p": person_id, "b_c": conn, "b_t": target})
            have.add((target, conn))
    where = and_(st.c.person_id == bindparam("b_p"), st.c.connection == bindparam("b_c"))
    if drops:
        session.execute(st.delete().where(where), drops)
    if moves:
        session.execute(update(st).where(where).values(person_id=bindparam("b_t")), moves)


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
    version: int = 0  # read with the golden record: the plan saves only if it is unchanged


def dirty_person_ids(session: Session) -> list[int]:
    """Persons waiting for reconcile (not folded away)."""
    pt = Person.__table__.c
    if bulk.is_postgres(session):
        # After a backfill's planning, statistics taken before it would still call every
        # person dirty (a scan of the table instead of the partial index).
        bulk.refresh_stats(session, "persons", ("dirty", "merged_into"))
    # ``.where(pt.dirty)``, not ``.is_(True)``: the partial index ix_persons_dirty then serves it.
    return list(session.execute(select(pt.id).where(pt.dirty, pt.merged_into.is_(None)).order_by(pt.id)).scalars())


def load_person_views(session: Session, person_ids: Sequence[int]) -> list[PersonRows]:
    """Golden record, records and snapshots of each person, in ``person_ids`` order.

    Read through the driver's cursor (a backfill loads a million records with their payloads:
    SQLAlchemy's per-row result processing cost more than the query), JSON and timestamps
    decoded here the way the column types would. JSON columns are read as text and parsed
    here on both stores (psycopg's own jsonb loader costs a third more per value)."""
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
        for pid, fields, version in _raw(
            session, f"SELECT id, CAST(fields AS TEXT), version FROM persons WHERE id {within}"
        ):
            if pid in wanted:
                out[pid] = PersonRows(pid, fields_from_json(_json(fields) or {}), version=int(version or 0))
        rows = _raw(
            session,
            "SELECT id, connection, remote_id, CAST(payload AS TEXT), remote_updated_at, deleted_at IS NOT NULL, "
            "merged_into, "
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
            session, f"SELECT person_id, connection, CAST(fields AS TEXT) FROM snapshots WHERE person_id {within}"
        ):
            person = out.get(pid)
            if person is not None:
                person.snapshots[connection] = fields_from_json(_json(fields) or {})
    return [out[p] for p in person_ids if p in out]


def _raw(session: Session, sql: str) -> list[tuple[Any, ...]]:
    """All rows of a constant query, fetched by the driver in the session's transaction."""
    cursor = session.connection().connection.cursor()
    try:
        cursor.execute(sql)
        return list(cursor.fetchall())
    finally:
        cursor.close()


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


_UTC = UTC


def _timestamp(value: Any) -> datetime | None:
    """A timestamp column from the driver as a UTC-aware datetime (SQLite keeps naive UTC text)."""
    if value is None:
        return None
    # The driver gives a datetime on PostgreSQL, ISO text on SQLite.
    stamp: datetime = datetime.fromisoformat(value) if isinstance(value, str) else value
    return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=_UTC)


# json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False) without building
# an encoder per call (the hash of sync.store.snapshots.fields_hash).
_ENCODE = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode


def _blob(data: Mapping[str, Any]) -> str:
    """The canonical JSON text of a snapshot: what its hash is taken of, and (being valid JSON)
    what is stored, so each snapshot is serialized once."""
    return _ENCODE(data)


def save_plan_state(
    session: Session,
    plan: Plan,
    *,
    run_id: int | None = None,
    existing: Iterable[tuple[int, str]] = (),
    versions: Mapping[int, int] | None = None,
) -> set[int]:
    """Store what a plan decided that needs no remote call: golden records (version + 1, no
    longer dirty), snapshots confirmed by reading (``plan.snapshots``) and conflicts.
    ``existing``: the (person, connection) snapshots already stored (inserts vs updates).

    ``versions`` (person → the version its golden record was read at) makes the save
    optimistic: a person whose version moved meanwhile (a manual resolution committed while
    the plan was computed) is not saved and stays dirty; nothing of the plan is stored for
    it, and those persons are returned (their ops must not be queued).

    A backfill stores a million of each: the rows go to the driver as plain tuples (JSON text
    serialized here, the timestamp converted once) — one ``executemany`` per statement on
    SQLite, one statement over arrays on PostgreSQL — not through per-row SQLAlchemy
    parameter processing."""
    now = utcnow()
    conn = session.connection()
    pg = conn.dialect.name == "postgresql"
    stamp = _bind_value(conn, Person.__table__.c.updated_at, now)
    texts_of: dict[int, str] = {}
    rejected: set[int] = set()
    if plan.golden:
        ids = list(plan.golden)
        texts = [_blob(fields_to_json(g)) for g in plan.golden.values()]
        texts_of = dict(zip(ids, texts))
        vers = [int(versions.get(pid, -1)) for pid in ids] if versions is not None else None
        if pg:
            # COPY into a temp table, one UPDATE from it; optimistic (``versions``): only where
            # the version is still the one the plan read.
            with bulk.temp_table(session, "plan_golden", "id bigint, f jsonb, ver integer") as tmp:
                jf = bulk.json_field
                lines = (
                    f"{pid}\t{jf(f)}\t{v}\n"
                    for pid, f, v in zip(ids, texts, vers if vers is not None else [0] * len(ids))
                )
                bulk.copy_lines(session, tmp, ("id", "f", "ver"), lines)
                guard = " AND p.version = v.ver" if vers is not None else ""
                saved = conn.execute(
                    text(
                        "UPDATE persons AS p SET fields = v.f, version = p.version + 1, updated_at = :now, "
                        f"dirty = false FROM {tmp} AS v WHERE p.id = v.id{guard} RETURNING p.id"
                    ).bindparams(bindparam("now", type_=Person.__table__.c.updated_at.type)),
                    {"now": now},
                )
                if vers is not None:
                    # The persons whose version moved meanwhile are those the UPDATE skipped.
                    rejected = set(ids).difference(int(r[0]) for r in saved)
        elif vers is not None:
            conn.exec_driver_sql(
                "UPDATE persons SET fields = ?, version = version + 1, updated_at = ?, dirty = 0 "
                "WHERE id = ? AND version = ?",
                [(f, stamp, pid, v) for pid, f, v in zip(ids, texts, vers)],
            )
        else:
            conn.exec_driver_sql(
                "UPDATE persons SET fields = ?, version = version + 1, updated_at = ?, dirty = 0 WHERE id = ?",
                [(f, stamp, pid) for pid, f in zip(ids, texts)],
            )
        if vers is not None and not pg:
            # (SQLite: executemany reports no per-row result.) Every person of the plan was
            # dirty; one whose version moved was not saved and still is (the partial index of
            # dirty persons answers this).
            flag = "dirty" if pg else "dirty = 1"
            for chunk in _chunks(sorted(ids)):
                rejected.update(
                    int(r[0])
                    for r in _raw(
                        session, f"SELECT id FROM persons WHERE {flag} AND id IN ({','.join(map(str, chunk))})"
                    )
                )
    stored = set(existing)
    inserts: list[tuple[int, str, str, str]] = []
    updates: list[tuple[int, str, str, str]] = []
    golden = plan.golden
    for (pid, connection), snap in plan.snapshots.items():
        if pid in rejected:
            continue
        # A person first seen on one connection: its snapshot there is its golden record,
        # already serialized above.
        g = golden.get(pid)
        blob = texts_of[pid] if g is not None and (snap is g or snap == g) else _blob(fields_to_json(snap))
        row = (pid, connection, blob, hashlib.sha256(blob.encode("utf-8")).hexdigest())
        (updates if (pid, connection) in stored else inserts).append(row)
    if inserts:
        if pg:
            jf, cf, at = bulk.json_field, bulk.copy_field, now.isoformat()
            bulk.copy_lines(
                session,
                "snapshots",
                ("person_id", "connection", "fields", "hash", "updated_at"),
                (f"{pid}\t{cf(c)}\t{jf(blob)}\t{digest}\t{at}\n" for pid, c, blob, digest in inserts),
            )
        else:
            conn.exec_driver_sql(
                "INSERT INTO snapshots (person_id, connection, fields, hash, updated_at) VALUES (?, ?, ?, ?, ?)",
                [(*row, stamp) for row in inserts],
            )
    if updates:
        if pg:
            with bulk.temp_table(session, "plan_snapshot", "p bigint, c text, f jsonb, h text") as tmp:
                jf, cf = bulk.json_field, bulk.copy_field
                bulk.copy_lines(
                    session,
                    tmp,
                    ("p", "c", "f", "h"),
                    (f"{pid}\t{cf(c)}\t{jf(blob)}\t{digest}\n" for pid, c, blob, digest in updates),
                )
                conn.execute(
                    text(
                        f"UPDATE snapshots AS s SET fields = v.f, hash = v.h, updated_at = :now FROM {tmp} AS v "
                        "WHERE s.person_id = v.p AND s.connection = v.c"
                    ).bindparams(bindparam("now", type_=Snapshot.__table__.c.updated_at.type)),
                    {"now": now},
                )
        else:
            conn.exec_driver_sql(
                "UPDATE snapshots SET fields = ?, hash = ?, updated_at = ? WHERE person_id = ? AND connection = ?",
                [(blob, digest, stamp, pid, connection) for pid, connection, blob, digest in updates],
            )
    if plan.conflicts and pg:
        bulk.copy_rows(
            session,
            "conflicts",
            ("run_id", "person_id", "field", "candidates", "decision", "rule", "needs_review", "created_at"),
            (
                (
                    run_id,
                    c.person_id,
                    c.field,
                    json.dumps(d["candidates"]),
                    json.dumps(d["decision"]),
                    c.rule[:64],
                    c.needs_review,
                    now,
                )
                for c in plan.conflicts
                if c.person_id not in rejected
                for d in (c.to_json(),)
            ),
        )
    elif plan.conflicts:
        rows = []
        for c in plan.conflicts:
            if c.person_id in rejected:
                continue
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
        if rows:
            session.execute(insert(Conflict.__table__), rows)
    return rejected


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
    "refresh_statistics",
    "save_match",
    "save_plan_state",
]


class Persons:
    """Matching and planning state: the repository ``store.persons`` / ``tx.persons``. Each
    method runs its function of this module in the repository's transaction."""

    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions

    def load_match_input(self, *, full: bool | None = None) -> MatchRows:
        """See :func:`load_match_input`."""
        with self._sessions() as session:
            return load_match_input(session, full=full)

    def save_match(
        self,
        rows: MatchRows,
        person_of: Sequence[int],
        *,
        folds: Mapping[int, int],
        merged: Mapping[int, int],
        reviews: Sequence[ReviewRow],
        new_persons: int,
    ) -> MatchOutcome:
        """See :func:`save_match`."""
        with self._sessions.begin() as session:
            return save_match(
                session, rows, person_of, folds=folds, merged=merged, reviews=reviews, new_persons=new_persons
            )

    def refresh_statistics(self) -> None:
        """See :func:`refresh_statistics`."""
        with self._sessions() as session:
            refresh_statistics(session)

    def dirty_person_ids(self) -> list[int]:
        """See :func:`dirty_person_ids`."""
        with self._sessions() as session:
            return dirty_person_ids(session)

    def load_person_views(self, person_ids: Sequence[int]) -> list[PersonRows]:
        """See :func:`load_person_views`."""
        with self._sessions() as session:
            return load_person_views(session, person_ids)

    def save_plan_state(
        self,
        plan: Plan,
        *,
        run_id: int | None = None,
        existing: Iterable[tuple[int, str]] = (),
        versions: Mapping[int, int] | None = None,
    ) -> set[int]:
        """See :func:`save_plan_state`."""
        with self._sessions.begin() as session:
            return save_plan_state(session, plan, run_id=run_id, existing=existing, versions=versions)

    def mark_all_dirty(self) -> int:
        """Mark every live person dirty (re-planning everyone); see
        :func:`sync.store.replan.mark_all_persons_dirty_in`."""
        with self._sessions.begin() as session:
            return mark_all_persons_dirty_in(session)

    def match_decisions(self) -> tuple[frozenset[tuple[str, str]], frozenset[tuple[str, str]]]:
        """The stored answers to ambiguous matches (linked keys, apart keys); see
        :func:`sync.store.decisions.match_decisions`."""
        with self._sessions() as session:
            return match_decisions(session)

    def mark_decisions_applied(self, decided_by: datetime) -> int:
        """See :func:`sync.store.decisions.mark_decisions_applied`."""
        with self._sessions() as session:
            return mark_decisions_applied(session, decided_by)

    def with_records(self, *, limit: int = 1000) -> list[PersonRecords]:
        """See :func:`sync.store.status.persons_with_records`."""
        with self._sessions() as session:
            return persons_with_records(session, limit=limit)
