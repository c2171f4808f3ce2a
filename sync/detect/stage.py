"""Pull → stage: a connector's pages become staged records, one page per transaction.

For each record of a page: the mapping reads the raw payload into canonical fields (values that
do not normalize are kept raw and reported as ``invalid``), the matching keys are derived from
those fields, and the payload is hashed. A payload that cannot be read at all is quarantined
with its reason while the rest of the page goes on. The page's cursor is committed in the same
transaction as its rows (``store.staging.stage_page``), so a kill at any point resumes where the last
committed page ended.

Deletion detection runs only after a complete pull that the connector marks ``full_scan`` and
that was not resumed from an interrupted one (a resumed offset scan could have skipped records
that moved between pages): the checkpoint row says whether the previous pull finished.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from connectors.base import Connector, ConnectorError, Page, PullMode, RawRecord
from connectors.pulls import FutureRecord, UnreadablePage, UnreadableRecord
from sync.detect.sanitize import BadPayload, check_fields, clean_text, quarantine_text, reason_text, sanitize
from sync.mapping import FieldMapping
from sync.normalize import IdentityKey
from sync.store import MAX_REMOTE_ID_LENGTH, StagedHash, StagedRecord, StageError, Store, payload_hash
from sync.store.held import DeleteLimits

PageProgress = Callable[[str, int], None]

# An incremental pull that has returned this many records loads the staged hashes (one query of
# the connection's rows) to skip reading the unchanged ones among the rest.
KNOWN_HASHES_AFTER = 1000


@dataclass
class PullReport:
    """What one pull of one connection staged."""

    connection: str
    pages: int = 0
    records: int = 0
    inserted: int = 0
    changed: int = 0
    unchanged: int = 0
    quarantined: int = 0
    invalid_values: int = 0
    deleted: list[str] = field(default_factory=list)
    complete: bool = False
    resumed: bool = False
    skipped: str | None = None  # why nothing was pulled (lookup-only platform)
    error: str | None = None
    held: int = 0  # deletes the scan implied that the mass-delete breaker holds (store.held)
    held_reason: str | None = None
    # Every remote id this pull listed (read this cycle: its staged payload is current).
    listed: set[str] = field(default_factory=set, repr=False)
    # Read before the cycle's turn (a long scan): listed payloads may be some seconds old.
    prefetched: bool = False
    skipped_stale: int = 0  # listed records not staged: our writes landed after their page was read
    prefetch_age_s: float | None = None  # from its last page read to the start of its staging
    # An incremental listing sorted newest first that went back past its cursor, with a total
    # equal to the records the store holds of the connection: nothing changed since the cursor
    # is missing from it, so every staged payload is current (no read before an update).
    caught_up: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "pages": self.pages,
            "records": self.records,
            "inserted": self.inserted,
            "changed": self.changed,
            "unchanged": self.unchanged,
            "quarantined": self.quarantined,
            "invalid_values": self.invalid_values,
            "deleted": len(self.deleted),
            "complete": self.complete,
            "resumed": self.resumed,
            "skipped": self.skipped,
            "error": self.error,
            "held": self.held,
            "held_reason": self.held_reason,
            **(
                {"prefetched": True, "skipped_stale": self.skipped_stale, "prefetch_age_s": self.prefetch_age_s}
                if self.prefetched
                else {}
            ),
        }


def _key_pairs(keys: Any) -> list[IdentityKey]:
    out: list[IdentityKey] = []
    for k in keys or ():
        if isinstance(k, IdentityKey):
            out.append(k)
        else:
            kind, value = k
            out.append(IdentityKey(str(kind), str(value)))
    return out


def read_keys(mapping: FieldMapping, payload: dict[str, Any]) -> list[tuple[str, str]]:
    """The normalized matching keys of a raw payload, as (kind, value) pairs."""
    result = mapping.read(payload)
    return [(k.kind, k.value) for k in _key_pairs(mapping.keys(result.fields))]


#: The ``invalid`` entry kind of a record stamped in the future (``status`` counts them).
FUTURE_TIMESTAMP = "future_timestamp"


def stage_record(mapping: FieldMapping, record: RawRecord, digest: str | None = None) -> StagedRecord:
    """One raw record as a staged record; raises on a payload that cannot be read at all, or
    that is not clean and bounded (:mod:`sync.detect.sanitize`): the caller quarantines it with
    the exception's message. ``digest`` is not used any more (the hash is taken of the
    sanitized payload)."""
    if isinstance(record, UnreadableRecord):
        raise BadPayload(record.reason)
    if not isinstance(record.payload, dict):
        raise BadPayload(f"payload is a {type(record.payload).__name__}, not an object")
    if not record.remote_id or len(str(record.remote_id)) > MAX_REMOTE_ID_LENGTH:
        raise BadPayload(f"remote id of length {len(str(record.remote_id or ''))} is not usable")
    payload, digest = sanitize(record.payload)
    result = mapping.read(payload)
    check_fields(result.fields)
    invalid = [{"field": i.field, "kind": i.field, "reason": i.reason} for i in result.issues]
    if isinstance(record, FutureRecord) and record.stamped is not None:
        invalid.append(
            {
                "field": "updated_at",
                "kind": FUTURE_TIMESTAMP,
                "reason": f"stamped {record.stamped.isoformat()}, past the server's now plus skew"
                f" ({record.limit.isoformat() if record.limit else '?'}): not believed",
            }
        )
    return StagedRecord(
        remote_id=str(record.remote_id),
        payload=payload,
        payload_hash=digest,
        remote_updated_at=record.updated_at,
        keys=_key_pairs(mapping.keys(result.fields)),
        invalid=invalid,
        merged_into=record.merged_into,
        deleted=record.deleted,
    )


def unread_record(mapping: FieldMapping, record: RawRecord, digest: str) -> StagedRecord:
    """A record whose payload hash ``digest`` equals its staged row's: staging only refreshes
    such a row's ``seen_at``, so its keys are not read (the mapping's read is most of a pull's
    CPU per record). Should the stored row have changed meanwhile, staging reads them after
    all through ``read_rest``."""

    def read_rest() -> tuple[list[IdentityKey], list[dict[str, Any]]]:
        full = stage_record(mapping, record)
        return full.keys, full.invalid

    return StagedRecord(
        remote_id=str(record.remote_id),
        payload=record.payload,
        payload_hash=digest,
        remote_updated_at=record.updated_at,
        keys=[],
        merged_into=record.merged_into,
        deleted=record.deleted,
        read_rest=read_rest,
    )


def _off_loop(io: Callable[..., Awaitable[Any]] | None) -> Callable[..., Awaitable[Any]]:
    """How the pull calls the store: on the cycle's one store thread (``io``, a
    ``sync.apply.storethread.StoreThread``), else in a worker thread. Never on the event loop:
    a blocking store call (on SQLite, waiting for the write lock) would hold up every
    connection's I/O."""
    if io is not None:
        return io
    return asyncio.to_thread


