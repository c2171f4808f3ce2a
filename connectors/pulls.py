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

import email.utils
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import httpx
import structlog

from connectors.base import Connector, ConnectorError, Page, PullMode, RawRecord
from connectors.http import FetchedPage, paginate

JSON = dict[str, Any]
log = structlog.get_logger("contactsync.pulls")

#: How far past the server's "now" a record's updated time may be before it is not believed:
#: such a record is staged but flagged, and never moves a cursor (docs/decisions.md).
DEFAULT_CLOCK_SKEW_S = 300.0
#: The longest remote id kept (the store's column); a longer one is quarantined.
MAX_ID_LENGTH = 128
_ID_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class UnreadablePage(ConnectorError):
    """A listing page that could not be read at all (not JSON, nested too deep, a shape that is
    not the documented list): that connection's pull fails; the others go on."""


@dataclass
class UnreadableRecord(RawRecord):
    """An item of a listing that could not be read (no usable id, not an object, a value its
    parser refuses): staged as a quarantine row with ``reason``, never as a record.
    ``remote_id`` is "" when the id itself is the problem."""

    reason: str = ""


@dataclass
class FutureRecord(RawRecord):
    """A record whose updated time lies past the server's now plus the allowed skew: staged
    (its values are real) but flagged, with ``updated_at`` cleared so it neither moves a
    cursor nor wins a "newest" conflict; ``stamped`` is the time it claimed."""

    stamped: datetime | None = None
    limit: datetime | None = None


def check_id(value: Any, id_types: tuple[type, ...]) -> str:
    """The remote id of a listed item as the store keeps it, or ValueError saying why it is not
    usable. Ids are never conflated: ``7``, ``"7"``, ``7.0`` and null are different things, so
    only the platform's own id type is accepted (integers for Acquire, strings elsewhere); a
    float, a bool, null or a container is refused, as is an empty or over-long string or one
    with control characters."""
    if value is None:
        raise ValueError("the item has no id")
    if isinstance(value, bool) or not isinstance(value, id_types):
        kinds = " or ".join("an integer" if t is int else "a string" for t in id_types)
        raise ValueError(f"id {_short(value)} is a {type(value).__name__}, expected {kinds}")
    text = str(value)
    if not text.strip() or len(text) > MAX_ID_LENGTH or _ID_CONTROL.search(text):
        raise ValueError(f"id {_short(value)} is not usable (1..{MAX_ID_LENGTH} printable characters)")
    return text


def _short(value: Any, limit: int = 60) -> str:
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a repr of a hostile value (deep nesting) can fail too
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit] + "..."


def read_items(
    items: list[Any], to_record: Callable[[Any], RawRecord], *, id_types: tuple[type, ...] = (str,)
) -> list[RawRecord]:
    """A listing's items as records, one at a time: an item that is not an object, has no
    usable id (see :func:`check_id`) or that ``to_record`` refuses becomes an
    :class:`UnreadableRecord` with the reason, and the rest of the page goes on."""
    out: list[RawRecord] = []
    for item in items:
        remote_id = ""
        try:
            if not isinstance(item, dict):
                raise ValueError(f"item is a {type(item).__name__}, not an object")
            remote_id = check_id(item.get("id"), id_types)
            record = to_record(item)
            record.remote_id = remote_id
            out.append(record)
        except Exception as exc:  # noqa: BLE001 - one malformed item never stops the page
            out.append(UnreadableRecord(remote_id, item, reason=f"{type(exc).__name__}: {exc}"))
    return out


def server_now(response: httpx.Response) -> datetime | None:
    """The server's clock from a response's ``Date`` header (None when absent or unreadable)."""
    header = response.headers.get("date")
    if not header:
        return None
    try:
        moment = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def decode_json(response: httpx.Response, where: str) -> Any:
    """A list response's body: UnreadablePage when it is not JSON, nests deeper than Python
    can parse, or holds NaN/Infinity outside any record."""
    try:
        return json.loads(response.content) if response.content else None
    except (ValueError, RecursionError) as exc:
        raise UnreadablePage(f"{where}: response body cannot be read ({type(exc).__name__})") from None


