"""Bulk staging: counts, dirty flags, key replacement, tombstones, and the cursor moving only
together with committed rows."""

from __future__ import annotations

import sys
import threading
import time
import traceback
from datetime import UTC, datetime, timezone
from typing import Any

import pytest
from sqlalchemy import insert, select, text, update

import sync.store.staging as staging
from sync.normalize import IdentityKey as Key
from sync.store import StagedRecord, StageError, Store, payload_hash
from sync.store.models import IdentityKey, RemoteRecord, utcnow

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def rec(remote_id: str, email: str | None = None, phone: str | None = None, **extra: Any) -> StagedRecord:
    payload: dict[str, Any] = {"id": remote_id, "email": email, "phone": phone}
    flags = {k: extra.pop(k) for k in ("deleted", "merged_into", "invalid") if k in extra}
    payload.update(extra)
    keys = [Key("email", email)] if email else []
    if phone:
        keys.append(Key("phone", phone))
    return StagedRecord(remote_id, payload, payload_hash(payload), T0, keys, **flags)


def rows(store: Store, connection: str = "acq") -> dict[str, RemoteRecord]:
    with store.session() as s:
        found = s.execute(select(RemoteRecord).where(RemoteRecord.connection == connection)).scalars()
        return {r.remote_id: r for r in found}


def keys_of(store: Store, connection: str = "acq") -> dict[str, set[tuple[str, str]]]:
    with store.session() as s:
        q = (
            select(RemoteRecord.remote_id, IdentityKey.kind, IdentityKey.value)
            .join(IdentityKey, IdentityKey.record_id == RemoteRecord.id)
            .where(RemoteRecord.connection == connection)
        )
        out: dict[str, set[tuple[str, str]]] = {}
        for remote_id, kind, value in s.execute(q):
            out.setdefault(remote_id, set()).add((kind, value))
        return out


def clear_dirty(store: Store) -> None:
    with store.session() as s:
        s.execute(update(RemoteRecord).values(dirty=False))


def test_payload_hash_ignores_key_order_and_sees_values() -> None:
    a = payload_hash({"a": 1, "b": [1, 2], "c": {"x": "é", "y": None}})
    assert a == payload_hash({"c": {"y": None, "x": "é"}, "b": [1, 2], "a": 1})
    assert a != payload_hash({"a": 1, "b": [2, 1], "c": {"x": "é", "y": None}})
    assert len(a) == 64


def test_new_records_are_inserted_dirty_with_their_keys(store: Store) -> None:
    result = store.staging.stage_page(
        "acq",
        [
            rec("1", "a@x.io", "+15551230001"),
            rec("2", "b@x.io"),
            rec("3", invalid=[{"field": "phone", "kind": "phone", "reason": "bad"}]),
        ],
    )
    assert (result.inserted, result.changed, result.unchanged) == (3, 0, 0)
    assert sorted(result.dirty) == ["1", "2", "3"]
    stored = rows(store)
    assert set(result.record_ids) == {"1", "2", "3"}
    assert {r.remote_id: r.id for r in stored.values()} == result.record_ids
    assert all(r.dirty and r.deleted_at is None for r in stored.values())
    assert stored["1"].payload["email"] == "a@x.io"
    assert stored["1"].remote_updated_at == T0
    assert stored["3"].invalid == [{"field": "phone", "kind": "phone", "reason": "bad"}]
    assert stored["1"].seen_at.tzinfo is not None
    assert keys_of(store) == {"1": {("email", "a@x.io"), ("phone", "+15551230001")}, "2": {("email", "b@x.io")}}


def test_repeated_records_are_unchanged_and_not_dirtied(store: Store) -> None:
    page = [rec("1", "a@x.io"), rec("2", "b@x.io")]
    store.staging.stage_page("acq", page)
    clear_dirty(store)
    before = rows(store)
    again = store.staging.stage_page("acq", page)
    assert (again.inserted, again.changed, again.unchanged) == (0, 0, 2)
    assert again.dirty == []
    after = rows(store)
    assert not any(r.dirty for r in after.values())
    assert after["1"].seen_at >= before["1"].seen_at
    assert again.record_ids == {"1": before["1"].id, "2": before["2"].id}
    assert keys_of(store) == {"1": {("email", "a@x.io")}, "2": {("email", "b@x.io")}}


