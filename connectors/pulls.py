"""The pull kinds, as base classes: each owns the loop, the cursor, the completeness rule and
the stable-total check of one way of finding a platform's changes, so a connector only
declares which kind it is and fills small hooks (the Singer SDK ``RESTStream`` habit):

* :class:`FullScanPull` (Acquire): list everything, page by page. The cursor remembers only
  where an interrupted scan stopped; a scan that ran start to finish in one pull with a stable
  total is a full scan (deletion detection allowed).
* :class:`SortedScanPull` (Comm100): list newest-first, stop at the first record older than the
  cursor minus the overlap window. The cursor moves only on the last page.
* :class:`ChangeFeedPull` (GoHighLevel): the server filters by updated-at; the cursor is the
  newest updated-at yielded, and never moves backwards. Never a full scan.
* :class:`LookupOnlyPull` (DM Champ): nothing to list; a pull yields nothing.

Hooks are ``fetch_page(token) -> FetchedPage`` (one request; ``FetchedPage.extra["total"]`` is
the platform's count of the listing when it gives one) plus a few per kind. The kind's
``pull_mode`` must be the ``Capabilities.pull_mode`` the connector declares (the engine reads
that).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import structlog

from connectors.base import Connector, Page, PullMode, RawRecord
from connectors.http import FetchedPage, paginate

JSON = dict[str, Any]
log = structlog.get_logger("contactsync.pulls")


class StableTotal:
    """The stable-total check: a scan proves which records exist only when the platform
    reported one total throughout and exactly that many distinct records came back (offset
    paging shifts under concurrent creates and deletes and could skip a row)."""

    def __init__(self) -> None:
        self.totals: set[int] = set()
        self.seen: set[str] = set()

    def page(self, page: FetchedPage) -> None:
        """Count a page's reported total (``extra["total"]``, when an int)."""
        total = page.extra.get("total")
        if isinstance(total, int):
            self.totals.add(total)

    def record(self, record: RawRecord) -> None:
        self.seen.add(record.remote_id)

    @property
    def stable(self) -> bool:
        return len(self.totals) == 1 and next(iter(self.totals)) == len(self.seen)


class PullKind(Connector):
    """Base of the pull kinds: the hook every listing kind needs."""

    pull_mode: ClassVar[PullMode]
    #: The name the paginator reports loops under.
    listing_name: ClassVar[str] = "contacts"

    async def fetch_page(self, token: Hashable | None) -> FetchedPage:
        """One page of the listing (``token`` None: the first page)."""
        raise NotImplementedError(f"{self.platform}: fetch_page")


class FullScanPull(PullKind):
    """List everything every time. Hooks: :meth:`fetch_page`, ``first_page`` (the token of
    the first page), and optionally :meth:`page_after` / ``read_ahead_pages`` to request pages
    ahead while one is staged (where page tokens are predictable, such as page numbers)."""

    pull_mode = PullMode.FULL_SCAN
    first_page: ClassVar[Any] = None
    read_ahead_pages: int = 0

    def page_after(self, token: Hashable, total: int | None) -> Hashable | None:
        """The token expected after ``token``, predicted before it arrives, given the latest
        total the platform reported (None: no page expected, or not predictable)."""
        return None

    async def pull(self, cursor: JSON | None) -> AsyncIterator[Page]:
        """Scan every record. The cursor only remembers where an interrupted scan stopped
        (``next_page``); a resumed scan is not a full scan (it spans runs), so it never allows
        deletion detection."""
        start: Hashable | None = self.first_page
        resumed = False
        if cursor and cursor.get("next_page"):
            start = cursor["next_page"]
            resumed = start != self.first_page
        check = StableTotal()
        latest: list[int] = []  # the latest total reported by any fetch, read-ahead ones included

        async def fetch(token: Hashable | None) -> FetchedPage:
            page = await self.fetch_page(token)
            total = page.extra.get("total")
            if isinstance(total, int):
                latest[:] = [total]
            return page

        def successor(token: Hashable) -> Hashable | None:
            return self.page_after(token, latest[-1] if latest else None)

        pages = paginate(
            fetch,
            name=f"{self.platform} {self.listing_name}",
            start=start,
            read_ahead=self.read_ahead_pages,
            successor=successor,
        )
        try:
            async for _token, page in pages:
                check.page(page)
                for record in page.records:
                    check.record(record)
                if page.next_token is not None:
                    yield Page(page.records, {"next_page": page.next_token})
                    continue
                full = not resumed and check.stable
                if not full and not resumed:
                    log.info(
                        f"{self.platform}.scan_unstable",
                        connection=self.settings.name,  # type: ignore[attr-defined]
                        counts=sorted(check.totals),
                        seen=len(check.seen),
                    )
                yield Page(
                    page.records,
                    {"next_page": None, "completed_at": datetime.now(UTC).isoformat()},
                    complete=True,
                    full_scan=full,
                )
        finally:
            await pages.aclose()


