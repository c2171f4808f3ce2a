"""Scans staged into a real store (``sync.detect.stage.pull_connection``): a scan that finds nothing new
skips reading the records whose payload hash is already staged (an Acquire full scan always, a
long incremental pull once it is long), and still stages exactly what reading them would have —
keys, invalid values, changes and deletions."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import delete, select

from connectors.acquire.client import AcquireConnector
from connectors.acquire.emulator import AcquireEmulator
from connectors.base import RawRecord
from connectors.comm100.client import Comm100Connector
from connectors.comm100.emulator import Comm100Emulator
from connectors.emulation import Clock
from sync.detect import stage
from sync.detect.stage import PullReport, pull_connection, stage_record, unread_record
from sync.mapping import load_mapping
from sync.store import Store
from sync.store.models import Cursor, IdentityKey, RemoteRecord

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
CONN = "acq"


class CountingMapping:
    """A shipped mapping, counting its reads (the work a quiet scan should skip)."""

    def __init__(self, platform: str = "acquire") -> None:
        self.inner = load_mapping(platform)
        self.reads = 0

    def read(self, raw: dict[str, Any]) -> Any:
        self.reads += 1
        return self.inner.read(raw)

    def keys(self, fields: Any) -> Any:
        return self.inner.keys(fields)


def scan(store: Store, emu: AcquireEmulator, mapping: CountingMapping) -> PullReport:
    connector = AcquireConnector(emu.connection_settings(options={"page_size": 4}), emu.transport())

    async def go() -> PullReport:
        try:
            return await pull_connection(store, CONN, connector, mapping)
        finally:
            await connector.aclose()

    return asyncio.run(go())


def staged_keys(store: Store) -> dict[str, set[tuple[str, str]]]:
    rr, ik = RemoteRecord.__table__.c, IdentityKey.__table__.c
    out: dict[str, set[tuple[str, str]]] = {}
    with store.session() as s:
        for remote_id in s.execute(select(rr.remote_id).where(rr.connection == CONN)).scalars():
            out[remote_id] = set()
        q = select(rr.remote_id, ik.kind, ik.value).join(RemoteRecord.__table__, ik.record_id == rr.id)
        for remote_id, kind, value in s.execute(q.where(rr.connection == CONN)):
            out[remote_id].add((kind, value))
    return out


def test_a_quiet_scan_reads_no_record_and_keeps_every_key(store: Store) -> None:
    emu = AcquireEmulator(clock=Clock(T0))
    ids = emu.seed(10)
    emu.seed_raw({"fields": {"name": "Odd Phone", "email": "odd@example.com", "phone": "12"}})  # an invalid value
    mapping = CountingMapping()

    first = scan(store, emu, mapping)
    assert (first.inserted, first.unchanged, mapping.reads) == (11, 0, 11)
    keys = staged_keys(store)
    assert all(keys[i] for i in ids)

    mapping.reads = 0
    quiet = scan(store, emu, mapping)
    assert (quiet.inserted, quiet.changed, quiet.unchanged, quiet.records) == (0, 0, 11, 11)
    assert mapping.reads == 0
    assert quiet.invalid_values == first.invalid_values >= 1  # counted from the staged rows
    assert quiet.complete and not quiet.deleted
    assert staged_keys(store) == keys


def test_a_scan_reads_only_what_changed_and_detects_deletions(store: Store) -> None:
    emu = AcquireEmulator(clock=Clock(T0))
    ids = emu.seed(9)
    mapping = CountingMapping()
    scan(store, emu, mapping)

    emu.clock.advance(60)
    emu.external_edit(ids[2], {"fields": {"email": "new.address@example.com"}})
    emu.state.delete(int(ids[5]))
    mapping.reads = 0
    report = scan(store, emu, mapping)
    assert (report.changed, report.unchanged, mapping.reads) == (1, 7, 1)
    assert report.deleted == [ids[5]]
    assert ("email", "new.address@example.com") in staged_keys(store)[ids[2]]


def test_a_row_changed_after_the_hashes_were_read_is_staged_with_its_keys(store: Store) -> None:
    # The pull believed the row unchanged (the hash it knew), but the stored row changed in
    # between: staging must read the keys after all rather than write the row without them.
    mapping = load_mapping("acquire")
    payload = {
        "id": 7,
        "archive": "no",
        "companyId": None,
        "dateCreated": "2026-03-01T09:00:00.000Z",
        "dateUpdated": "2026-03-01T09:00:00.000Z",
        "tags": [],
        "fields": {"name": "Ada Lovelace", "email": "ada@example.com", "phone": "+1 415 555 2671"},
    }
    record = RawRecord("7", payload, T0)
    older = RawRecord("7", {**payload, "fields": {"name": "Ada Lovelace", "email": "old@example.com"}}, T0)
    store.staging.stage_page(CONN, [stage_record(mapping, older)])

    probe = stage_record(mapping, record)
    result = store.staging.stage_page(CONN, [unread_record(mapping, record, probe.payload_hash)])
    assert result.changed == 1
    assert staged_keys(store)["7"] == {(k.kind, k.value) for k in probe.keys}
    assert ("email", "ada@example.com") in staged_keys(store)["7"]


def test_a_long_incremental_pull_skips_reading_unchanged_records_once_it_is_long(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A sorted scan normally returns only what changed; when it returns much (the first pull
    # after our own writes, here: a pull without a cursor over staged records), the staged
    # hashes are loaded after KNOWN_HASHES_AFTER records and the rest are not read.
    monkeypatch.setattr(stage, "KNOWN_HASHES_AFTER", 10)
    emu = Comm100Emulator(clock=Clock(T0))
    emu.seed(30)
    mapping = CountingMapping("comm100")

    def pull() -> PullReport:
        connector = Comm100Connector(emu.connection_settings(options={"page_size": 5}), emu.transport())

        async def go() -> PullReport:
            try:
                return await pull_connection(store, "c100", connector, mapping)
            finally:
                await connector.aclose()

        return asyncio.run(go())

    first = pull()
    assert (first.inserted, mapping.reads) == (30, 30)  # nothing staged yet: every record read
    with store.session() as s:
        s.execute(delete(Cursor.__table__).where(Cursor.__table__.c.connection == "c100"))
    mapping.reads = 0
    again = pull()
    assert (again.records, again.unchanged, again.changed) == (30, 30, 0)
    assert mapping.reads == 10