def _hash_or_none(payload: dict[str, Any]) -> str | None:
    """The payload's hash for the unchanged-record shortcut (None when it cannot be taken: the
    record then goes through the full checks)."""
    try:
        return payload_hash(payload)
    except (ValueError, RecursionError, UnicodeError):
        return None


def _unreadable(record: RawRecord, exc: BaseException) -> tuple[str | None, str, str]:
    """A quarantine row (remote id, raw text, reason) for a record that cannot be staged."""
    remote_id = clean_text(str(record.remote_id or ""))[:MAX_REMOTE_ID_LENGTH] or None
    reason = str(exc) if isinstance(exc, BadPayload) else f"{type(exc).__name__}: {exc}"
    return remote_id, quarantine_text(record.payload), reason_text(reason)


async def _stage_one_by_one(
    call: Callable[..., Awaitable[Any]],
    store: Store,
    name: str,
    staged: list[StagedRecord],
    cursor: dict[str, Any],
    scan_id: int | None,
) -> tuple[Any, list[tuple[str | None, str, str]]]:
    """Stage a page the store refused as a whole, record by record; returns the summed result
    and a quarantine row for each record refused."""
    refused: list[tuple[str | None, str, str]] = []
    totals = {"inserted": 0, "changed": 0, "unchanged": 0}
    for r in staged:
        try:
            one = await call(store.staging.stage_page, name, [r], scan_id=scan_id, touch_unchanged=False)
        except StageError as exc:
            refused.append((r.remote_id, quarantine_text(r.payload), reason_text(f"the store refused it: {exc}")))
            continue
        totals["inserted"] += one.inserted
        totals["changed"] += one.changed
        totals["unchanged"] += one.unchanged
    await call(store.staging.stage_page, name, [], cursor=cursor, scan_id=scan_id, touch_unchanged=False)
    return _Summed(totals["inserted"], totals["changed"], totals["unchanged"]), refused