def test_changed_record_is_dirtied_and_its_keys_replaced(store: Store) -> None:
    store.staging.stage_page("acq", [rec("1", "a@x.io", "+15551230001"), rec("2", "b@x.io")])
    clear_dirty(store)
    result = store.staging.stage_page("acq", [rec("1", "new@x.io"), rec("2", "b@x.io")])
    assert (result.inserted, result.changed, result.unchanged) == (0, 1, 1)
    assert result.dirty == ["1"]
    stored = rows(store)
    assert stored["1"].dirty and not stored["2"].dirty
    assert stored["1"].payload["email"] == "new@x.io"
    assert keys_of(store) == {"1": {("email", "new@x.io")}, "2": {("email", "b@x.io")}}


def test_connections_are_separate(store: Store) -> None:
    store.staging.stage_page("acq", [rec("1", "a@x.io")])
    result = store.staging.stage_page("ghl", [rec("1", "a@x.io")])
    assert result.inserted == 1
    assert rows(store, "acq")["1"].id != rows(store, "ghl")["1"].id


def test_a_remote_id_repeated_in_a_page_counts_once(store: Store) -> None:
    result = store.staging.stage_page("acq", [rec("1", "old@x.io"), rec("2"), rec("1", "new@x.io")])
    assert (result.inserted, result.changed, result.unchanged) == (2, 0, 0)
    assert rows(store)["1"].payload["email"] == "new@x.io"
    assert keys_of(store)["1"] == {("email", "new@x.io")}


def test_tombstone_marks_deleted_and_keeps_payload_and_keys(store: Store) -> None:
    store.staging.stage_page("acq", [rec("1", "a@x.io")])
    clear_dirty(store)
    tomb = StagedRecord("1", {"id": "1"}, payload_hash({"id": "1"}), T0, [], deleted=True)
    result = store.staging.stage_page("acq", [tomb])
    assert (result.inserted, result.changed, result.unchanged) == (0, 1, 0)
    assert result.dirty == ["1"]
    r = rows(store)["1"]
    assert r.deleted_at is not None and r.dirty
    assert r.payload["email"] == "a@x.io"
    assert keys_of(store) == {"1": {("email", "a@x.io")}}
    clear_dirty(store)
    assert store.staging.stage_page("acq", [tomb]).unchanged == 1
    assert not rows(store)["1"].dirty
    # It comes back: a change, no longer deleted.
    back = store.staging.stage_page("acq", [rec("1", "a@x.io")])
    assert back.changed == 1
    r = rows(store)["1"]
    assert r.deleted_at is None and r.dirty


def test_unknown_tombstone_is_stored_deleted(store: Store) -> None:
    result = store.staging.stage_page("acq", [rec("9", "z@x.io", deleted=True)])
    assert result.inserted == 1
    assert rows(store)["9"].deleted_at is not None


def test_a_new_merge_target_is_a_change(store: Store) -> None:
    store.staging.stage_page("c100", [rec("7", "a@x.io")])
    clear_dirty(store)
    result = store.staging.stage_page("c100", [rec("7", "a@x.io", merged_into="8")])
    assert result.changed == 1
    r = rows(store, "c100")["7"]
    assert r.merged_into == "8" and r.dirty


def test_scan_id_marks_every_record_seen(store: Store) -> None:
    store.staging.stage_page("acq", [rec("1", "a@x.io"), rec("2", "b@x.io")])
    scan = store.cursors.begin_full_scan("acq")
    store.staging.stage_page("acq", [rec("1", "a@x.io"), rec("2", "changed@x.io"), rec("3")], scan_id=scan)
    assert {r.remote_id: r.last_scan for r in rows(store).values()} == {"1": scan, "2": scan, "3": scan}
    # An incremental page afterwards does not erase what the scan saw.
    store.staging.stage_page("acq", [rec("2", "again@x.io")])
    assert rows(store)["2"].last_scan == scan


