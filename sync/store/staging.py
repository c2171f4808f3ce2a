"""Bulk staging of pulled records: one page, one transaction, one cursor step.

``stage_page`` upserts a page of records into ``remote_records`` with a handful of set-based
statements (not a row-at-a-time loop): a batched look-up of the stored hashes, one
``INSERT ... ON CONFLICT DO UPDATE`` for changed records (and, on SQLite, new ones), one
``UPDATE`` for records seen again unchanged, a batched delete and one bulk insert of identity
keys, and the connection's cursor position, all committed together, so a cursor never points
past rows that are not committed.

On PostgreSQL, records the look-up did not find are written with ``COPY`` (rows and their
identity keys, under ids drawn from the table's sequence up front): a plain bulk insert costs
the server about a third less than the upsert through a JSON record set, and the client less
still. Should another writer insert one of those records between the look-up and the ``COPY``
(a unique violation), the page is rolled back and staged again through the upsert.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    DateTime,
    Integer,
    Select,
    String,
    Text,
    and_,
    any_,
    bindparam,
    column,
    delete,
    func,
    literal,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.exc import DataError, DBAPIError, StatementError

from sync.normalize import IdentityKey as NormalizedKey
from sync.store.models import Base, Cursor, IdentityKey, Quarantine, RemoteRecord, utcnow
from sync.store.replan import mark_persons_dirty_in

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from sqlalchemy.orm import Session

    from sync.store.db import Sessions

# Column limits of remote_records / identity_keys (sync/store/models.py). Callers (sync/detect/stage)
# should quarantine a record that exceeds them; stage_page refuses the page with StageError.
MAX_REMOTE_ID_LENGTH = 128
MAX_KEY_KIND_LENGTH = 64
MAX_KEY_VALUE_LENGTH = 320

# Rows inserted through one Store before PostgreSQL statistics are first refreshed.
_ANALYZE_FIRST = 10_000

# Ids per IN (...) list: well under SQLite's 32,766 bound parameters.
_IN_CHUNK = 5_000

# Rows of COPY text handed to psycopg at a time: the server parses and inserts the first rows
# while the rest are still being formatted.
_COPY_CHUNK = 200

# Characters with a meaning in PostgreSQL's COPY text format, escaped in values.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


#: A staged record as :meth:`StagingMixin.staged_hashes` gives it: (payload hash, merged_into,
#: number of invalid values).
StagedHash = tuple[str, str | None, int]


class StageError(ValueError):
    """A page that cannot be staged as given (e.g. a remote id longer than the column)."""


@dataclass
class StagedRecord:
    """One pulled record, ready to stage.

    ``payload`` is the raw platform JSON, ``payload_hash`` its :func:`payload_hash`, ``keys``
    its normalized identity keys, ``invalid`` the values that did not normalize
    (``[{"field", "kind", "reason"}]``). ``merged_into`` is the surviving remote id when the
    platform reports the record merged; ``deleted`` marks a tombstone (the stored row keeps its
    last payload and keys, so matching can still tell what the record was)."""

    remote_id: str
    payload: dict[str, Any]
    payload_hash: str
    remote_updated_at: datetime | None
    keys: list[NormalizedKey]
    invalid: list[dict[str, Any]] = field(default_factory=list)
    merged_into: str | None = None
    deleted: bool = False
    # Set when ``keys``/``invalid`` were not read because the caller expects the stored row to be
    # unchanged (same hash): staging calls it if the row must be written after all (the stored
    # row changed meanwhile), so a row is never written without its keys.
    read_rest: Callable[[], tuple[list[NormalizedKey], list[dict[str, Any]]]] | None = None


@dataclass(frozen=True)
class StageResult:
    """What a page did: counts, the record id of every remote id in the page, and the remote
    ids that became dirty (new or changed)."""

    inserted: int
    changed: int
    unchanged: int
    record_ids: dict[str, int]
    dirty: list[str]


@dataclass(frozen=True)
class QuarantineEntry:
    """A payload that could not be staged, kept with its reason."""

    id: int
    connection: str
    remote_id: str | None
    raw: str
    reason: str
    created_at: datetime


def payload_hash(payload: dict[str, Any]) -> str:
    """A stable SHA-256 (hex) of the payload's canonical JSON: key order and whitespace do not
    matter; values that are not JSON types hash by their ``str``."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _chunks(items: Sequence[Any], size: int = _IN_CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _pg_recordset(name: str, param: str, **columns: Any) -> Any:
    """A FROM-able ``json_to_recordset(:param) AS name(col type, ...)`` (PostgreSQL): a whole
    page travels as ONE JSON parameter, which PostgreSQL parses far faster than psycopg adapts
    thousands of placeholders or text arrays of JSON."""
    return (
        func.json_to_recordset(bindparam(param, type_=postgresql.JSON))
        .table_valued(*(column(c, t) for c, t in columns.items()))
        .render_derived(name, with_types=True)
    )