async def _replay(pages: Sequence[Page]) -> AsyncIterator[Page]:
    for page in pages:
        yield page


@dataclass
class _Summed:
    inserted: int
    changed: int
    unchanged: int


async def pull_connection(
    store: Store,
    name: str,
    connector: Connector,
    mapping: FieldMapping,
    *,
    full: bool = False,
    stop: asyncio.Event | None = None,
    progress: PageProgress | None = None,
    total: PageProgress | None = None,
    io: Callable[..., Awaitable[Any]] | None = None,
    deletes: DeleteLimits | None = None,
    prefetched: Sequence[Page] | None = None,
    skip: Collection[str] = (),
    known: dict[str, StagedHash] | None = None,
) -> PullReport:
    """Pull ``connector`` since its stored cursor (everything with ``full``) and stage every page.

    ``known``: the connection's staged hashes (``Staging.staged_hashes``) just read by the
    caller under the same lock, so a scan does not read them again.

    ``prefetched``: the pages of this pull, already fetched (a long scan read before the cycle's
    turn, :meth:`sync.cycle.CycleRunner.run`): staged as if pulled now. ``skip``: remote ids
    whose staged row changed since the listing began (our writes landed meanwhile: the store
    may hold newer values than the page): not staged, but counted as listed (they exist there,
    or we created them after the listing was read).

    A lookup-only platform (DM Champ) has nothing to pull: its records are the ones we write.
    ``io`` (a ``sync.apply.storethread.StoreThread``) runs every store call — cursor, page
    commits, quarantine — off the event loop on the cycle's one store thread. ``deletes``: the
    mass-delete limits a complete scan's implied deletes are judged by (``store.held``); None
    (a unit of the pull alone) believes every one — the engine always passes the configured
    limits."""
    report = PullReport(name)
    if connector.capabilities.pull_mode is PullMode.LOOKUP_ONLY:
        report.skipped = "lookup only: no listing on this platform"
        report.complete = True
        return report
    call = _off_loop(io)
    state = await call(store.cursors.get_cursor, name)
    # A checkpoint left behind means the previous pull of this connection was interrupted: an
    # incremental pull continues from the committed cursor anyway; a full pull (backfill)
    # resumes from it only when the interrupted pull was a full one too.
    checkpoint = state.checkpoint
    if full:
        report.resumed = bool(checkpoint and checkpoint.get("full"))
    else:
        report.resumed = checkpoint is not None
    position = state.position if (report.resumed or not full) else None
    scan_id = await call(store.cursors.begin_full_scan, name) if connector.capabilities.deletes_detectable else None
    await call(
        store.cursors.set_checkpoint,
        name,
        {
            "full": full or bool(checkpoint and checkpoint.get("full")),
            "scan_id": scan_id,
            "started_at": datetime.now(UTC).isoformat(),
            "resumed": report.resumed,
        },
    )
    # A scan lists every record each time, most of them unchanged: knowing the staged hashes
    # lets it skip reading those. An incremental pull returns changes only, not worth a query of
    # every staged row, unless it turns out long (e.g. the first pull after our own writes).
    if known is None and (connector.capabilities.pull_mode is PullMode.FULL_SCAN or full):
        known = await call(store.staging.staged_hashes, name)
    # A scan keeps the ids it lists, so the records it finds unchanged need no write each (the
    # deletes are what the store holds live and the scan did not list). Quarantined records
    # count as listed: they exist there, they only could not be read.
    listed: set[str] | None = set() if scan_id is not None else None
    if listed is not None:
        report.listed = listed  # the same set: what the scan listed is what it read
    # Quarantined ids of this connection: a record staged cleanly later leaves quarantine.
    quarantined: set[str] = set(await call(store.staging.quarantined_ids, name))
    pages = connector.pull(position) if prefetched is None else _replay(prefetched)
    if prefetched is not None:
        report.prefetched = True
        if listed is not None and skip:
            listed.update(skip)  # created by us after the listing was read: not missing
    while True:
        try:
            page = await anext(pages)
        except StopAsyncIteration:
            break
        except ConnectorError:
            raise
        except Exception as exc:  # noqa: BLE001 - a page that cannot be read fails this pull only
            raise UnreadablePage(f"{name}: page cannot be read: {type(exc).__name__}: {str(exc)[:200]}") from None
        if listed is not None:
            listed.update(str(r.remote_id) for r in page.records if r.remote_id)
        elif connector.capabilities.listing_current:
            report.listed.update(str(r.remote_id) for r in page.records if r.remote_id)
        if known is None and report.records >= KNOWN_HASHES_AFTER:
            known = await call(store.staging.staged_hashes, name)
        staged: list[StagedRecord] = []
        unreadable: list[tuple[str | None, str, str]] = []
        for record in page.records:
            if skip and str(record.remote_id) in skip:
                report.skipped_stale += 1  # the store's row changed since the listing began
                continue
            try:
                seen = (
                    known.get(str(record.remote_id))
                    if known and type(record) is RawRecord and isinstance(record.payload, dict)
                    else None
                )
                if seen is not None and not record.deleted and seen[1] == record.merged_into:
                    digest = _hash_or_none(record.payload)
                    if digest == seen[0]:
                        staged.append(unread_record(mapping, record, digest))
                        report.invalid_values += seen[2]
                        continue
                staged.append(stage_record(mapping, record))
                report.invalid_values += len(staged[-1].invalid)
            except Exception as exc:  # noqa: BLE001 - one malformed payload never stops the page
                unreadable.append(_unreadable(record, exc))
                report.quarantined += 1
        result = None
        try:
            # Off the event loop, so the other connections' pulls keep going during the commit.
            result = await call(
                store.staging.stage_page, name, staged, cursor=page.cursor, scan_id=scan_id, touch_unchanged=False
            )
        except StageError:
            # The store refused a value of the page: stage its records one by one, quarantine
            # those it refuses, then move the cursor (the page is done either way).
            result, refused = await _stage_one_by_one(call, store, name, staged, page.cursor, scan_id)
            unreadable += refused
            report.quarantined += len(refused)
        for remote_id, raw, reason in unreadable:
            await call(store.staging.quarantine, name, remote_id, raw, reason)
        cleared = quarantined.intersection(r.remote_id for r in staged) - {u[0] for u in unreadable}
        if cleared:
            await call(store.staging.release_quarantine, name, sorted(cleared))
            quarantined -= cleared
        report.pages += 1
        report.records += len(page.records)
        report.inserted += result.inserted
        report.changed += result.changed
        report.unchanged += result.unchanged
        if total is not None and page.total is not None:
            total(name, page.total)
        if progress is not None:
            progress(name, len(page.records))
        if page.complete:
            report.complete = True
            if page.caught_up and page.total is not None and not report.quarantined:
                # A listing cut short with a total to match (half a page, or none) fails this:
                # the count is checked against what the store already knew.
                report.caught_up = page.total == await call(store.staging.record_count, name)
            if page.full_scan and scan_id is not None and not report.resumed:
                closed = await call(
                    store.cursors.close_full_scan,
                    name,
                    scan_id,
                    seen=listed,
                    limits=deletes,
                    merges=connector.capabilities.can_merge,
                )
                report.deleted = closed.deleted
                report.held, report.held_reason = len(closed.held), closed.reason
            break
        if stop is not None and stop.is_set():
            break  # the checkpoint stays: the next pull resumes from the committed cursor
    await pages.aclose()  # type: ignore[attr-defined]
    if report.complete:
        await call(store.cursors.set_checkpoint, name, None)
    return report