def test_cursor_advances_with_the_page(store: Store) -> None:
    assert store.cursors.get_cursor("acq").position is None
    store.staging.stage_page("acq", [rec("1")], cursor={"since": "2026-03-01T12:00:00Z"})
    assert store.cursors.get_cursor("acq").position == {"since": "2026-03-01T12:00:00Z"}
    store.staging.stage_page("acq", [], cursor={"since": "2026-03-02T00:00:00Z"})
    assert store.cursors.get_cursor("acq").position == {"since": "2026-03-02T00:00:00Z"}
    store.staging.stage_page("acq", [rec("2")])  # no cursor given: position untouched
    assert store.cursors.get_cursor("acq").position == {"since": "2026-03-02T00:00:00Z"}


@pytest.mark.parametrize("bad", ["overlong_remote_id", "unserializable_payload"])
def test_a_failed_page_commits_nothing_and_leaves_the_cursor(store: Store, bad: str) -> None:
    store.staging.stage_page("acq", [rec("1", "a@x.io")], cursor={"page": 1})
    good = rec("2", "b@x.io")
    changed = rec("1", "other@x.io")
    if bad == "overlong_remote_id":
        broken = rec("x" * 200)
        expected: type[Exception] = StageError
    else:
        broken = rec("3")
        broken.payload["oops"] = object()  # cannot be written as JSON: fails inside the transaction
        expected = Exception
    with pytest.raises(expected):
        store.staging.stage_page("acq", [good, changed, broken], cursor={"page": 2})
    assert store.cursors.get_cursor("acq").position == {"page": 1}
    assert set(rows(store)) == {"1"}
    assert rows(store)["1"].payload["email"] == "a@x.io"
    assert keys_of(store) == {"1": {("email", "a@x.io")}}