class StableTotal:
    """The stable-total check: a scan proves which records exist only when the platform
    reported one total throughout and exactly that many distinct records came back (offset
    paging shifts under concurrent creates and deletes and could skip a row)."""

    def __init__(self) -> None:
        self.totals: set[int] = set()
        self.seen: set[str] = set()
        self.unidentified = 0

    def page(self, page: FetchedPage) -> None:
        """Count a page's reported total (``extra["total"]``, when an int)."""
        total = page.extra.get("total")
        if isinstance(total, int):
            self.totals.add(total)

    def record(self, record: RawRecord) -> None:
        if not record.remote_id:
            # An item without a usable id: the scan cannot say which stored record it is, so
            # it proves nothing about deletions.
            self.unidentified += 1
            return
        self.seen.add(record.remote_id)

    @property
    def stable(self) -> bool:
        return not self.unidentified and len(self.totals) == 1 and next(iter(self.totals)) == len(self.seen)


class PullKind(Connector):
    """Base of the pull kinds: the hook every listing kind needs."""

    pull_mode: ClassVar[PullMode]
    #: The name the paginator reports loops under.
    listing_name: ClassVar[str] = "contacts"
    #: Seconds a record's updated time may lie past the server's now (clock skew) before it is
    #: flagged as stamped in the future, when the connector has no option ``clock_skew_s``.
    clock_skew_s: float = DEFAULT_CLOCK_SKEW_S
    #: Pages one pull follows at most before failing (an endless paginator), when the connector
    #: has no option ``max_pages``.
    max_pages: int = 10_000

    async def fetch_page(self, token: Hashable | None) -> FetchedPage:
        """One page of the listing (``token`` None: the first page)."""
        raise NotImplementedError(f"{self.platform}: fetch_page")

    def _skew(self) -> timedelta:
        skew = getattr(getattr(self, "options", None), "clock_skew_s", None)
        return timedelta(seconds=float(skew if skew is not None else self.clock_skew_s))

    def _page_cap(self) -> int:
        cap = getattr(getattr(self, "options", None), "max_pages", None)
        return int(cap) if cap else self.max_pages

    def time_limit(self, page: FetchedPage | None = None) -> datetime:
        """The latest updated time believed: the server's now (the list response's ``Date``,
        in ``extra["server_now"]``, else the local clock) plus the allowed skew."""
        now = page.extra.get("server_now") if page is not None else None
        if not isinstance(now, datetime):
            now = datetime.now(UTC)
        return now + self._skew()

    def _screen(self, page: FetchedPage) -> FetchedPage:
        """Flag the page's records stamped past :meth:`time_limit` (see :class:`FutureRecord`)."""
        limit = self.time_limit(page)
        for i, record in enumerate(page.records):
            if record.updated_at is not None and record.updated_at > limit and not isinstance(record, UnreadableRecord):
                page.records[i] = FutureRecord(
                    record.remote_id,
                    record.payload,
                    None,
                    record.merged_into,
                    record.deleted,
                    stamped=record.updated_at,
                    limit=limit,
                )
                log.warning(
                    f"{self.platform}.future_timestamp",
                    connection=getattr(getattr(self, "settings", None), "name", None),
                    remote_id=record.remote_id,
                    stamped=record.updated_at.isoformat(),
                )
        return page

    def _checked(
        self, fetch: Callable[[Hashable | None], Awaitable[FetchedPage]]
    ) -> Callable[[Hashable | None], Awaitable[FetchedPage]]:
        """``fetch`` whose failures are all ConnectorErrors (a page that cannot be read fails
        this connection's pull only) and whose future-stamped records are flagged."""

        async def checked(token: Hashable | None) -> FetchedPage:
            try:
                page = await fetch(token)
            except ConnectorError:
                raise
            except (ValueError, TypeError, KeyError, AttributeError, IndexError, RecursionError) as exc:
                raise UnreadablePage(
                    f"{self.platform} {self.listing_name}: page cannot be read: {type(exc).__name__}: {_short(str(exc), 200)}"
                ) from None
            return self._screen(page)

        return checked