class _SinceCursor(PullKind):
    """Shared by the kinds whose cursor is the newest updated-at seen: hooks
    ``cursor_key``, ``overlap_seconds`` (from the capabilities) and :meth:`format_time`."""

    cursor_key: ClassVar[str] = "since"

    def format_time(self, moment: datetime) -> str:
        return moment.astimezone(UTC).isoformat()

    def parse_cursor_time(self, value: Any) -> datetime | None:
        raise NotImplementedError

    def _since(self, cursor: JSON | None) -> datetime | None:
        return self.parse_cursor_time((cursor or {}).get(self.cursor_key))

    def _floor(self, since: datetime | None) -> datetime | None:
        return since - timedelta(seconds=self.capabilities.overlap_seconds) if since else None

    @staticmethod
    def _newest(high: datetime | None, record: RawRecord) -> datetime | None:
        if record.updated_at is not None and (high is None or record.updated_at > high):
            return record.updated_at
        return high


class SortedScanPull(_SinceCursor):
    """List newest-first and stop at the first record older than the cursor minus the
    overlap window. Every page but the last carries the old cursor (with newest-first order,
    that is every earlier page's safe resume point); the last carries the newest updated-at
    seen. A pull that started without a cursor and ran to the end with a stable total is a
    full scan. Hooks: :meth:`fetch_page`, :meth:`parse_cursor_time`."""

    pull_mode = PullMode.SORTED_SCAN

    async def pull(self, cursor: JSON | None) -> AsyncIterator[Page]:
        since = self._since(cursor)
        floor = self._floor(since)
        old_cursor: JSON = {self.cursor_key: self.format_time(since) if since else None}
        high = since
        check = StableTotal()
        pages = paginate(self.fetch_page, name=f"{self.platform} {self.listing_name}")
        try:
            async for _token, page in pages:
                check.page(page)
                keep: list[RawRecord] = []
                stopped = False
                for record in page.records:
                    if floor is not None and record.updated_at is not None and record.updated_at < floor:
                        stopped = True
                        break
                    keep.append(record)
                    check.record(record)
                    high = self._newest(high, record)
                if not stopped and page.next_token is not None:
                    yield Page(keep, dict(old_cursor))
                    continue
                yield Page(
                    keep,
                    {self.cursor_key: self.format_time(high)} if high else dict(old_cursor),
                    complete=True,
                    full_scan=since is None and not stopped and check.stable,
                )
                return
        finally:
            await pages.aclose()


class ChangeFeedPull(_SinceCursor):
    """The server lists what changed since a moment (closed range, from the cursor minus the
    overlap window, oldest first). Each page's cursor is the newest updated-at yielded so far;
    the last page is complete; never a full scan (a change feed cannot prove a record gone).
    Hooks: :meth:`change_fetcher`, :meth:`parse_cursor_time`."""

    pull_mode = PullMode.CHANGE_FEED

    def change_fetcher(self, start: datetime | None) -> Callable[[Hashable | None], Awaitable[FetchedPage]]:
        """The page fetch of one pull of the records changed at or after ``start`` (None:
        everything); a closure, so it may keep state across the pages of that pull."""
        raise NotImplementedError(f"{self.platform}: change_fetcher")

    async def pull(self, cursor: JSON | None) -> AsyncIterator[Page]:
        since = self._since(cursor)
        high = since
        fetch = self.change_fetcher(self._floor(since))
        name = f"{self.platform}:{self.settings.name} {self.listing_name}"  # type: ignore[attr-defined]
        async for _token, page in paginate(fetch, name=name):
            for record in page.records:
                high = self._newest(high, record)
            yield Page(
                records=page.records,
                cursor={self.cursor_key: self.format_time(high)} if high else {},
                complete=page.next_token is None,
                full_scan=False,
            )


class LookupOnlyPull(PullKind):
    """No listing at all (DM Champ): records are found by lookup; a pull yields nothing."""

    pull_mode = PullMode.LOOKUP_ONLY

    async def pull(self, cursor: JSON | None) -> AsyncIterator[Page]:
        return
        yield  # an async generator that yields nothing