def test_pages_larger_than_one_in_list(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(staging, "_IN_CHUNK", 7)
    page = [rec(str(i), f"p{i}@x.io") for i in range(30)]
    assert store.staging.stage_page("acq", page).inserted == 30
    page[3] = rec("3", "moved@x.io")
    page[20] = rec("20", deleted=True)
    result = store.staging.stage_page("acq", page)
    assert (result.inserted, result.changed, result.unchanged) == (0, 2, 28)
    assert sorted(result.dirty) == ["20", "3"]
    assert len(keys_of(store)) == 30


def test_quarantine_keeps_payloads_with_reasons(store: Store) -> None:
    first = store.staging.quarantine("acq", "1", '{"id": "1", "name": ', "invalid JSON")
    store.staging.quarantine("ghl", None, "<html>", "not a contact")
    entries = store.staging.quarantined()
    assert [e.id for e in entries] == [first, first + 1]
    assert [(e.connection, e.remote_id, e.reason) for e in entries] == [
        ("acq", "1", "invalid JSON"),
        ("ghl", None, "not a contact"),
    ]
    only = store.staging.quarantined("ghl")
    assert len(only) == 1 and only[0].raw == "<html>" and only[0].created_at.tzinfo is not None


def test_bulk_written_values_compare_like_orm_written_ones(store: Store) -> None:
    from datetime import timedelta

    paris = timezone(timedelta(hours=2))
    r = rec("1", "a@x.io")
    r.remote_updated_at = T0.astimezone(paris)  # any zone in, UTC stored
    store.staging.stage_page(
        "acq", [r, rec("2", "b@x.io", invalid=[{"field": "phone", "kind": "phone", "reason": "x"}])]
    )
    with store.session() as s:
        found = (
            s.execute(
                select(RemoteRecord.remote_id).where(
                    RemoteRecord.remote_updated_at == T0,
                    RemoteRecord.invalid.is_(None),  # "no invalid values" is SQL NULL, not JSON null
                    RemoteRecord.dirty.is_(True),
                )
            )
            .scalars()
            .all()
        )
    assert found == ["1"]
    assert rows(store)["1"].remote_updated_at == T0


def test_naive_datetimes_are_refused(store: Store) -> None:
    r = rec("1")
    r.remote_updated_at = datetime(2026, 3, 1, 12, 0)
    with pytest.raises(StageError, match="timezone-aware"):
        store.staging.stage_page("acq", [r], cursor={"page": 1})
    assert store.cursors.get_cursor("acq").position is None


def test_a_new_record_inserted_by_another_writer_meanwhile_is_taken_over(store: Store, store_kind: str) -> None:
    """PostgreSQL writes records its look-up did not find with COPY; when another transaction
    inserts one of them in between, the page is staged again through the upsert."""
    if store_kind != "postgresql":
        pytest.skip("SQLite takes the write lock before the look-up: no writer can come in between")
    other = store.engine.connect()
    other.begin()
    other.execute(
        insert(RemoteRecord).values(
            connection="acq", remote_id="2", payload={"id": "2"}, payload_hash="0" * 64, seen_at=utcnow(), dirty=False
        )
    )
    outcome: dict[str, Any] = {}

    def stage() -> None:
        try:
            outcome["result"] = store.staging.stage_page(
                "acq", [rec("1", "a@x.io"), rec("2", "b@x.io")], cursor={"page": 1}
            )
        except Exception as e:  # surfaced below
            outcome["error"] = e

    worker = threading.Thread(target=stage)
    worker.start()
    try:
        # The staging transaction missed the uncommitted row; its COPY now waits on it.
        with store.engine.connect() as watch:
            blocker = other.execute(text("SELECT pg_backend_pid()")).scalar()
            for _ in range(6000):  # a busy machine can be slow; it is normally a few ms
                waiting = watch.execute(
                    text("SELECT count(*) FROM pg_stat_activity WHERE :blocker = ANY(pg_blocking_pids(pid))"),
                    {"blocker": blocker},
                ).scalar()
                if waiting or not worker.is_alive():
                    break
                time.sleep(0.01)
            activity = watch.execute(
                text(
                    "SELECT wait_event_type, wait_event, left(query, 40) FROM pg_stat_activity WHERE datname = current_database()"
                )
            ).all()
        stack = sys._current_frames().get(worker.ident or 0)
        assert waiting, (outcome, activity, "".join(traceback.format_stack(stack)) if stack else None)
    finally:
        other.commit()
        other.close()
        worker.join()
    assert "error" not in outcome, outcome
    result = outcome["result"]
    assert (result.inserted, result.changed, result.unchanged) == (1, 1, 0)
    assert sorted(result.dirty) == ["1", "2"]
    stored = rows(store)
    assert stored["2"].payload["email"] == "b@x.io" and stored["2"].dirty
    assert result.record_ids == {r.remote_id: r.id for r in stored.values()}
    assert keys_of(store) == {"1": {("email", "a@x.io")}, "2": {("email", "b@x.io")}}
    assert store.cursors.get_cursor("acq").position == {"page": 1}


def test_values_with_bulk_format_characters_are_stored_as_given(store: Store) -> None:
    """Backslashes, tabs, line breaks and a literal ``\\N`` survive the bulk write (PostgreSQL's
    COPY text format gives them a meaning)."""
    odd = "a\\b\tc\nd\re \\N"
    r = rec(
        odd, note=odd, nested={"k": [odd]}, merged_into=odd, invalid=[{"field": odd, "kind": "phone", "reason": odd}]
    )
    r.keys = [Key("email", f"x{odd}@x.io"), Key(odd, odd)]
    result = store.staging.stage_page(odd, [r])
    assert result.inserted == 1
    stored = rows(store, odd)[odd]
    assert stored.payload == r.payload
    assert stored.merged_into == odd
    assert stored.invalid == [{"field": odd, "kind": "phone", "reason": odd}]
    assert stored.connection == odd and stored.payload_hash == r.payload_hash
    assert keys_of(store, odd) == {odd: {("email", f"x{odd}@x.io"), (odd, odd)}}
    assert store.staging.stage_page(odd, [r]).unchanged == 1
