"""The matching half of the store (sync/store/persons.py) on a real store: whole-store and
incremental loads read the same columns, the aggregated-string read falls back row by row when
a value holds its separator, person ids and dirty flags land in one pass, and every query of an
incremental run is an index look-up (the partial indexes of migration 0002 serve them)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, insert, select, update
from sqlalchemy.engine import Engine

from connectors.base import RawRecord
from connectors.registry import connector_class
from sync.config import Config
from sync.detect.stage import stage_record
from sync.plan.build import build_plan, run_match
from sync.store import Store
from sync.store.models import IdentityKey, Person, RemoteRecord
from sync.store.persons import MatchRows, dirty_person_ids, load_match_input

T0 = datetime(2026, 3, 1, tzinfo=UTC)
PLATFORM = {"acq": "acquire", "ghl": "gohighlevel", "c100": "comm100", "dm": "dmchamp"}
CAPS = {n: connector_class(p).capabilities for n, p in PLATFORM.items()}
ZERO = "00000000-0000-0000-0000-000000000000"


def make_config() -> Config:
    return Config.model_validate(
        {
            "connections": {
                "acq": {"platform": "acquire", "base_url": "http://acq.test"},
                "ghl": {"platform": "gohighlevel", "base_url": "http://ghl.test", "options": {"location_id": "L1"}},
                "c100": {"platform": "comm100", "base_url": "http://c100.test", "options": {"site_id": 1}},
                "dm": {"platform": "dmchamp", "base_url": "http://dm.test"},
            }
        }
    )


def acq(rid: int, name: str, email: str, phone: str | None = None, minute: int = 0) -> RawRecord:
    stamp = (T0 + timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    fields: dict[str, Any] = {"name": name, "email": email}
    if phone:
        fields["phone"] = phone
    payload = {
        "id": rid,
        "archive": "no",
        "companyId": None,
        "dateCreated": stamp,
        "dateUpdated": stamp,
        "fields": fields,
        "tags": [],
    }
    return RawRecord(str(rid), payload, T0 + timedelta(minutes=minute))


def ghl(rid: str, first: str, last: str, email: str, minute: int = 0) -> RawRecord:
    payload = {
        "id": rid,
        "locationId": "L1",
        "firstName": first,
        "lastName": last,
        "tags": [],
        "customFields": [],
        "email": email,
    }
    return RawRecord(rid, payload, T0 + timedelta(minutes=minute))


def c100(rid: str, name: str, email: str, merged_into: str | None = None) -> RawRecord:
    first, last = name.split(" ")
    payload = {
        "id": rid,
        "name": name,
        "firstName": first,
        "lastName": last,
        "mergeToContactId": merged_into or ZERO,
        "contactIdentities": [
            {"id": rid + "-e", "contactId": rid, "contactIdentityType": "Email", "name": "", "value": email}
        ],
    }
    return RawRecord(rid, payload, T0, merged_into=merged_into)


def stage(store: Store, config: Config, conn: str, *records: RawRecord) -> None:
    mapping = config.mapping(conn)
    store.staging.stage_page(conn, [stage_record(mapping, r) for r in records])


def columns(rows: MatchRows) -> dict[str, Any]:
    """Every record with its keys, comparable across load paths (record order and key order
    within the whole load may differ; keys are compared per record as sorted lists)."""
    keys: dict[int, list[tuple[str, str]]] = {}
    for pos, kind, value in zip(rows.key_records.tolist(), rows.key_kinds, rows.key_values):
        keys.setdefault(int(rows.record_ids[pos]), []).append((kind, value))
    return {
        int(rid): (conn, remote, int(person), merged, bool(deleted), bool(dirty), sorted(keys.get(int(rid), [])))
        for rid, conn, remote, person, merged, deleted, dirty in zip(
            rows.record_ids.tolist(),
            rows.connections,
            rows.remote_ids,
            rows.person_ids.tolist(),
            rows.merged_into,
            rows.deleted.tolist(),
            rows.dirty.tolist(),
        )
    }


def expected(store: Store) -> dict[str, Any]:
    """The same, read row by row with plain ORM-free selects."""
    rr = RemoteRecord.__table__.c
    ik = IdentityKey.__table__.c
    with store.session() as s:
        keys: dict[int, list[tuple[str, str]]] = {}
        for rid, kind, value in s.execute(select(ik.record_id, ik.kind, ik.value)):
            keys.setdefault(rid, []).append((kind, value))
        return {
            rid: (
                conn,
                remote,
                -1 if person is None else person,
                merged,
                deleted_at is not None,
                bool(dirty),
                sorted(keys.get(rid, [])),
            )
            for rid, conn, remote, person, merged, deleted_at, dirty in s.execute(
                select(rr.id, rr.connection, rr.remote_id, rr.person_id, rr.merged_into, rr.deleted_at, rr.dirty)
            )
        }


def insert_records(store: Store, rows: list[dict[str, Any]], keys: list[tuple[int, str, str]]) -> list[int]:
    """Rows written straight into the store (values no connector would produce)."""
    now = datetime.now(UTC)
    with store.session() as s:
        ids = []
        for row in rows:
            values = {"payload": {}, "payload_hash": "h", "seen_at": now, "dirty": True, **row}
            ids.append(s.execute(insert(RemoteRecord).values(**values).returning(RemoteRecord.id)).scalar_one())
        for i, kind, value in keys:
            s.execute(insert(IdentityKey).values(record_id=ids[i], kind=kind, value=value))
    return ids


def test_whole_and_incremental_loads_read_every_column_as_stored(store: Store) -> None:
    ids = insert_records(
        store,
        [
            {"connection": "acq", "remote_id": "1"},
            {"connection": "ghl", "remote_id": "g-1"},
            {"connection": "c100", "remote_id": "c-2", "merged_into": "c-1"},
            {"connection": "c100", "remote_id": "c-1", "deleted_at": datetime(2026, 1, 1, tzinfo=UTC)},
            {"connection": "acq", "remote_id": "2", "dirty": False},
            {"connection": "dm", "remote_id": ""},  # empty strings survive the split
        ],
        [
            (0, "email", "ada@x.com"),
            (1, "email", "ada@x.com"),
            (1, "phone", "+14155552671"),
            (2, "email", ""),
            (3, "identity:facebook", "ada.l"),
            (3, "email", "ADA@x.com"),
        ],
    )
    with store.session() as s:
        person = s.execute(insert(Person).values(fields={}).returning(Person.id)).scalar_one()
        s.execute(update(RemoteRecord).where(RemoteRecord.id == ids[4]).values(person_id=person))
    want = expected(store)
    with store.session() as s:
        whole = load_match_input(s, full=True)
    assert whole.full and columns(whole) == want
    assert whole.record_ids.tolist() == sorted(want)  # id order: new persons are numbered in it
    with store.session() as s:
        part = load_match_input(s, full=False)
    # The five dirty records and nothing else (no key, merge or person links to record 5).
    assert not part.full and columns(part) == {rid: v for rid, v in want.items() if rid != ids[4]}


def test_a_value_holding_the_separator_is_read_row_by_row(store: Store) -> None:
    insert_records(
        store,
        [{"connection": "ghl", "remote_id": "odd\x1fid"}, {"connection": "ghl", "remote_id": "plain"}],
        [(0, "identity:custom", "a\x1fb"), (1, "email", "x@y.com")],
    )
    want = expected(store)
    with store.session() as s:
        assert columns(load_match_input(s, full=True)) == want
    with store.session() as s:
        assert columns(load_match_input(s, full=False)) == want


def test_a_whole_load_in_several_blocks_equals_one_block(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    import sync.store.persons as persons

    insert_records(
        store,
        [{"connection": "acq", "remote_id": str(i), "dirty": i % 3 == 0} for i in range(25)],
        [(i, "email", f"p{i % 7}@x.com") for i in range(25)]
        + [(i, "phone", f"+1415555{i:04d}") for i in range(0, 25, 2)],
    )
    want = expected(store)
    monkeypatch.setattr(persons, "_BLOCK", 4)
    with store.session() as s:
        rows = load_match_input(s, full=True)
    assert columns(rows) == want and rows.record_ids.tolist() == sorted(want)


def test_match_writes_person_ids_and_clears_exactly_the_matched_records(store: Store) -> None:
    config = make_config()
    stage(store, config, "acq", *[acq(i, f"P{i} X", f"p{i}@x.com") for i in range(1, 6)])
    stage(store, config, "ghl", *[ghl(f"g{i}", f"P{i}", "X", f"p{i}@x.com") for i in range(1, 4)])
    run_match(store, config, CAPS)
    rr = RemoteRecord.__table__.c
    with store.session() as s:
        rows = s.execute(select(rr.connection, rr.remote_id, rr.person_id, rr.dirty)).all()
        assert not any(d for *_, d in rows) and all(p is not None for _, _, p, _ in rows)
        by = {(c, r): p for c, r, p, _ in rows}
        assert by["acq", "1"] == by["ghl", "g1"] and by["acq", "4"] != by["acq", "5"]
        assert len(set(by.values())) == 5
        assert sorted(dirty_person_ids(s)) == sorted(set(by.values()))  # new persons wait for reconcile
    build_plan(store, config, ["acq", "ghl"], CAPS, commit=True)
    with store.session() as s:
        assert dirty_person_ids(s) == []
    # An edit dirties one record; matching it dirties its person only.
    stage(store, config, "ghl", ghl("g2", "P2", "Changed", "p2@x.com", minute=5))
    run_match(store, config, CAPS)
    with store.session() as s:
        assert dirty_person_ids(s) == [by["ghl", "g2"]]
        assert s.execute(select(rr.id).where(rr.dirty)).all() == []


@contextmanager
def captured(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """The SQL statements (with parameters) an engine runs inside the block."""
    seen: list[tuple[str, Any]] = []

    def before(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if not executemany:
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", before)


# A full scan of a big table; a scan of a PARTIAL index (only dirty / merged rows) is a look-up.
_SQLITE_SCAN = re.compile(
    r"\bSCAN (remote_records|identity_keys|persons)\b(?! USING (COVERING )?INDEX "
    r"(ix_remote_records_dirty|ix_persons_dirty|ix_remote_records_merged_into)\b)"
)
_PG_SCAN = re.compile(r"Seq Scan on (remote_records|identity_keys|persons)\b")


def test_every_query_of_an_incremental_match_is_an_index_lookup(store: Store, store_kind: str) -> None:
    config = make_config()
    stage(store, config, "acq", *[acq(i, f"P{i} X", f"p{i}@x.com", f"+1415555{i:04d}") for i in range(1, 41)])
    stage(store, config, "ghl", *[ghl(f"g{i}", f"P{i}", "X", f"p{i}@x.com") for i in range(1, 41)])
    stage(store, config, "c100", c100("c1", "P3 X", "p3@x.com"), c100("c2", "P3 X", "p3@x.com", merged_into="c1"))
    build_plan(store, config, ["acq", "ghl", "c100"], CAPS, commit=True)
    stage(store, config, "ghl", ghl("g7", "P7", "Changed", "p7@x.com", minute=3))
    stage(store, config, "c100", c100("c1", "P3 Y", "p3@x.com"))

    with store.transaction() as tx:
        session = tx.session
        try:
            with captured(store.engine) as seen:
                rows = load_match_input(session)
                dirty_person_ids(session)
            assert not rows.full and sorted(rows.remote_ids) == ["3", "7", "c1", "c2", "g3", "g7"]
            statements = [
                (sql, params) for sql, params in seen if re.search(r"\b(remote_records|identity_keys|persons)\b", sql)
            ]
            assert len(statements) >= 8
            conn = session.connection()
            if store_kind == "postgresql":
                # Tiny tables: the planner would scan anyway. Forbid it, and see an index serve each.
                conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            for sql, params in statements:
                if store_kind == "sqlite":
                    plan = "\n".join(str(r[-1]) for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params))
                    assert not _SQLITE_SCAN.search(plan), f"{sql}\n{plan}"
                else:
                    plan = "\n".join(r[0] for r in conn.exec_driver_sql(f"EXPLAIN {sql}", params))
                    assert not _PG_SCAN.search(plan), f"{sql}\n{plan}"
        finally:
            tx.rollback()  # a read-only look: nothing to keep


def test_a_backfill_rebuilds_the_person_index_and_leaves_the_schema_as_migrated(
    store: Store, store_kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    import sync.store.persons as persons
    from sync.store.models import Base

    monkeypatch.setattr(persons, "_BIG", 5)  # SQLite: drop + rebuild ix_remote_records_person_id
    monkeypatch.setattr(persons, "_SMALL", 1)  # a whole-store load for 18 dirty records
    config = make_config()
    stage(store, config, "acq", *[acq(i, f"P{i} X", f"p{i}@x.com") for i in range(1, 13)])
    stage(store, config, "ghl", *[ghl(f"g{i}", f"P{i}", "X", f"p{i}@x.com") for i in range(1, 7)])
    with store.session() as s:
        rows = load_match_input(s, full=True)
        assert rows.full and len(rows) == 18
    run_match(store, config, CAPS)
    rr = RemoteRecord.__table__.c
    with store.session() as s:
        by = {(c, r): p for c, r, p in s.execute(select(rr.connection, rr.remote_id, rr.person_id))}
        assert by["acq", "3"] == by["ghl", "g3"] and len(set(by.values())) == 12 and None not in by.values()
        assert s.execute(select(rr.id).where(rr.person_id == by["acq", "3"])).scalars().all()  # index answers
    with store.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata) == []
        if store_kind == "sqlite":
            plan = conn.exec_driver_sql("EXPLAIN QUERY PLAN SELECT id FROM remote_records WHERE person_id = 1").all()
            assert "ix_remote_records_person_id" in str(plan)


def test_an_incremental_load_finds_neighbours_by_any_unicode_key(store: Store) -> None:
    ids = insert_records(
        store,
        [
            {"connection": "acq", "remote_id": "1", "dirty": False},
            {"connection": "ghl", "remote_id": "g\u00f1-😀"},
            {"connection": "c100", "remote_id": "c1", "dirty": False},
        ],
        [
            (0, "identity:handle", "ñandú 😀 \x1f"),
            (1, "identity:handle", "ñandú 😀 \x1f"),
            (2, "identity:handle", "nandu"),
        ],
    )
    with store.session() as s:
        rows = load_match_input(s, full=False)
    assert rows.record_ids.tolist() == ids[:2]
    assert sorted(rows.remote_ids) == ["1", "g\u00f1-😀"]


def test_a_backfill_rewrite_moves_only_what_the_match_wrote(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A backfill's write-back (PostgreSQL: one rewrite of the table) sets the persons of the
    records loaded, clears only the flags loaded dirty, and leaves a record staged after the
    load, and one the match left where it was, as they are."""
    import sync.store.persons as persons
    from sync.store.persons import save_match

    monkeypatch.setattr(persons, "_BIG", 2)
    with store.session() as s:
        for pid in (1001, 1002):  # above the ids the sequence gives a new person
            s.add(Person(id=pid, fields={}, version=0, updated_at=T0, dirty=False))
    ids = insert_records(
        store,
        [
            {"connection": "acq", "remote_id": "1"},
            {"connection": "ghl", "remote_id": "g1"},
            {"connection": "acq", "remote_id": "2", "dirty": False, "person_id": 1002},  # stays put
            {"connection": "ghl", "remote_id": "g2"},
        ],
        [(0, "email", "a@x.com"), (1, "email", "a@x.com"), (2, "email", "b@x.com"), (3, "email", "c@x.com")],
    )
    with store.session() as s:
        rows = load_match_input(s, full=True)
    late = insert_records(store, [{"connection": "acq", "remote_id": "3"}], [])[0]  # staged meanwhile
    with store.session() as s:
        outcome = save_match(s, rows, [1001, 1001, 1002, -1], folds={}, merged={}, reviews=[], new_persons=1)
    new = outcome.new_person_ids[-1]
    rr = RemoteRecord.__table__.c
    with store.session() as s:
        got = {i: (p, d) for i, p, d in s.execute(select(rr.id, rr.person_id, rr.dirty))}
    assert got == {
        ids[0]: (1001, False),
        ids[1]: (1001, False),
        ids[2]: (1002, False),
        ids[3]: (new, False),
        late: (None, True),
    }
