"""Change hints (webhook events) → staged records: each hinted contact is re-read by id and
staged like a pulled record; one that the platform no longer has (its get answers 404/400) is
staged as deleted — the explicit delete signal a platform whose search cannot reveal deletes
(GoHighLevel) otherwise never gives.

A webhook is a hint, never the data: its payload may be partial or stale (deliveries come out
of order), so only what the API answers now is staged. No cursor moves: the scheduled pull
stays the safety net and reads these contacts again as unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from connectors.base import Connector, ConnectorError
from sync.detect.sanitize import quarantine_text, reason_text
from sync.detect.stage import stage_record
from sync.mapping import FieldMapping
from sync.store import StagedRecord, StageError, Store

log = structlog.get_logger("contactsync.hints")


@dataclass
class HintReport:
    """What re-reading one connection's hinted contacts staged."""

    connection: str
    read: int = 0
    changed: int = 0
    unchanged: int = 0
    deleted: list[str] = field(default_factory=list)
    quarantined: int = 0
    held: int = 0  # confirmed deletes held by the mass-delete breaker (store.held)
    failed: dict[str, str] = field(default_factory=dict)  # remote id -> why it could not be read

    def to_json(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "changed": self.changed,
            "unchanged": self.unchanged,
            "deleted": len(self.deleted),
            "quarantined": self.quarantined,
            "held": self.held,
            "failed": len(self.failed),
        }


async def stage_hints(
    store: Store,
    name: str,
    connector: Connector,
    mapping: FieldMapping,
    remote_ids: Sequence[str],
    *,
    io: Callable[..., Awaitable[Any]] | None = None,
    concurrency: int = 4,
    max_deletes: int | None = None,
) -> HintReport:
    """Re-read ``remote_ids`` of connection ``name`` and stage what the platform holds now.
    A contact that cannot be read (platform down, rate limited past its retries) is left for
    the scheduled pull and reported in ``failed``. More than ``max_deletes`` confirmed deletes in
    one call are not believed: they are held (``store.held``, as a scan's would be) for
    ``contactsync deletes approve|reject``."""
    call = io or asyncio.to_thread
    report = HintReport(name)
    ids = list(dict.fromkeys(str(r) for r in remote_ids))
    gate = asyncio.Semaphore(max(1, concurrency))
    found: dict[str, Any] = {}
    gone: list[str] = []

    async def one(remote_id: str) -> None:
        async with gate:
            try:
                record = await connector.get(remote_id)
            except ConnectorError as exc:
                report.failed[remote_id] = f"{type(exc).__name__}: {exc}"
                return
        report.read += 1
        if record is None:
            gone.append(remote_id)
        else:
            found[remote_id] = record

    await asyncio.gather(*(one(r) for r in ids))
    staged: list[StagedRecord] = []
    for remote_id, record in found.items():
        try:
            staged.append(stage_record(mapping, record))
        except Exception as exc:  # noqa: BLE001 - one unreadable contact never stops the rest
            await call(
                store.staging.quarantine, name, remote_id, quarantine_text(record.payload), reason_text(str(exc))
            )
            report.quarantined += 1
    if gone:
        live = await call(store.inbox.live_records, name, gone)
        confirmed = [r for r in gone if r in live]
        if max_deletes is not None and len(confirmed) > max_deletes:
            reason = (
                f"{len(confirmed)} contacts reported deleted by webhooks at once, more than"
                f" deletes.max_count ({max_deletes}): held for `contactsync deletes approve`"
            )
            await call(store.held.hold, name, confirmed, reason)
            log.warning("hinted_deletes_held", connection=name, count=len(confirmed))
            report.held = len(confirmed)
            confirmed = []
        for remote_id in confirmed:
            staged.append(StagedRecord(remote_id, {}, "", None, [], deleted=True))
            report.deleted.append(remote_id)
    if staged:
        try:
            result = await call(store.staging.stage_page, name, staged, touch_unchanged=False)
        except StageError as exc:
            log.warning("hints_not_staged", connection=name, error=str(exc))
            report.failed.update({r.remote_id: str(exc) for r in staged})
            return report
        report.changed = result.inserted + result.changed
        report.unchanged = result.unchanged
    return report
