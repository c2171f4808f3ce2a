"""The staging store (DESIGN.md, "Data model"): the only package that imports SQLAlchemy.

Open one with ``Store.open(url)`` after ``upgrade(url)``. Every operation is a method of
:class:`Store`, grouped by job in small mixins, each in its own module:

- ``sync.store.db``        Store.open / engine / url / dialect_name / session() / close(); StoreOutOfDate
- ``sync.store.staging``   Store.stage_page / quarantine / quarantined; StagedRecord, payload_hash
- ``sync.store.cursors``   Store.get_cursor / set_checkpoint / begin_full_scan / finish_full_scan
- ``sync.store.runs``      Store.start_run / finish_run / recent_runs
- ``sync.store.replan``    Store.unplanned_connections; mark_all_persons_dirty_in(session)
- ``sync.store.migrate``   upgrade(url) / head_revision() / current_revision(engine)
- ``sync.store.models``    the SQLAlchemy models, for code that queries through Store.session()
"""

from __future__ import annotations

from sync.store.cursors import CursorState, UnknownScan
from sync.store.db import NestedSession, Store, StoreOutOfDate, display_url
from sync.store.migrate import current_revision, head_revision, upgrade
from sync.store.runs import RunInfo
from sync.store.staging import (
    MAX_REMOTE_ID_LENGTH,
    QuarantineEntry,
    StagedRecord,
    StageError,
    StageResult,
    payload_hash,
)

__all__ = [
    "MAX_REMOTE_ID_LENGTH",
    "NestedSession",
    "CursorState",
    "QuarantineEntry",
    "RunInfo",
    "StageError",
    "StageResult",
    "StagedRecord",
    "Store",
    "StoreOutOfDate",
    "UnknownScan",
    "current_revision",
    "display_url",
    "head_revision",
    "payload_hash",
    "upgrade",
]
