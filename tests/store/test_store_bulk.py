"""The store's bulk paths (sync/store/bulk.py and the statements of sync/store/persons.py that
use them): what they write is exactly the rows and values asked for, on both stores. The COPY
helpers are PostgreSQL's; the plan state and match writes go through them there and through
SQLite's own bulk statements here, and must end in the same rows."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import numpy as np
import pytest
from sqlalchemy import select, text

from sync.plan.model import Candidate, ConflictDecision, Plan
from sync.store import Store, bulk
from sync.store.models import Conflict, Person, RemoteRecord, Snapshot
from sync.store.persons import MatchRows, save_match, save_plan_state

T = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
# Values with every character COPY's text format gives a meaning to, and some it does not.
AWKWARD = ["tab\there", "line\nbreak", "cr\rhere", "back\\slash", 'quote"s', "\\N", "ünïcødé ☃", "", "a,b{c}"]


@pytest.fixture
def pg_only(store_kind: str) -> None:
    if store_kind != "postgresql":
        pytest.skip("COPY and temporary tables of PostgreSQL")


def _persons(store: Store, *ids: int) -> None:
    with store.session() as s:
        for pid in ids:
            s.add(Person(id=pid, fields={}, version=0, updated_at=T, dirty=True))


# -- the helpers (PostgreSQL) ------------------------------------------------------------------


def test_copy_rows_writes_each_value_as_given(store: Store, pg_only: None) -> None:
    rows = [
        (i, value, value is not None and i % 2 == 0, {"v": value, "n": [i, None]}, T if i % 3 else None)
        for i, value in enumerate([*AWKWARD, None])
    ]
    with store.session() as s:
        with bulk.temp_table(s, "bulk_check", "i bigint, t text, b boolean, j jsonb, ts timestamptz") as tmp:
            assert bulk.copy_rows(s, tmp, ("i", "t", "b", "j", "ts"), rows) == len(rows)
            got = s.execute(text(f"SELECT i, t, b, j, ts FROM {tmp} ORDER BY i")).all()
    assert [tuple(r) for r in got] == rows


def test_copy_rows_takes_a_string_as_the_columns_text_form(store: Store, pg_only: None) -> None:
    blob = json.dumps({"name": 'Tab\there \\ "quoted"', "tags": ["a", "b"]}, ensure_ascii=False)
    with store.session() as s:
        with bulk.temp_table(s, "bulk_json", "j jsonb") as tmp:
            bulk.copy_rows(s, tmp, ("j",), [(blob,)])
            (value,) = s.execute(text(f"SELECT j FROM {tmp}")).one()
    assert value == json.loads(blob)


def test_copy_rows_in_many_chunks(store: Store, pg_only: None) -> None:
    n = 5_123  # more than one chunk of rows sent to the server
    with store.session() as s:
        with bulk.temp_table(s, "bulk_many", "i bigint, t text") as tmp:
            assert bulk.copy_rows(s, tmp, ("i", "t"), ((i, f"v{i}") for i in range(n))) == n
            count, total, last = s.execute(text(f"SELECT count(*), sum(i), max(t) FROM {tmp}")).one()
    assert (count, total, last) == (n, n * (n - 1) // 2, "v999")


def test_copy_numbers_writes_integers_and_flags(store: Store, pg_only: None) -> None:
    ids = np.asarray([1, 2**40, -7, 0, 2**63 - 1], dtype=np.int64)
    persons = np.asarray([5, -1, 3, 2**33, 9], dtype=np.int64)
    flags = np.asarray([True, False, True, False, False])
    with store.session() as s:
        with bulk.temp_table(s, "bulk_numbers", "id bigint, p bigint, c boolean") as tmp:
            assert bulk.copy_numbers(s, tmp, {"id": ids, "p": persons, "c": flags}) == 5
            got = s.execute(text(f"SELECT id, p, c FROM {tmp}")).all()
            assert bulk.copy_numbers(s, tmp, {"id": ids[:0], "p": persons[:0], "c": flags[:0]}) == 0
            assert s.execute(text(f"SELECT count(*) FROM {tmp}")).scalar_one() == 5
    assert sorted(tuple(r) for r in got) == sorted(zip(ids.tolist(), persons.tolist(), flags.tolist()))


def test_copy_numbers_refuses_what_it_cannot_write(store: Store, pg_only: None) -> None:
    with store.session() as s:
        with bulk.temp_table(s, "bulk_bad", "a bigint, b bigint") as tmp:
            with pytest.raises(ValueError):
                bulk.copy_numbers(s, tmp, {"a": np.zeros(2, np.int64), "b": np.zeros(3, np.int64)})
            with pytest.raises(TypeError):
                bulk.copy_numbers(s, tmp, {"a": np.zeros(2, np.float64)})


def test_copy_errors_are_raised_as_sqlalchemy_raises_them(store: Store, pg_only: None) -> None:
    from sqlalchemy.exc import IntegrityError

    _persons(store, 1)
    with pytest.raises(IntegrityError):
        with store.session() as s:
            row = (1, "acq", "{}", "h", T)
            bulk.copy_rows(s, "snapshots", ("person_id", "connection", "fields", "hash", "updated_at"), [row, row])
    with store.session() as s:
        assert s.execute(select(Snapshot)).all() == []


def test_a_temp_table_is_gone_after_its_block(store: Store, pg_only: None) -> None:
    with store.session() as s:
        with bulk.temp_table(s, "bulk_gone", "i bigint") as tmp:
            bulk.copy_numbers(s, tmp, {"i": np.arange(3, dtype=np.int64)})
        assert s.execute(text("SELECT to_regclass('pg_temp.bulk_gone')")).scalar_one() is None
        with bulk.temp_table(s, "bulk_gone", "i bigint") as tmp:  # the same name again
            assert s.execute(text(f"SELECT count(*) FROM {tmp}")).scalar_one() == 0


def test_int_array_is_an_array_literal() -> None:
    assert bulk.int_array([3, 1, 2]) == "{3,1,2}"
    assert bulk.int_array(np.asarray([5, -6], dtype=np.int64)) == "{5,-6}"
    assert bulk.int_array([]) == "{}"


def test_statistics_are_refreshed_only_when_stale(store: Store, pg_only: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bulk, "_MIN_CHANGES", 1)
    _persons(store, *range(1, 201))
    with store.session() as s:
        s.execute(text("ANALYZE persons"))
    with store.session() as s:
        assert not bulk.refresh_stats(s, "persons", ("dirty",))  # nothing changed since
        s.execute(text("UPDATE persons SET dirty = false"))
    # The change is seen once committed and its counts are flushed (at most a second later).
    with store.session() as s:
        s.execute(text("SELECT pg_stat_force_next_flush()"))
    with store.session() as s:
        s.execute(text("SELECT pg_stat_clear_snapshot()"))
        assert bulk.refresh_stats(s, "persons", ("dirty",))
    with store.session() as s:  # what the planner now knows: no person is dirty
        common = s.execute(
            text(
                "SELECT most_common_vals::text FROM pg_stats "
                "WHERE schemaname = current_schema() AND tablename = 'persons' AND attname = 'dirty'"
            )
        ).scalar_one()
    assert common == "{f}"


def test_a_partial_analyze_is_not_repeated_until_the_table_changes_again(
    store: Store, pg_only: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ANALYZE of some columns leaves PostgreSQL's count of changes as it was: the refresh
    counts from its own ANALYZE, so the next run does not analyze an unchanged table again."""
    monkeypatch.setattr(bulk, "_MIN_CHANGES", 1)
    monkeypatch.setattr(bulk, "_analyzed", {})
    # The writer's counts reach the statistics views when its transaction ends (forced: at
    # most a second later otherwise).
    flush = text("SELECT pg_stat_force_next_flush()")
    with store.session() as s:
        for pid in range(1, 201):
            s.add(Person(id=pid, fields={}, version=0, updated_at=T, dirty=True))
        s.flush()
        s.execute(flush)
    with store.session() as s:
        assert bulk.refresh_stats(s, "persons", ("dirty",))
        assert not bulk.refresh_stats(s, "persons", ("dirty",))  # the same transaction
    with store.session() as s:
        assert not bulk.refresh_stats(s, "persons", ("dirty",))  # a later one
        s.execute(text("UPDATE persons SET dirty = false"))
        s.execute(flush)
    with store.session() as s:
        assert bulk.refresh_stats(s, "persons", ("dirty",))  # changed since
    with store.session() as s:
        s.execute(text("UPDATE persons SET dirty = true WHERE id <= 100"))  # half the rows
        bulk.analyze(s, "persons", ("dirty",))  # in the transaction that wrote them
        s.execute(flush)
    with store.session() as s:
        assert not bulk.refresh_stats(s, "persons", ("dirty",))