def _pg_records_select(connection: str, now: datetime, scan_id: int | None) -> Select[Any]:
    """SELECT rows of remote_records from the ``records`` JSON parameter."""
    ts = DateTime(timezone=True)
    rows = _pg_recordset(
        "staged",
        "records",
        remote_id=Text,
        payload=JSONB,
        payload_hash=Text,
        remote_updated_at=ts,
        deleted_at=ts,
        merged_into=Text,
        invalid=JSONB,
    ).c
    return select(
        literal(connection, String),
        rows.remote_id,
        rows.payload,
        rows.payload_hash,
        rows.remote_updated_at,
        literal(now, ts),
        rows.deleted_at,
        rows.merged_into,
        rows.invalid,
        true(),
        literal(scan_id, Integer),
    )


_RECORD_COLUMNS = (
    "connection",
    "remote_id",
    "payload",
    "payload_hash",
    "remote_updated_at",
    "seen_at",
    "deleted_at",
    "merged_into",
    "invalid",
    "dirty",
    "last_scan",
)


def _sqlite_datetime(value: datetime | None) -> str | None:
    """A UTC-aware datetime as SQLAlchemy's SQLite DATETIME stores it (naive UTC; see
    models.UTCDateTime)."""
    if value is None:
        return None
    v = value.astimezone(UTC)
    return f"{v:%Y-%m-%d %H:%M:%S}.{v.microsecond:06d}"


def _key_pairs(r: StagedRecord) -> Iterable[tuple[str, str]]:
    """The record's distinct (kind, value) keys, in order."""
    return dict.fromkeys((k.kind, k.value) for k in r.keys)


def _copy_field(value: str | None) -> str:
    """A value as a field of PostgreSQL's COPY text format (``\\N`` is NULL)."""
    if value is None:
        return _NULL
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.translate(_COPY_ESCAPES)
    return value


def _check_aware(connection: str, records: Iterable[StagedRecord]) -> None:
    for r in records:
        if r.remote_updated_at is not None and r.remote_updated_at.tzinfo is None:
            raise StageError(f"{connection}/{r.remote_id}: remote_updated_at must be timezone-aware")


class _CopyRaced(Exception):
    """A record the look-up did not find was inserted by another writer before the COPY."""


def _dbapi_error(sql: str, error: Exception) -> Exception:
    """A psycopg error raised on the raw connection, wrapped like SQLAlchemy wraps driver
    errors of the statements it runs."""
    import psycopg

    return DBAPIError.instance(sql, None, error, psycopg.Error)


_NULL = "\\N"  # NULL in COPY text format

# Ids for n new remote_records rows. OFFSET 0 keeps the sequence look-up from being evaluated
# once per row.
_PG_NEXT_IDS = (
    "SELECT nextval(q.seq) FROM (SELECT pg_get_serial_sequence('remote_records', 'id')::regclass AS seq"
    " OFFSET 0) AS q, generate_series(1, %s)"
)
_PG_COPY_RECORDS = (
    "COPY remote_records (id, connection, remote_id, payload, payload_hash, remote_updated_at, seen_at,"
    " deleted_at, merged_into, invalid, dirty, last_scan) FROM STDIN"
)
_PG_COPY_KEYS = "COPY identity_keys (record_id, kind, value) FROM STDIN"


