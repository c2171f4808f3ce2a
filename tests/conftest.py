"""Shared test fixtures: a fresh, migrated staging store per test.

- ``db_url``: by default a new SQLite file under the test's ``tmp_path`` (copied from a
  template migrated once per session, so it is cheap). When ``CONTACTSYNC_TEST_DATABASE_URL``
  is set (e.g. ``postgresql+psycopg://postgres@127.0.0.1:5432/cs_mine``), that PostgreSQL
  database instead: migrated once per session, every table TRUNCATEd (RESTART IDENTITY
  CASCADE) before each test.
- ``store``: ``Store.open(db_url)``, closed after the test.
- ``store_kind``: ``"sqlite"`` or ``"postgresql"``.

On PostgreSQL the suite runs the tests that can meet the store: those using ``db_url`` (directly
or through another fixture) or naming the store kind. A test that never touches a store (a
connector against its emulator, a mapping, the planner's pure code) cannot give another result
there and runs on the SQLite pass only; ``CONTACTSYNC_TEST_ALL=1`` runs it on PostgreSQL too.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from sqlalchemy import text
from sqlalchemy.engine import Engine

from sync.store import Store, display_url, upgrade
from sync.store.connect import make_engine
from sync.store.models import Base

TEST_DATABASE_ENV = "CONTACTSYNC_TEST_DATABASE_URL"


def _pg_url() -> str | None:
    return os.environ.get(TEST_DATABASE_ENV) or None


def pytest_report_header(config: pytest.Config) -> str:
    url = _pg_url()
    if url:
        return (
            f"contactsync test store: {display_url(url)} (truncated before each test); "
            "tests that never touch a store run on the SQLite pass (CONTACTSYNC_TEST_ALL=1: here too)"
        )
    return "contactsync test store: a fresh SQLite file per test"


_STORE_FIXTURES = frozenset({"db_url", "store", "store_kind", "_pg_engine"})
_STORE_WORDS = (TEST_DATABASE_ENV, "TEST_DATABASE_ENV", "store_kind", "_pg_url")
_module_words: dict[str, bool] = {}


def _meets_the_store(item: pytest.Item) -> bool:
    if _STORE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
        return True
    path = str(item.path)
    if path not in _module_words:
        text_ = item.path.read_text(encoding="utf-8") if item.path.suffix == ".py" else ""
        _module_words[path] = any(word in text_ for word in _STORE_WORDS)
    return _module_words[path]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not _pg_url() or os.environ.get("CONTACTSYNC_TEST_ALL"):
        return
    keep = [item for item in items if _meets_the_store(item)]
    if len(keep) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if not _meets_the_store(item)])
        items[:] = keep


@pytest.fixture(scope="session")
def store_kind() -> str:
    """Which store the suite runs on: ``"sqlite"`` or ``"postgresql"``."""
    return "postgresql" if _pg_url() else "sqlite"


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("store-template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def _pg_engine() -> Iterator[Engine]:
    url = _pg_url()
    assert url, "only used when a PostgreSQL test database is configured"
    upgrade(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture
def db_url(request: pytest.FixtureRequest, store_kind: str, tmp_path: Path) -> str:
    """URL of an empty, migrated store for this test."""
    if store_kind == "postgresql":
        engine: Engine = request.getfixturevalue("_pg_engine")
        tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        with engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        return _pg_url() or ""
    template: Path = request.getfixturevalue("_sqlite_template")
    path = tmp_path / "store.db"
    shutil.copyfile(template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """The migrated store at ``db_url``, open for the test."""
    s = Store.open(db_url)
    yield s
    s.close()


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Leave structlog and the root logger as the next test expects them: a command that
    configures logging (at WARNING, say) must not filter out the events a later test captures."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    root.setLevel(level)
    root.handlers[:] = handlers