# -- the writes that use them (both stores) -----------------------------------------------------


def test_plan_state_lands_as_planned(store: Store) -> None:
    """Golden records, snapshots inserted and updated, and conflicts: the rows hold exactly
    the values of the plan, awkward characters and all."""
    _persons(store, 1, 2, 3)
    with store.session() as s:
        s.add(Snapshot(person_id=2, connection="ghl", fields={"first_name": "Old"}, hash="x", updated_at=T))
    golden = {
        1: {"first_name": AWKWARD[0], "last_name": AWKWARD[3], "emails": frozenset({"a@x.com", "b@x.com"})},
        2: {"first_name": AWKWARD[1], "last_name": AWKWARD[6]},
        3: {"company": AWKWARD[4]},
    }
    plan = Plan(golden=golden)
    plan.snapshots[(1, "acq")] = golden[1]  # the golden record itself (serialized once)
    plan.snapshots[(2, "ghl")] = {"first_name": AWKWARD[2]}  # an update
    plan.snapshots[(3, "c100")] = {"company": AWKWARD[5]}
    plan.conflicts = [
        ConflictDecision(
            2,
            "first_name",
            (Candidate("acq", AWKWARD[1], T), Candidate("ghl", AWKWARD[8], None)),
            AWKWARD[1],
            "newest",
            needs_review=True,
        ),
        ConflictDecision(3, "company", (Candidate("acq", None, None),), None, "priority:acq>ghl"),
    ]
    with store.session() as s:
        save_plan_state(s, plan, run_id=7, existing=[(2, "ghl")])
    with store.session() as s:
        persons = {p.id: (p.fields, p.version, p.dirty) for p in s.execute(select(Person)).scalars()}
        snaps = {(x.person_id, x.connection): (x.fields, x.hash) for x in s.execute(select(Snapshot)).scalars()}
        conflicts = [
            (c.run_id, c.person_id, c.field, c.candidates, c.decision, c.rule, c.needs_review, c.created_at)
            for c in s.execute(select(Conflict).order_by(Conflict.id)).scalars()
        ]
    expected = {
        1: {"emails": ["a@x.com", "b@x.com"], "first_name": AWKWARD[0], "last_name": AWKWARD[3]},
        2: {"first_name": AWKWARD[1], "last_name": AWKWARD[6]},
        3: {"company": AWKWARD[4]},
    }
    assert persons == {pid: (fields, 1, False) for pid, fields in expected.items()}

    def digest(fields: dict[str, object]) -> str:
        blob = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    want = {
        (1, "acq"): expected[1],
        (2, "ghl"): {"first_name": AWKWARD[2]},
        (3, "c100"): {"company": AWKWARD[5]},
    }
    assert snaps == {key: (fields, digest(fields)) for key, fields in want.items()}
    assert [c[:7] for c in conflicts] == [
        (
            7,
            2,
            "first_name",
            [
                {"connection": "acq", "value": AWKWARD[1], "updated_at": T.isoformat()},
                {"connection": "ghl", "value": AWKWARD[8], "updated_at": None},
            ],
            AWKWARD[1],
            "newest",
            True,
        ),
        (7, 3, "company", [{"connection": "acq", "value": None, "updated_at": None}], None, "priority:acq>ghl", False),
    ]
    assert all(c[7] is not None and c[7].tzinfo is not None for c in conflicts)


