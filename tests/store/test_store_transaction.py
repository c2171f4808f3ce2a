"""The one transaction API: ``store.transaction()`` and the repositories that join it."""

from __future__ import annotations

import pytest

from sync.store import NestedSession, Store
from sync.store.models import Person


def _persons(store: Store) -> list[str]:
    with store.session() as s:
        return sorted(p.fields["first_name"] for p in s.query(Person).all())


def test_every_repository_is_behind_the_nested_transaction_guard(store: Store, store_kind: str) -> None:
    calls = [
        lambda: store.outbox.counts(),
        lambda: store.status.conflicts(),
        lambda: store.snapshots.get(1, "acq"),
        lambda: store.persons.dirty_person_ids(),
        lambda: store.persons.with_records(),
        lambda: store.cursors.get_cursor("acq"),
        lambda: store.runs.recent_runs(),
        lambda: store.replan.unplanned_connections(["acq"]),
        lambda: store.staging.quarantined(),
    ]
    with store.transaction():
        for call in calls:
            if store_kind == "sqlite":
                with pytest.raises(NestedSession):
                    call()
            else:
                call()


def test_a_unit_of_work_commits_part_way_and_frees_the_store_meanwhile(store: Store) -> None:
    with store.transaction() as tx:
        tx.session.add(Person(fields={"first_name": "Ada"}))
        tx.commit()
        # Nothing is held now: the store may be used (on SQLite too) and sees the commit.
        assert _persons(store) == ["Ada"]
        assert len(tx.persons.dirty_person_ids()) == 1
        tx.session.add(Person(fields={"first_name": "Bob"}))
    assert _persons(store) == ["Ada", "Bob"]


def test_a_dry_run_rolls_back_what_followed_the_last_commit(store: Store) -> None:
    with store.transaction() as tx:
        tx.session.add(Person(fields={"first_name": "Ada"}))
        tx.commit()
        tx.session.add(Person(fields={"first_name": "Bob"}))
        tx.session.flush()
        assert tx.persons.with_records() != []
        tx.rollback()
    assert _persons(store) == ["Ada"]


def test_a_failing_unit_of_work_keeps_nothing_since_its_last_commit(store: Store) -> None:
    with pytest.raises(RuntimeError):
        with store.transaction() as tx:
            tx.session.add(Person(fields={"first_name": "Ada"}))
            tx.commit()
            tx.session.add(Person(fields={"first_name": "Bob"}))
            tx.session.flush()
            raise RuntimeError("boom")
    assert _persons(store) == ["Ada"]
