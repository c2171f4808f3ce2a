"""Cursors, checkpoints, full-scan deletion marking and the run log."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select, update

from sync.normalize import IdentityKey as Key
from sync.store import CursorState, StagedRecord, Store, UnknownScan, payload_hash
from sync.store.models import RemoteRecord

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def rec(remote_id: str, **flags: object) -> StagedRecord:
    payload = {"id": remote_id}
    return StagedRecord(remote_id, payload, payload_hash(payload), T0, [Key("email", f"{remote_id}@x.io")], **flags)  # type: ignore[arg-type]


def state(store: Store, connection: str) -> dict[str, tuple[bool, bool]]:
    """remote id -> (deleted, dirty)"""
    with store.session() as s:
        q = select(RemoteRecord).where(RemoteRecord.connection == connection)
        return {r.remote_id: (r.deleted_at is not None, r.dirty) for r in s.execute(q).scalars()}


def test_unknown_connection_has_an_empty_cursor(store: Store) -> None:
    assert store.cursors.get_cursor("nowhere") == CursorState(position=None, checkpoint=None, full_scan_id=0)


def test_checkpoint_is_kept_and_cleared_without_touching_the_position(store: Store) -> None:
    store.staging.stage_page("acq", [], cursor={"since": 5})
    store.cursors.set_checkpoint("acq", {"page_token": "abc", "done": 300})
    assert store.cursors.get_cursor("acq") == CursorState({"since": 5}, {"page_token": "abc", "done": 300}, 0)
    store.cursors.set_checkpoint("acq", None)
    assert store.cursors.get_cursor("acq") == CursorState({"since": 5}, None, 0)
    store.cursors.set_checkpoint("new", {"offset": 1})
    assert store.cursors.get_cursor("new").checkpoint == {"offset": 1}


def test_full_scan_ids_increase_per_connection(store: Store) -> None:
    assert store.cursors.begin_full_scan("acq") == 1
    assert store.cursors.begin_full_scan("acq") == 2
    assert store.cursors.begin_full_scan("ghl") == 1
    assert store.cursors.get_cursor("acq").full_scan_id == 2


def test_finish_full_scan_marks_unseen_records_deleted(store: Store) -> None:
    store.staging.stage_page(
        "acq", [rec("1"), rec("2"), rec("3"), rec("4"), rec("5", merged_into="1"), rec("6", deleted=True)]
    )
    store.staging.stage_page("ghl", [rec("1")])
    with store.session() as s:
        s.execute(update(RemoteRecord).values(dirty=False))
    scan = store.cursors.begin_full_scan("acq")
    store.staging.stage_page("acq", [rec("1"), rec("3")], scan_id=scan)
    store.staging.stage_page("acq", [rec("4")], scan_id=scan)
    assert store.cursors.finish_full_scan("acq", scan) == ["2"]
    after = state(store, "acq")
    assert after["2"] == (True, True)
    assert after["1"] == after["3"] == after["4"] == (False, False)
    assert after["5"] == (False, False)  # merged away: not a deletion
    assert after["6"] == (True, False)  # already deleted: left alone
    assert state(store, "ghl") == {"1": (False, False)}  # other connections untouched
    # Finishing again finds nothing new.
    assert store.cursors.finish_full_scan("acq", scan) == []


def test_a_scan_that_keeps_what_it_listed_writes_nothing_for_unchanged_records(store: Store) -> None:
    """``touch_unchanged=False`` plus ``finish_full_scan(seen=...)``: the same deletions, without
    a write per unchanged record (a quiet scan of a large platform)."""
    store.staging.stage_page("acq", [rec("1"), rec("2"), rec("3"), rec("5", merged_into="1"), rec("6", deleted=True)])
    with store.session() as s:
        s.execute(update(RemoteRecord).values(dirty=False))
        before = {r.remote_id: (r.seen_at, r.last_scan) for r in s.execute(select(RemoteRecord)).scalars()}
    scan = store.cursors.begin_full_scan("acq")
    store.staging.stage_page("acq", [rec("1"), rec("3")], scan_id=scan, touch_unchanged=False)
    with store.session() as s:
        now = {r.remote_id: (r.seen_at, r.last_scan) for r in s.execute(select(RemoteRecord)).scalars()}
    assert now == before  # unchanged records: not written
    assert store.cursors.finish_full_scan("acq", scan, seen=["1", "3"]) == ["2"]
    after = state(store, "acq")
    assert after["2"] == (True, True)
    assert after["1"] == after["3"] == (False, False)
    assert after["5"] == (False, False) and after["6"] == (True, False)
    assert store.cursors.finish_full_scan("acq", scan, seen=["1", "3"]) == []


def test_finish_full_scan_refuses_a_stale_scan(store: Store) -> None:
    store.staging.stage_page("acq", [rec("1")])
    old = store.cursors.begin_full_scan("acq")
    store.cursors.begin_full_scan("acq")
    with pytest.raises(UnknownScan):
        store.cursors.finish_full_scan("acq", old)
    with pytest.raises(UnknownScan):
        store.cursors.finish_full_scan("never-scanned", 0)
    assert state(store, "acq") == {"1": (False, True)}


def test_runs_are_logged_newest_first(store: Store) -> None:
    first = store.runs.start_run("default", "backfill")
    second = store.runs.start_run("default", "cycle")
    store.runs.finish_run(first, "ok", {"pulled": 10, "pushed": {"acq": 2}})
    store.runs.finish_run(second, "failed", {"pulled": 0}, error="acquire: 503 after 5 attempts")
    third = store.runs.start_run("eu", "plan")
    runs = store.runs.recent_runs()
    assert [r.id for r in runs] == [third, second, first]
    assert runs[0].status == "running" and runs[0].finished_at is None and runs[0].counts == {}
    assert runs[1].status == "failed" and runs[1].error == "acquire: 503 after 5 attempts"
    assert runs[2].counts == {"pulled": 10, "pushed": {"acq": 2}}
    assert runs[2].finished_at is not None and runs[2].finished_at >= runs[2].started_at
    assert runs[2].started_at.tzinfo is not None
    assert [r.id for r in store.runs.recent_runs(limit=1)] == [third]


def test_finish_run_checks_its_arguments(store: Store) -> None:
    run = store.runs.start_run("default", "cycle")
    with pytest.raises(ValueError):
        store.runs.finish_run(run, "running", {})
    with pytest.raises(KeyError):
        store.runs.finish_run(run + 100, "ok", {})
