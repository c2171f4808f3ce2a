"""The Acquire connector: a full scan of ``/crm/objects/contact`` plus writes and native merge.

Acquire has no change feed and no updated-since filter, so every pull lists everything, page by
page in id order, until a short page (:class:`~connectors.pulls.FullScanPull`). The last page of
a scan that ran start to finish in one pull, with a stable ``filteredCount``, is marked
``full_scan`` so the engine may detect deletions (and merges: a vanished contact whose keys now
sit on a survivor).

Settings: :class:`~connectors.acquire.settings.AcquireOptions` (``page_size``,
``read_ahead_pages``, ``default_region`` for matching looked-up phone numbers) and
:class:`~connectors.acquire.settings.AcquireCredentials` (``api_key``, sent as Bearer).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any, cast

import httpx
import structlog

from connectors.acquire.api import (
    CONTACTS,
    ERROR_RECORD_NOT_FOUND,
    FIELD_SHORTHANDS,
    FIRST_PAGE,
    READ_ONLY_KEYS,
    RELATIONS,
    contact_path,
    error_type,
    merge_path,
    parse_time,
)
from connectors.acquire.behaviours import PAGING_BASE, SEARCH
from connectors.acquire.settings import AcquireCredentials, AcquireOptions
from connectors.base import (
    Capabilities,
    NotFound,
    PullMode,
    RawRecord,
    RecordError,
    RemoteUnavailable,
    WriteResult,
)
from connectors.http import Action, FetchedPage, HttpConnector
from connectors.pulls import FullScanPull, decode_json, read_items, server_now
from sync.normalize import InvalidValue, normalize_email, normalize_phone

JSON = dict[str, Any]
log = structlog.get_logger("contactsync.acquire")

_RELATIONS = ",".join(RELATIONS)


def to_record(item: JSON) -> RawRecord:
    """A list/get item as a RawRecord (``remote_id`` is the integer id as a string)."""
    return RawRecord(
        remote_id=str(item["id"]),
        payload=item,
        updated_at=parse_time(item.get("dateUpdated")) or parse_time(item.get("dateCreated")),
    )


class AcquireConnector(FullScanPull, HttpConnector):
    """One Acquire account (``https://{account}.acquire.io/api/v1``)."""

    platform = "acquire"
    capabilities = Capabilities(
        pull_mode=PullMode.FULL_SCAN,
        can_merge=True,
        # Only ``fields`` is writable; tags have no documented write.
        updatable_fields=frozenset({"fields"}),
        lookup_keys=("email", "phone"),
        deletes_detectable=True,
        rate_limit=None,  # documented: "no API consumption limits"
    )
    options_model = AcquireOptions
    credentials_model = AcquireCredentials
    options: AcquireOptions

    def __init__(self, settings: Any, transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(settings, transport)
        self.page_size = self.options.page_size
        self.read_ahead_pages = max(0, self.options.read_ahead_pages)
        self.default_region = self.options.default_region
        # Measured behaviours (contactsync probe); an absent one is unknown.
        self.behaviours = dict(getattr(settings, "behaviours", None) or {})
        #: "zero" / "one" when measured; None: found out by the first page of each scan.
        self.paging_base: str | None = self.behaviours.get(PAGING_BASE)
        # The most records one page has held: a server that clamps ``limit`` (behaviour
        # acquire.max_limit) pages by its own size, and a page of that size is not the last.
        self._served = 0

    # ----------------------------------------------------------------- hooks

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret('api_key')}"}

    def classify(self, response: httpx.Response) -> Action | None:
        # Acquire spells "not found" as a 400 with type ERROR_RECORD_NOT_FOUND.
        if response.status_code == 400 and _error_type(response) == ERROR_RECORD_NOT_FOUND:
            return Action.NOT_FOUND
        return None

    def error_message(self, response: httpx.Response) -> str:
        try:
            body = response.json()
        except ValueError:
            return response.text[:200] or response.reason_phrase
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict):
            return f"{err.get('type', 'ERROR')}: {err.get('message', '')}".strip()
        return super().error_message(response)

    # ----------------------------------------------------------------- pull

    # FullScanPull owns the loop, the resume cursor and the stable-total check (``filteredCount``).
    # Tokens are the server's page numbers; None is the start of a scan, whose numbering
    # (behaviour acquire.paging_base: page 0 or page 1 first) is measured or found out there.
    first_page = None

    def page_after(self, token: Hashable, total: int | None) -> Hashable | None:
        # Pages are numbered, so the ones after the next can be requested before it arrives;
        # none past the last page the count promises (no wasted requests when nothing
        # changes; a count that grows is still followed page by page).
        if token is None:
            after = 1 if self.paging_base == "zero" else 2
        else:
            after = int(cast(int, token)) + 1
        size = self._served or self.page_size
        index = after if self.paging_base == "zero" else after - 1  # pages before it
        if total is None or index * size >= total:
            return None
        return after

    async def _list_page(self, page_no: int) -> tuple[list[Any], int | None, httpx.Response]:
        response = await self.http.request(
            "GET", CONTACTS, params={"limit": self.page_size, "page": page_no, "relations": _RELATIONS}
        )
        data = _data(decode_json(response, f"acquire GET {CONTACTS}"))
        items = data.get("list")
        if not isinstance(items, list):
            raise RemoteUnavailable("acquire GET /crm/objects/contact: response has no data.list")
        counts = data.get("counts")
        count = counts.get("filteredCount") if isinstance(counts, dict) else None
        self._served = max(self._served, len(items))
        return items, count if isinstance(count, int) else None, response

    def _more(self, items: list[Any], count: int | None, before: int) -> bool:
        """Whether a page of ``items`` (``before`` records listed ahead of it) has a successor:
        a full page (of the size asked for, or of the size the server clamps to)."""
        if not items:
            return False
        if len(items) >= self.page_size:
            return True
        if count is not None:
            return before + len(items) < count and len(items) >= self._served
        return False

    async def fetch_page(self, token: Hashable | None) -> FetchedPage:
        if token is not None:
            page_no = int(cast(int, token))
            items, count, response = await self._list_page(page_no)
            before = (page_no if self.paging_base == "zero" else page_no - 1) * (self._served or len(items))
            more = self._more(items, count, before)
            extra = {"total": count, "server_now": server_now(response)}
            return FetchedPage(read_items(items, to_record, id_types=(int,)), page_no + 1 if more else None, extra)
        if self.paging_base is not None:
            page_no = 0 if self.paging_base == "zero" else FIRST_PAGE
            items, count, response = await self._list_page(page_no)
            more = self._more(items, count, 0)
            extra = {"total": count, "server_now": server_now(response)}
            return FetchedPage(read_items(items, to_record, id_types=(int,)), page_no + 1 if more else None, extra)
        # Numbering unknown: page 0, then page 1. A server counting from 1 answers page 0 as
        # its first page too (or as nothing), so page 1 repeats it; one counting from 0 answers
        # the second page. Either way the scan goes on at page 2.
        first, count, response = await self._list_page(0)
        second: list[Any] = []
        if self._more(first, count, 0) or not first:
            second, count2, response = await self._list_page(1)
            count = count2 if count2 is not None else count
            if first and second and _item_id(first[0]) == _item_id(second[0]):
                second = []  # page 1 starts as page 0 did: pages count from 1
            elif not first:
                first, second = second, []
        items = [*first, *second]
        more = self._more(second, count, len(first)) if second else self._more(first, count, 0)
        extra = {"total": count, "server_now": server_now(response)}
        return FetchedPage(read_items(items, to_record, id_types=(int,)), 2 if more else None, extra)

    # ----------------------------------------------------------------- reads

    async def get(self, remote_id: str) -> RawRecord | None:
        if not remote_id.isdigit():
            return None
        try:
            body = await self.http.json("GET", contact_path(remote_id), params={"relations": _RELATIONS})
        except NotFound:
            return None
        return to_record(_data(body))

    async def lookup(self, keys: Mapping[str, str]) -> str | None:
        """Search (inferred: the ``search`` query parameter) and confirm each candidate by its
        normalized email/phone, including ``otherEmails``/``otherPhones``; the oldest match
        wins."""
        for kind in self.capabilities.lookup_keys:
            value = keys.get(kind)
            if not value:
                continue
            body = await self.http.json(
                "GET", CONTACTS, params={"search": value, "relations": "fields", "limit": self.page_size, "page": 1}
            )
            items = _data(body).get("list") or []
            matches = sorted(int(item["id"]) for item in items if self._holds(item, kind, value))
            if matches:
                return str(matches[0])
        if self.behaviours.get(SEARCH) != "substring":
            # What ``search`` matches is inferred (behaviour acquire.search): exact, or nothing
            # at all (everything listed, the match maybe past the first page). Unless it is
            # measured to match substrings, a lookup that found nothing reads the whole list
            # before saying so: a miss here means a duplicate create.
            return await self._scan_for(keys)
        return None

    async def _scan_for(self, keys: Mapping[str, str]) -> str | None:
        token: Hashable | None = None
        found: list[int] = []
        for _ in range(self._page_cap()):
            page = await self.fetch_page(token)
            for record in page.records:
                item = record.payload
                if isinstance(item, dict) and any(
                    keys.get(kind) and self._holds(item, kind, keys[kind]) for kind in self.capabilities.lookup_keys
                ):
                    found.append(int(record.remote_id))
            token = page.next_token
            if token is None:
                break
        return str(min(found)) if found else None

    def _holds(self, item: JSON, kind: str, value: str) -> bool:
        fields = item.get("fields") or {}
        if kind == "email":
            candidates = [fields.get("email"), *(fields.get("otherEmails") or [])]
            norm = _safe(normalize_email, value)
            return norm is not None and any(_safe(normalize_email, c) == norm for c in candidates if isinstance(c, str))
        if kind == "phone":
            candidates = [fields.get("phone"), *(fields.get("otherPhones") or [])]
            norm = _safe(normalize_phone, value, self.default_region)
            return norm is not None and any(
                _safe(normalize_phone, c, self.default_region) == norm for c in candidates if isinstance(c, str)
            )
        return False

    # ----------------------------------------------------------------- writes

    async def create(self, payload: JSON) -> WriteResult:
        body = {"fields": dict(_fields_of(payload))}

        async def send() -> WriteResult:
            resp = await self.http.json("POST", CONTACTS, json_body=body, idempotent=False)
            record = await self._full(_data(resp))
            return WriteResult(record.remote_id, record, created=True)

        async def recheck() -> WriteResult | None:
            keys = {}
            if body["fields"].get("email"):
                keys["email"] = str(body["fields"]["email"])
            if body["fields"].get("phone"):
                keys["phone"] = str(body["fields"]["phone"])
            found = await self.lookup(keys) if keys else None
            if found is None:
                return None
            record = await self.get(found)
            return WriteResult(found, record, created=True)

        return await self.http.write_once(send, recheck)

    async def update(self, remote_id: str, changes: JSON) -> WriteResult:
        """PUT only the changed ``fields`` keys (Acquire keeps the rest)."""
        if not remote_id.isdigit():
            raise NotFound(400, f"acquire: no contact {remote_id!r}")
        fields = _fields_of(changes)
        if not fields:
            record = await self.get(remote_id)
            if record is None:
                raise NotFound(400, f"acquire: no contact {remote_id}")
            return WriteResult(remote_id, record)
        resp = await self.http.json("PUT", contact_path(remote_id), json_body={"fields": fields})
        record = await self._full(_data(resp))
        return WriteResult(remote_id, record)

    async def delete(self, remote_id: str) -> None:
        if not remote_id.isdigit():
            raise NotFound(400, f"acquire: no contact {remote_id!r}")
        await self.http.json("DELETE", contact_path(remote_id))

    async def merge(self, survivor_id: str, loser_ids: list[str]) -> WriteResult:
        """Native merge: the survivor keeps its own email/phone and gains the losers'
        differing ones in ``otherEmails``/``otherPhones``; the losers disappear."""
        for rid in (survivor_id, *loser_ids):
            if not rid.isdigit():
                raise NotFound(400, f"acquire: no contact {rid!r}")
        body = {"sourceIds": [int(i) for i in loser_ids]}

        async def send() -> WriteResult:
            resp = await self.http.json("POST", merge_path(survivor_id), json_body=body, idempotent=False)
            data = _data(resp)
            record = await self._full(data) if data.get("id") is not None else await self.get(survivor_id)
            return WriteResult(survivor_id, record)

        async def recheck() -> WriteResult | None:
            # Landed when every loser is gone and the survivor is still there.
            for rid in loser_ids:
                if await self.get(rid) is not None:
                    return None
            survivor = await self.get(survivor_id)
            return WriteResult(survivor_id, survivor) if survivor is not None else None

        return await self.http.write_once(send, recheck)

    async def _full(self, item: JSON) -> RawRecord:
        """A write response as a full record; fetched again when it lacks a relation."""
        if "fields" in item and "tags" in item:
            return to_record(item)
        record = await self.get(str(item["id"]))
        if record is None:
            raise NotFound(400, f"acquire: contact {item['id']} vanished after a write")
        return record


def _item_id(item: Any) -> Any:
    return item.get("id") if isinstance(item, dict) else None


def _data(body: Any) -> JSON:
    if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
        raise RemoteUnavailable("acquire: response has no data object")
    return body["data"]


def _error_type(response: httpx.Response) -> str | None:
    try:
        return error_type(response.json())
    except ValueError:
        return None


def _fields_of(payload: Mapping[str, Any]) -> JSON:
    """The ``fields`` to send: the payload's ``fields`` plus top-level name/email/phone
    shorthands. Other top-level keys (tags, ids, timestamps) are not writable."""
    fields: JSON = {}
    for key in FIELD_SHORTHANDS:
        if key in payload:
            fields[key] = payload[key]
    nested = payload.get("fields") or {}
    if not isinstance(nested, Mapping):
        raise RecordError(400, "acquire: payload fields must be an object")
    fields.update(nested)
    dropped = sorted(set(payload) - {"fields", *FIELD_SHORTHANDS} - READ_ONLY_KEYS)
    if dropped:
        log.warning("acquire.unwritable_keys", keys=dropped)
    return fields


def _safe(fn: Any, *args: Any) -> str | None:
    try:
        return fn(*args)
    except InvalidValue:
        return None