def _records(store: Store, n: int) -> list[int]:
    with store.session() as s:
        for i in range(n):
            s.add(
                RemoteRecord(
                    connection="acq",
                    remote_id=str(i),
                    payload={"id": i},
                    payload_hash=f"h{i}",
                    seen_at=T,
                    dirty=True,
                )
            )
    with store.session() as s:
        return list(s.execute(select(RemoteRecord.id).order_by(RemoteRecord.id)).scalars())


def test_a_match_lands_as_matched(store: Store) -> None:
    """New persons (ascending ids, in the order of the match's temporary ids), person ids and
    cleared dirty flags on exactly the records loaded, existing persons marked dirty."""
    ids = _records(store, 6)
    _persons(store, 100)
    with store.session() as s:
        s.execute(text("UPDATE persons SET dirty = false"))
        s.execute(text(f"UPDATE remote_records SET person_id = 100, dirty = false WHERE id = {ids[5]}"))
        s.execute(text(f"UPDATE remote_records SET dirty = false WHERE id = {ids[4]}"))
    rows = MatchRows(
        record_ids=np.asarray(ids, dtype=np.int64),
        connections=["acq"] * 6,
        remote_ids=[str(i) for i in range(6)],
        person_ids=np.asarray([-1, -1, -1, -1, -1, 100], dtype=np.int64),
        merged_into=[None] * 6,
        deleted=np.zeros(6, bool),
        dirty=np.asarray([True, True, True, True, False, False]),
    )
    # Records 0 and 1 form new person -1, record 2 new person -2, record 3 joins person 100,
    # record 4 (loaded clean) gets new person -3, record 5 stays with person 100.
    person_of = [-1, -1, -2, 100, -3, 100]
    with store.session() as s:
        outcome = save_match(s, rows, person_of, folds={}, merged={}, reviews=[], new_persons=3)
    new = outcome.new_person_ids
    assert sorted(new) == [-3, -2, -1] and new[-1] < new[-2] < new[-3]
    assert outcome.dirty_persons == {new[-1], new[-2], new[-3], 100}
    with store.session() as s:
        records = {
            r.id: (r.person_id, r.dirty) for r in s.execute(select(RemoteRecord).order_by(RemoteRecord.id)).scalars()
        }
        persons = {p.id: (p.dirty, p.fields, p.version) for p in s.execute(select(Person)).scalars()}
    assert records == {
        ids[0]: (new[-1], False),
        ids[1]: (new[-1], False),
        ids[2]: (new[-2], False),
        ids[3]: (100, False),
        ids[4]: (new[-3], False),  # moved; loaded clean and still clean
        ids[5]: (100, False),
    }
    assert persons == {pid: (True, {}, 0) for pid in (100, new[-1], new[-2], new[-3])}


def test_text_array_round_trips_every_character(store: Store, pg_only: None) -> None:
    values = [*AWKWARD, "NULL", "{}", " spaced "]
    with store.session() as s:
        got = s.execute(text("SELECT unnest(CAST(:p AS text[]))"), {"p": bulk.text_array(values)}).scalars().all()
    assert got == values
    assert bulk.text_array([]) == "{}"