def _check(connection: str, records: Iterable[StagedRecord]) -> None:
    for r in records:
        if not r.remote_id or len(r.remote_id) > MAX_REMOTE_ID_LENGTH:
            raise StageError(
                f"{connection}: remote id of length {len(r.remote_id)} (1..{MAX_REMOTE_ID_LENGTH} allowed)"
            )
        if r.merged_into is not None and len(r.merged_into) > MAX_REMOTE_ID_LENGTH:
            raise StageError(f"{connection}/{r.remote_id}: merged_into longer than {MAX_REMOTE_ID_LENGTH}")
        for k in r.keys:
            if len(k.kind) > MAX_KEY_KIND_LENGTH or len(k.value) > MAX_KEY_VALUE_LENGTH:
                raise StageError(f"{connection}/{r.remote_id}: identity key {k.kind} is too long")


class StagingMixin:
    """Staging and quarantine operations of :class:`sync.store.Store`."""

    if TYPE_CHECKING:

        @property
        def dialect_name(self) -> str: ...

        def session(self) -> AbstractContextManager[Session]: ...

    def _insert(self, model: type[Base]) -> postgresql.Insert | sqlite.Insert:
        if self.dialect_name == "postgresql":
            return postgresql.insert(model.__table__)
        return sqlite.insert(model.__table__)

    def _among(self, col: ColumnElement[Any], values: Sequence[Any]) -> ColumnElement[bool]:
        """``col IN (values)``; on PostgreSQL ``col = ANY(:array)``, one parameter instead of
        thousands (psycopg parses every placeholder of a query on the client)."""
        if self.dialect_name == "postgresql":
            item: String | BigInteger = String() if isinstance(col.type, String) else BigInteger()
            return col == any_(bindparam(None, list(values), type_=ARRAY(item)))
        return col.in_(values)

    def _upsert_records(
        self, s: Session, connection: str, upserts: list[StagedRecord], now: datetime, scan_id: int | None
    ) -> dict[str, int]:
        """Write new and changed records (full rows, dirty) and insert their identity keys (old
        keys are already deleted); returns the record id of each remote id."""
        rr = RemoteRecord.__table__.c
        _check_aware(connection, upserts)
        ins: postgresql.Insert | sqlite.Insert
        if self.dialect_name == "postgresql":
            ins = postgresql.insert(RemoteRecord.__table__).from_select(
                list(_RECORD_COLUMNS),
                _pg_records_select(connection, now, scan_id),
            )
        else:
            ins = sqlite.insert(RemoteRecord.__table__).values({name: bindparam(name) for name in _RECORD_COLUMNS})
        stmt = ins.on_conflict_do_update(
            index_elements=[rr.connection, rr.remote_id],
            set_={
                "payload": ins.excluded.payload,
                "payload_hash": ins.excluded.payload_hash,
                "remote_updated_at": ins.excluded.remote_updated_at,
                "seen_at": ins.excluded.seen_at,
                "deleted_at": ins.excluded.deleted_at,
                "merged_into": ins.excluded.merged_into,
                "invalid": ins.excluded.invalid,
                "dirty": ins.excluded.dirty,  # always true: the row was written as new or changed
                "last_scan": func.coalesce(ins.excluded.last_scan, rr.last_scan),
            },
        )
        if self.dialect_name == "postgresql":
            stamp = now.isoformat()
            records = [
                {
                    "remote_id": r.remote_id,
                    "payload": r.payload,
                    "payload_hash": r.payload_hash,
                    "remote_updated_at": r.remote_updated_at.isoformat() if r.remote_updated_at else None,
                    "deleted_at": stamp if r.deleted else None,
                    "merged_into": r.merged_into,
                    "invalid": r.invalid or None,
                }
                for r in upserts
            ]
            keys = [
                {"remote_id": r.remote_id, "kind": kind, "value": value}
                for r in upserts
                for kind, value in _key_pairs(r)
            ]
            # One statement: the upsert's RETURNING feeds the key insert (a data-modifying CTE).
            staged = stmt.returning(rr.id, rr.remote_id).cte("staged")
            k = _pg_recordset("staged_keys", "keys", remote_id=Text, kind=Text, value=Text)
            add_keys = IdentityKey.__table__.insert().from_select(
                ["record_id", "kind", "value"],
                select(staged.c.id, k.c.kind, k.c.value).select_from(
                    staged.join(k, k.c.remote_id == staged.c.remote_id)
                ),
            )
            both = select(staged.c.id, staged.c.remote_id).add_cte(add_keys.cte("staged_key_rows"))
            return {remote_id: rid for rid, remote_id in s.execute(both, {"records": records, "keys": keys})}
        # SQLite: hand sqlite3's executemany ready-made tuples (the statement compiled once by
        # SQLAlchemy); per-row type processing in Python would cost more than SQLite's work.
        sql, order = self._sqlite_upsert_sql(stmt)
        when = _sqlite_datetime(now)
        rows = [
            {
                "connection": connection,
                "remote_id": r.remote_id,
                "payload": json.dumps(r.payload),
                "payload_hash": r.payload_hash,
                "remote_updated_at": _sqlite_datetime(r.remote_updated_at),
                "seen_at": when,
                "deleted_at": when if r.deleted else None,
                "merged_into": r.merged_into,
                "dirty": 1,
                "invalid": json.dumps(r.invalid) if r.invalid else None,  # SQL NULL, not JSON null
                "last_scan": scan_id,
            }
            for r in upserts
        ]
        conn = s.connection()
        conn.exec_driver_sql(sql, [tuple(row[name] for name in order) for row in rows])
        ids: dict[str, int] = {}
        for chunk in _chunks([r.remote_id for r in upserts]):
            q = select(rr.id, rr.remote_id).where(rr.connection == connection, rr.remote_id.in_(chunk))
            ids.update({remote_id: rid for rid, remote_id in s.execute(q)})
        key_rows = [(ids[r.remote_id], kind, value) for r in upserts for kind, value in _key_pairs(r)]
        if key_rows:
            conn.exec_driver_sql("INSERT INTO identity_keys (record_id, kind, value) VALUES (?, ?, ?)", key_rows)
        return ids

    def _sqlite_upsert_sql(self, stmt: Any) -> tuple[str, tuple[str, ...]]:
        cached = getattr(self, "_sqlite_upsert_cache", None)
        if cached is None:
            compiled = stmt.compile(dialect=sqlite.dialect())
            cached = self._sqlite_upsert_cache = (str(compiled), tuple(compiled.positiontup))
        return cached

    def _copy_new_records(
        self, s: Session, connection: str, fresh: list[StagedRecord], now: datetime, scan_id: int | None
    ) -> dict[str, int]:
        """PostgreSQL: insert records the look-up did not find (dirty, full rows) and their
        identity keys with two ``COPY``s; returns the record id of each remote id. Raises
        :class:`_CopyRaced` when one of them exists after all (the transaction is then
        unusable: the caller rolls it back)."""
        import psycopg

        _check_aware(connection, fresh)
        raw = s.connection().connection.driver_connection
        assert raw is not None
        sql = _PG_NEXT_IDS
        try:
            # Ids up front, so key rows name their records without reading the rows back.
            ids = [rid for (rid,) in raw.execute(sql, (len(fresh),))]
            stamp = now.isoformat()
            # Columns of _PG_COPY_RECORDS that are the same on every row of the page.
            conn_field = _copy_field(connection)
            scan_field = _NULL if scan_id is None else str(scan_id)
            key_rows: list[str] = []
            sql = _PG_COPY_RECORDS
            with raw.cursor().copy(sql) as copy:
                for start in range(0, len(fresh), _COPY_CHUNK):
                    chunk = list(zip(ids[start : start + _COPY_CHUNK], fresh[start : start + _COPY_CHUNK]))
                    copy.write(
                        "".join(
                            "\t".join(
                                (
                                    str(rid),
                                    conn_field,
                                    _copy_field(r.remote_id),
                                    _copy_field(json.dumps(r.payload)),
                                    _copy_field(r.payload_hash),
                                    r.remote_updated_at.isoformat() if r.remote_updated_at else _NULL,
                                    stamp,
                                    stamp if r.deleted else _NULL,
                                    _copy_field(r.merged_into),
                                    _copy_field(json.dumps(r.invalid)) if r.invalid else _NULL,  # SQL NULL
                                    "t",
                                    scan_field,
                                )
                            )
                            + "\n"
                            for rid, r in chunk
                        )
                    )
                    # Formatted while the server takes in the rows just sent.
                    key_rows.extend(
                        f"{rid}\t{_copy_field(kind)}\t{_copy_field(value)}\n"
                        for rid, r in chunk
                        for kind, value in _key_pairs(r)
                    )
            if key_rows:
                sql = _PG_COPY_KEYS
                with raw.cursor().copy(sql) as copy:
                    for start in range(0, len(key_rows), _COPY_CHUNK):
                        copy.write("".join(key_rows[start : start + _COPY_CHUNK]))
        except psycopg.errors.UniqueViolation as e:
            if sql == _PG_COPY_RECORDS:
                raise _CopyRaced(str(e)) from e
            raise _dbapi_error(sql, e) from None
        except psycopg.Error as e:
            # As SQLAlchemy would have raised it (IntegrityError, DataError, ...).
            raise _dbapi_error(sql, e) from None
        return {r.remote_id: rid for rid, r in zip(ids, fresh)}

    def stage_page(
        self,
        connection: str,
        records: list[StagedRecord],
        *,
        cursor: dict[str, Any] | None = None,
        scan_id: int | None = None,
        touch_unchanged: bool = True,
    ) -> StageResult:
        """Stage one pulled page of ``connection`` in ONE transaction.

        - a new record is inserted dirty; a record whose hash, deletion state or merge target
          changed is updated and marked dirty, its identity keys replaced;
        - a record seen again unchanged (overlap windows repeat records) only gets ``seen_at``
          (and ``last_scan``); it is not marked dirty;
        - ``deleted=True`` sets ``deleted_at`` (dirty) and keeps the stored payload and keys;
        - ``scan_id`` (from ``begin_full_scan``) marks every record of the page as seen by that
          full scan;
        - ``touch_unchanged=False`` leaves unchanged records as they are (no ``seen_at``, no
          ``last_scan``): for a scan whose caller keeps the ids it saw and passes them to
          ``finish_full_scan(..., seen=...)``, so a quiet scan writes nothing per record;
        - ``cursor``, if given, becomes the connection's pull position in the same transaction,
          so it never moves past rows that are not committed.

        A remote id repeated within the page counts once (the last occurrence wins). Raises
        :class:`StageError` (nothing committed, cursor unmoved) for values longer than the
        columns allow."""
        page: dict[str, StagedRecord] = {}
        for r in records:
            page.pop(r.remote_id, None)  # keep page order of the last occurrence
            page[r.remote_id] = r
        now = utcnow()
        copy_new = self.dialect_name == "postgresql"
        try:
            try:
                with self.session() as s:
                    result = self._stage_in(
                        s, connection, page, cursor, now, scan_id, copy_new=copy_new, touch_unchanged=touch_unchanged
                    )
            except _CopyRaced:
                # Another writer inserted a record of this page after the look-up: all rolled
                # back, stage the page again through the upsert, which takes such rows over.
                with self.session() as s:
                    result = self._stage_in(
                        s, connection, page, cursor, now, scan_id, copy_new=False, touch_unchanged=touch_unchanged
                    )
        except (DataError, StatementError) as e:
            # A value the database refuses (a NUL, an unencodable character, a number out of
            # range): the caller quarantines the record rather than fail the pull every cycle.
            if isinstance(e, DBAPIError) and not isinstance(e, DataError):
                raise  # the connection or the server, not the data
            raise StageError(f"{connection}: the database refused a value: {str(e.orig or e)[:300]}") from None
        self._note_inserted(result.inserted)
        return result

    def _stage_in(
        self,
        s: Session,
        connection: str,
        page: dict[str, StagedRecord],
        cursor: dict[str, Any] | None,
        now: datetime,
        scan_id: int | None,
        *,
        copy_new: bool,
        touch_unchanged: bool = True,
    ) -> StageResult:
        """The work of :meth:`stage_page` in the session's transaction. ``copy_new``: write new
        records with COPY (PostgreSQL) rather than the upsert."""
        rr = RemoteRecord.__table__.c
        if self.dialect_name == "postgresql":
            # Staged rows are a re-pullable copy of remote state and the cursor commits in the
            # same transaction, so a server crash that loses the last async commits loses rows
            # and cursor together: the page is pulled again. Not waiting for the WAL flush per
            # page is safe here (a later synchronous commit, e.g. an outbox result, flushes
            # these too, WAL being ordered) and saves a disk flush per page.
            s.execute(text("SET LOCAL synchronous_commit = off"))
        # The cursor goes first: any failure below rolls it back with the rows.
        if cursor is not None:
            ins = self._insert(Cursor)
            s.execute(
                ins.values(
                    connection=connection, position=cursor, full_scan_id=0, updated_at=now
                ).on_conflict_do_update(
                    index_elements=[Cursor.__table__.c.connection],
                    set_={"position": ins.excluded.position, "updated_at": ins.excluded.updated_at},
                )
            )
        _check(connection, page.values())

        existing: dict[str, tuple[int, str, bool, str | None]] = {}
        stamps: dict[str, datetime] = {}
        for chunk in _chunks(list(page)):
            for rid, remote_id, h, deleted_at, merged_into, stamp in s.execute(
                select(rr.id, rr.remote_id, rr.payload_hash, rr.deleted_at, rr.merged_into, rr.remote_updated_at).where(
                    rr.connection == connection, self._among(rr.remote_id, chunk)
                )
            ):
                existing[remote_id] = (rid, h, deleted_at is not None, merged_into)
                if stamp is not None:
                    stamps[remote_id] = stamp

        upserts: list[StagedRecord] = []  # new, or changed content/state: full row written
        newly_deleted: list[int] = []  # stored row, now a tombstone: keep payload and keys
        newly_deleted_ids: list[str] = []
        unchanged: list[int] = []
        inserted = 0
        changed_ids: list[int] = []
        for r in page.values():
            ex = existing.get(r.remote_id)
            if ex is None:
                upserts.append(r)
                inserted += 1
                continue
            rid, h, was_deleted, merged = ex
            if r.deleted:
                if was_deleted:
                    unchanged.append(rid)
                else:
                    newly_deleted.append(rid)
                    newly_deleted_ids.append(r.remote_id)
            elif (
                h != r.payload_hash
                and not was_deleted
                and merged == r.merged_into
                and _older(r.remote_updated_at, stamps.get(r.remote_id))
            ):
                # An older version than the one staged (read by id, or written by us): an
                # eventually consistent listing (GoHighLevel's search) still shows what the
                # record was. Staging it would undo a newer read; it is not news.
                unchanged.append(rid)
            elif h != r.payload_hash or was_deleted or merged != r.merged_into:
                upserts.append(r)
                changed_ids.append(rid)
            else:
                unchanged.append(rid)

        unread = [r for r in upserts if r.read_rest is not None]
        for r in unread:
            assert r.read_rest is not None
            r.keys, r.invalid = r.read_rest()
            r.read_rest = None
        _check(connection, unread)

        record_ids = {remote_id: ex[0] for remote_id, ex in existing.items()}
        # Changed records get their identity keys replaced wholesale: old ones go first.
        for chunk in _chunks(changed_ids):
            s.execute(delete(IdentityKey.__table__).where(self._among(IdentityKey.__table__.c.record_id, chunk)))
        if copy_new:
            fresh = [r for r in upserts if r.remote_id not in existing]
            if fresh:
                record_ids.update(self._copy_new_records(s, connection, fresh, now, scan_id))
            rewritten = [r for r in upserts if r.remote_id in existing]
            if rewritten:
                record_ids.update(self._upsert_records(s, connection, rewritten, now, scan_id))
        elif upserts:
            record_ids.update(self._upsert_records(s, connection, upserts, now, scan_id))

        extra: dict[str, Any] = {"seen_at": now}
        if scan_id is not None:
            extra["last_scan"] = scan_id
        for chunk in _chunks(newly_deleted):
            s.execute(
                update(RemoteRecord.__table__)
                .where(self._among(rr.id, chunk))
                .values(deleted_at=now, dirty=True, **extra)
            )
        for chunk in _chunks(unchanged) if touch_unchanged else ():
            s.execute(update(RemoteRecord.__table__).where(self._among(rr.id, chunk)).values(**extra))
        revived = [existing[r.remote_id][0] for r in upserts if r.remote_id in existing and existing[r.remote_id][2]]
        if revived:
            self._replan_revived(s, revived)

        return StageResult(
            inserted=inserted,
            changed=len(upserts) - inserted + len(newly_deleted),
            unchanged=len(unchanged),
            record_ids={remote_id: record_ids[remote_id] for remote_id in page},
            dirty=[r.remote_id for r in upserts] + newly_deleted_ids,
        )

    def _replan_revived(self, s: Session, record_ids: Sequence[int]) -> None:
        """Mark dirty the live persons of records believed deleted that a pull lists again (a
        delete approved after a short listing, a contact restored on the platform).

        While such a record was gone its person was planned without it: no write went there,
        so it may hold values its person has since moved past. Coming back it can read exactly
        as its snapshot, and then the echo check (``OutboxStore.clear_echoes``) marks it clean
        before matching, which would leave its person unplanned and the platform behind for
        good. Its person is planned again instead, and the revived side gets what it missed."""
        rr = RemoteRecord.__table__.c
        persons: set[int] = set()
        for chunk in _chunks(list(record_ids)):
            persons.update(
                int(p)
                for p in s.scalars(select(rr.person_id).where(self._among(rr.id, chunk), rr.person_id.is_not(None)))
            )
        if persons:
            mark_persons_dirty_in(s, sorted(persons))

    def _note_inserted(self, n: int) -> None:
        """Refresh PostgreSQL's planner statistics as a bulk load grows the tables (at 10k, 20k,
        40k, ... rows inserted through this handle). A backfill outruns autovacuum's analyze,
        and with statistics of a near-empty table the planner looks records up by scanning
        the whole connection instead of probing the unique index."""
        if self.dialect_name != "postgresql" or n == 0:
            return
        self._inserted_since_open = getattr(self, "_inserted_since_open", 0) + n
        next_analyze = getattr(self, "_next_analyze", _ANALYZE_FIRST)
        if self._inserted_since_open >= next_analyze:
            # Only the columns staging looks rows up by: statistics of the payloads cost more
            # than the rest together. A partial ANALYZE leaves autovacuum's own (full) one due.
            with self.session() as s:
                s.execute(text("ANALYZE remote_records (connection, remote_id), identity_keys (record_id)"))
            self._next_analyze = next_analyze * 2

    def staged_hashes(self, connection: str) -> dict[str, StagedHash]:
        """Every live (not deleted) staged record of ``connection``: remote id -> (payload hash,
        merged_into, number of invalid values). Lets a pull skip reading records it would stage
        unchanged."""
        rr = RemoteRecord.__table__.c
        q = select(rr.remote_id, rr.payload_hash, rr.merged_into, rr.invalid).where(
            rr.connection == connection, rr.deleted_at.is_(None)
        )
        with self.session() as s:
            return {remote_id: (h, merged, len(invalid or ())) for remote_id, h, merged, invalid in s.execute(q)}

    def record_count(self, connection: str) -> int:
        """How many records of ``connection`` the store holds, deleted and merged ones included
        (a listing that includes them reports the same total when nothing is missing)."""
        with self.session() as s:
            return int(
                s.execute(
                    select(func.count()).select_from(RemoteRecord).where(RemoteRecord.connection == connection)
                ).scalar_one()
            )

    def quarantine(self, connection: str, remote_id: str | None, raw: str, reason: str) -> int:
        """Keep a payload that could not be staged (malformed), with the reason; returns its id.
        ``raw`` is stored as given: the caller passes the payload text, never credentials.
        The same record refused again for the same reason (every scan lists it) keeps its one
        row, with the latest payload and time."""
        q = Quarantine.__table__.c
        with self.session() as s:
            # Without an id, the same item is known by its text.
            which = q.remote_id == remote_id if remote_id is not None else and_(q.remote_id.is_(None), q.raw == raw)
            same = s.execute(
                select(q.id).where(q.connection == connection, q.reason == reason, which).limit(1)
            ).scalar()
            if same is not None:
                s.execute(update(Quarantine).where(Quarantine.id == same).values(raw=raw, created_at=utcnow()))
                return int(same)
            row = Quarantine(connection=connection, remote_id=remote_id, raw=raw, reason=reason, created_at=utcnow())
            s.add(row)
            s.flush()
            return row.id

    def quarantined_ids(self, connection: str) -> list[str]:
        """The remote ids of ``connection`` that have a quarantine row."""
        q = Quarantine.__table__.c
        with self.session() as s:
            return [
                r
                for (r,) in s.execute(
                    select(q.remote_id).where(q.connection == connection, q.remote_id.is_not(None)).distinct()
                )
            ]

    def release_quarantine(self, connection: str, remote_ids: Sequence[str]) -> int:
        """Drop the quarantine rows of records that have since been staged cleanly."""
        q = Quarantine.__table__.c
        with self.session() as s:
            n = 0
            for chunk in _chunks(list(remote_ids)):
                done = s.execute(delete(Quarantine).where(q.connection == connection, self._among(q.remote_id, chunk)))
                n += int(getattr(done, "rowcount", 0) or 0)
            return n

    def quarantined(self, connection: str | None = None) -> list[QuarantineEntry]:
        """Quarantined payloads, oldest first; all connections unless one is given."""
        with self.session() as s:
            q = select(Quarantine).order_by(Quarantine.id)
            if connection is not None:
                q = q.where(Quarantine.connection == connection)
            return [
                QuarantineEntry(r.id, r.connection, r.remote_id, r.raw, r.reason, r.created_at)
                for r in s.execute(q).scalars()
            ]


class Staging(StagingMixin):
    """Staging and quarantine: the repository ``store.staging`` (one per store: it keeps the
    rows inserted through it, for PostgreSQL's statistics, and SQLite's compiled upsert).
    Each call is its own transaction; ``stage_page`` commits a whole page, or nothing."""

    def __init__(self, sessions: Sessions, dialect_name: str) -> None:
        self._sessions = sessions
        self._dialect_name = dialect_name

    @property
    def dialect_name(self) -> str:
        return self._dialect_name

    def session(self) -> AbstractContextManager[Session]:
        return self._sessions.begin()


def _older(listed: datetime | None, staged: datetime | None) -> bool:
    """``listed`` is strictly older than ``staged`` (both known; naive means UTC)."""
    if listed is None or staged is None:
        return False
    if listed.tzinfo is None:
        listed = listed.replace(tzinfo=UTC)
    if staged.tzinfo is None:
        staged = staged.replace(tzinfo=UTC)
    return listed < staged