def _total(page: FetchedPage) -> int | None:
    """The record count a page reports for its whole listing (``extra["total"]``), if any."""
    total = page.extra.get("total")
    return total if isinstance(total, int) and not isinstance(total, bool) else None


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

        fetch_page = self._checked(self.fetch_page)

        async def fetch(token: Hashable | None) -> FetchedPage:
            page = await fetch_page(token)
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
            max_pages=self._page_cap(),
        )
        try:
            async for _token, page in pages:
                check.page(page)
                for record in page.records:
                    check.record(record)
                total = latest[-1] if latest else None
                if page.next_token is not None:
                    yield Page(page.records, {"next_page": page.next_token}, total=total)
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
                    total=total,
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
        """The stored cursor's time; a cursor past the local now plus skew (frozen in the future
        by a release that believed a future stamp) is dropped: the pull starts over from the
        beginning, since which honest edits it hid is unknown."""
        since = self.parse_cursor_time((cursor or {}).get(self.cursor_key))
        limit = self.time_limit()
        if since is not None and since > limit:
            log.warning(
                f"{self.platform}.cursor_in_future",
                connection=getattr(getattr(self, "settings", None), "name", None),
                cursor=since.isoformat(),
            )
            return None
        return since

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
        """The order is inferred (Comm100 documents no sorting), so it is verified page by page
        before the pull stops on it: a record newer than the one before it (on its page or the
        page before), or a page the connector flags (``extra["unordered"]``: the server pages
        its own way, or a probe measured the order ignored), turns the pull into a complete
        scan of the listing, with a warning. Nothing is skipped on a reading that did not hold."""
        since = self._since(cursor)
        floor = self._floor(since)
        old_cursor: JSON = {self.cursor_key: self.format_time(since) if since else None}
        high = since
        check = StableTotal()
        unordered: str | None = None
        last: datetime | None = None  # the updated time of the previous record listed
        pages = paginate(
            self._checked(self.fetch_page), name=f"{self.platform} {self.listing_name}", max_pages=self._page_cap()
        )
        try:
            async for _token, page in pages:
                check.page(page)
                if unordered is None:
                    unordered, last = self._order_broken(page, last)
                    if unordered is not None and floor is not None:
                        log.warning(
                            f"{self.platform}.order_not_held",
                            connection=getattr(getattr(self, "settings", None), "name", None),
                            reason=unordered,
                            action="complete scan",
                        )
                keep: list[RawRecord] = []
                stopped = False
                for record in page.records:
                    if (
                        unordered is None
                        and floor is not None
                        and record.updated_at is not None
                        and record.updated_at < floor
                    ):
                        stopped = True
                        break
                    keep.append(record)
                    check.record(record)
                    high = self._newest(high, record)
                total = _total(page)
                if not stopped and page.next_token is not None:
                    yield Page(keep, dict(old_cursor), total=total)
                    continue
                yield Page(
                    keep,
                    {self.cursor_key: self.format_time(high)} if high else dict(old_cursor),
                    complete=True,
                    full_scan=(since is None or unordered is not None) and not stopped and check.stable,
                    total=total,
                    caught_up=stopped,
                )
                return
        finally:
            await pages.aclose()

    @staticmethod
    def _order_broken(page: FetchedPage, last: datetime | None) -> tuple[str | None, datetime | None]:
        """Why ``page`` shows the listing is not newest-first (None: it holds so far), and the
        updated time of its last record."""
        flagged = page.extra.get("unordered")
        if flagged:
            return str(flagged), last
        for record in page.records:
            if record.updated_at is None or isinstance(record, UnreadableRecord):
                continue
            if last is not None and record.updated_at > last:
                return (
                    f"record {record.remote_id} ({record.updated_at.isoformat()}) listed after one "
                    f"updated {last.isoformat()}: the list is not newest-first"
                ), last
            last = record.updated_at
        return None, last


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
        fetch = self._checked(self.change_fetcher(self._floor(since)))
        name = f"{self.platform}:{self.settings.name} {self.listing_name}"  # type: ignore[attr-defined]
        async for _token, page in paginate(fetch, name=name, max_pages=self._page_cap()):
            for record in page.records:
                high = self._newest(high, record)
            yield Page(
                records=page.records,
                cursor={self.cursor_key: self.format_time(high)} if high else {},
                complete=page.next_token is None,
                full_scan=False,
                total=_total(page),
            )


class LookupOnlyPull(PullKind):
    """No listing at all (DM Champ): records are found by lookup; a pull yields nothing."""

    pull_mode = PullMode.LOOKUP_ONLY

    async def pull(self, cursor: JSON | None) -> AsyncIterator[Page]:
        return
        yield  # an async generator that yields nothing
