"""Migrations build exactly the models; Store.open refuses empty or out-of-date stores."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import make_url

from sync.store import Store, StoreOutOfDate, current_revision, display_url, head_revision, upgrade
from sync.store.connect import make_engine
from sync.store.models import Base


@pytest.fixture
def scratch_url(store_kind: str, db_url: str, tmp_path: Path) -> Iterator[str]:
    """An EMPTY store: a new SQLite file, or a scratch schema of the PostgreSQL test database
    (reached through the connection's search_path)."""
    if store_kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'scratch.db'}"
        return
    name = f"cs_scratch_{uuid.uuid4().hex[:12]}"
    admin = make_engine(db_url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{name}"'))
    try:
        url = make_url(db_url).update_query_dict({"options": f"-csearch_path={name}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        admin.dispose()


def test_migrated_schema_equals_models(store: Store) -> None:
    with store.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(ctx, Base.metadata) == []


def test_every_model_table_and_named_constraint_exists(store: Store) -> None:
    insp = inspect(store.engine)
    assert set(Base.metadata.tables) <= set(insp.get_table_names())
    assert insp.get_pk_constraint("remote_records")["name"] == "pk_remote_records"
    uniques = {u["name"] for u in insp.get_unique_constraints("remote_records")}
    assert "uq_remote_records_connection" in uniques
    fks = {fk["name"] for fk in insp.get_foreign_keys("identity_keys")}
    assert fks == {"fk_identity_keys_record_id_remote_records"}


def test_upgrade_is_idempotent(db_url: str, store: Store) -> None:
    head = head_revision()
    assert current_revision(store.engine) == head
    upgrade(db_url)
    upgrade(db_url)
    assert current_revision(store.engine) == head


def test_open_refuses_an_empty_store(scratch_url: str) -> None:
    with pytest.raises(StoreOutOfDate) as exc:
        Store.open(scratch_url)
    msg = str(exc.value)
    assert "none (an empty store)" in msg
    assert f"the code needs {head_revision()}" in msg
    assert "contactsync db upgrade -c FILE" in msg
    assert exc.value.current is None
    # check=False opens it anyway (used by `db upgrade` and diagnostics).
    Store.open(scratch_url, check=False).close()


def test_open_refuses_an_out_of_date_store_then_upgrade_fixes_it(scratch_url: str) -> None:
    upgrade(scratch_url)
    engine = make_engine(scratch_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0000'"))
    with pytest.raises(StoreOutOfDate, match=r"is at revision 0000, the code needs "):
        Store.open(scratch_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": head_revision()})
    engine.dispose()
    Store.open(scratch_url).close()


def test_upgrade_creates_an_empty_store(scratch_url: str) -> None:
    upgrade(scratch_url)
    store = Store.open(scratch_url)
    try:
        assert current_revision(store.engine) == head_revision()
        assert store.runs.recent_runs() == []
    finally:
        store.close()


def test_messages_never_show_the_password() -> None:
    url = "postgresql+psycopg://sync:s3cr3t-pw@db.example:5432/contacts"
    assert "s3cr3t-pw" not in display_url(url)
    assert "db.example" in display_url(url)
    err = StoreOutOfDate(url, "0000", "0001")
    assert "s3cr3t-pw" not in str(err)
    assert "db.example:5432/contacts" in str(err)


def test_sqlite_connections_use_wal_and_foreign_keys(store: Store, store_kind: str) -> None:
    if store_kind != "sqlite":
        pytest.skip("SQLite pragmas")
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() > 0


def test_session_commits_on_success_and_rolls_back_on_error(store: Store) -> None:
    from sync.store.models import Person

    with store.session() as s:
        s.add(Person(fields={"first_name": "Ada"}))
    with pytest.raises(RuntimeError):
        with store.session() as s:
            s.add(Person(fields={"first_name": "Bob"}))
            s.flush()
            raise RuntimeError("boom")
    with store.session() as s:
        names = [p.fields["first_name"] for p in s.query(Person).all()]
    assert names == ["Ada"]


def test_nested_sessions_fail_fast_on_sqlite_and_work_on_postgresql(store: Store, store_kind: str) -> None:
    from sync.store import NestedSession

    with store.session():
        if store_kind == "sqlite":
            with pytest.raises(NestedSession):
                store.cursors.get_cursor("acq")
        else:
            assert store.cursors.get_cursor("acq").position is None
    # The failed attempt left the store usable.
    assert store.cursors.get_cursor("acq").full_scan_id == 0
