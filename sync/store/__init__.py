"""The staging store (DESIGN.md, "Data model"): the only package that imports SQLAlchemy.

Open one with ``Store.open(url)`` after ``upgrade(url)``. :class:`Store` is the only door: its
repositories hang off it, all on its one sessionmaker and its one transaction API.

- ``store.staging``    stage_page / quarantine / quarantined / staged_hashes (``sync.store.staging``)
- ``store.cursors``    get_cursor / set_checkpoint / begin_full_scan / finish_full_scan
- ``store.runs``       start_run / finish_run / recent_runs
- ``store.replan``     unplanned_connections
- ``store.outbox``     the outbox and the result transaction (``sync.store.outbox``)
- ``store.persons``    matching and planning state (``sync.store.persons``)
- ``store.snapshots``  the values last confirmed per person and connection
- ``store.status``     status, conflict and review listings
- ``store.operator``   operator decisions and reads: retry / skip a failed write, link or keep
                       apart an ambiguous match, person search and history (``sync.store.operator``)
- ``store.inbox``      the webhook inbox: add (replay, backpressure) / pending / mark_processed / purge
- ``store.profile_lock(profile)``  one process per profile (``sync.store.locks``)

Each call of a store repository is a transaction of its own. Several calls in one transaction
go through a unit of work::

    with store.transaction() as tx:      # commits at the end, rolls back on an exception
        rows = tx.persons.load_match_input()
        ...
        tx.commit()                      # commit part-way (planning streams slice by slice)
        ...
        tx.rollback()                    # discard since the last commit (a dry run)

On SQLite a transaction holds the write lock; using the store inside a unit that holds its
transaction raises :class:`NestedSession` (it would deadlock). ``sync.store.migrate`` has
``upgrade(url)`` / ``head_revision()`` / ``current_revision(engine)``; ``sync.store.models`` the
SQLAlchemy models, for ``sync/store`` itself and for tests that inspect the store.
"""

from __future__ import annotations

from sync.store.connect import display_url
from sync.store.cursors import CursorState, UnknownScan
from sync.store.db import NestedSession, Store, StoreOutOfDate, UnitOfWork
from sync.store.migrate import current_revision, head_revision, upgrade
from sync.store.outbox import Completion, EnqueueResult, Failure, Intent, OutboxItem, OutboxStore
from sync.store.runs import RunInfo
from sync.store.staging import (
    MAX_REMOTE_ID_LENGTH,
    QuarantineEntry,
    StagedHash,
    StagedRecord,
    StageError,
    StageResult,
    payload_hash,
)

__all__ = [
    "MAX_REMOTE_ID_LENGTH",
    "Completion",
    "CursorState",
    "EnqueueResult",
    "Failure",
    "Intent",
    "NestedSession",
    "OutboxItem",
    "OutboxStore",
    "QuarantineEntry",
    "RunInfo",
    "StageError",
    "StageResult",
    "StagedHash",
    "StagedRecord",
    "Store",
    "StoreOutOfDate",
    "UnitOfWork",
    "UnknownScan",
    "current_revision",
    "display_url",
    "head_revision",
    "payload_hash",
    "upgrade",
]
