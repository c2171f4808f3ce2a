"""Hostile listings at the connector level (issue 14 C/D): ids are never conflated, items a
parser refuses become quarantine candidates, an endless paginator stops at the page cap, a
future stamp is flagged against the server's Date."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from connectors.base import PaginationError, RawRecord
from connectors.http import FetchedPage, paginate
from connectors.pulls import FutureRecord, PullKind, UnreadableRecord, check_id, read_items, server_now


@pytest.mark.parametrize(
    ("value", "types", "ok"),
    [
        (7, (int,), "7"),
        ("7", (int,), None),
        (7.0, (int,), None),
        (None, (int,), None),
        (True, (int,), None),
        ("abc", (str,), "abc"),
        (7, (str,), None),
        ("", (str,), None),
        ("a\x00b", (str,), None),
        ("x" * 129, (str,), None),
        ({"id": 1}, (str,), None),
    ],
)
def test_ids_are_never_conflated(value: object, types: tuple[type, ...], ok: str | None) -> None:
    if ok is None:
        with pytest.raises(ValueError):
            check_id(value, types)
    else:
        assert check_id(value, types) == ok


def test_read_items_keeps_the_page_going() -> None:
    def to_record(item: dict[str, object]) -> RawRecord:
        if item.get("bad"):
            raise KeyError("dateUpdated")
        return RawRecord(str(item["id"]), item)

    records = read_items(
        [{"id": 1}, "junk", {"id": 2.0}, {"id": 3, "bad": True}, {"id": 4}], to_record, id_types=(int,)
    )
    assert [type(r) for r in records] == [RawRecord, UnreadableRecord, UnreadableRecord, UnreadableRecord, RawRecord]
    assert [r.remote_id for r in records] == ["1", "", "", "3", "4"]
    assert "not an object" in records[1].reason and "float" in records[2].reason  # type: ignore[attr-defined]


def test_an_endless_paginator_stops_at_the_cap() -> None:
    async def fetch(token: Hashable | None) -> FetchedPage:
        n = int(token or 0)  # type: ignore[call-overload]
        return FetchedPage([RawRecord(str(n), {"n": n})], n + 1)

    async def run() -> int:
        pages = 0
        async for _ in paginate(fetch, name="endless", max_pages=50):
            pages += 1
        return pages

    with pytest.raises(PaginationError, match="cap of 50 pages"):
        asyncio.run(run())


def test_the_server_date_bounds_what_is_believed() -> None:
    response = httpx.Response(200, headers={"Date": "Mon, 01 Jan 2024 00:00:00 GMT"})
    now = server_now(response)
    assert now == datetime(2024, 1, 1, tzinfo=UTC)
    assert server_now(httpx.Response(200)) is None

    class Kind(PullKind):
        platform = "t"

        async def pull(self, cursor):  # type: ignore[no-untyped-def, override]
            yield  # pragma: no cover

        async def get(self, remote_id):  # type: ignore[no-untyped-def, override]
            return None  # pragma: no cover

    kind = Kind.__new__(Kind)
    honest = RawRecord("1", {}, updated_at=now + timedelta(minutes=4))
    future = RawRecord("2", {}, updated_at=now + timedelta(minutes=6))
    page = kind._screen(FetchedPage([honest, future], None, {"server_now": now}))
    assert page.records[0] is honest
    assert isinstance(page.records[1], FutureRecord) and page.records[1].updated_at is None
