"""The GoHighLevel connector (LeadConnector API v2, contacts).

* Pull: a change feed. ``POST /contacts/search`` with a ``dateUpdated`` range (``gte`` the
  cursor minus an overlap window, because search is eventually consistent and changes become
  visible out of order), sorted by ``dateUpdated`` ascending, paged with ``searchAfter``. The
  cursor is ``{"date_updated": <max dateUpdated yielded>}``; it never moves backwards.
* Writes: create (at most once: a create that may have landed is settled by a duplicate lookup
  before it is sent again; a create refused as a duplicate links the existing contact), update
  of only the given keys (``tags`` are never sent on update: a ``tags`` change becomes add/remove
  calls), delete (already gone counts as done), tags via ``POST|DELETE /contacts/{id}/tags``,
  upsert, lookup via ``GET /contacts/search/duplicate``. No native merge.
* Deletions are not detected from pulls: search is eventually consistent, so a record missing
  from a search may simply not be indexed yet (``deletes_detectable=False``); ``get`` confirms.

Settings: :class:`~connectors.gohighlevel.settings.GoHighLevelOptions` (``location_id``
required, ``version``, ``page_size``, ``overlap_seconds``, ``custom_field_ids``) and
:class:`~connectors.gohighlevel.settings.GoHighLevelCredentials` (``token``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Hashable, Mapping
from datetime import datetime
from typing import Any

import httpx

from connectors.base import (
    Capabilities,
    ConnectionSettings,
    NotFound,
    PullMode,
    RawRecord,
    RecordError,
    WriteResult,
)
from connectors.gohighlevel.api import (
    CREATE,
    CREATE_FIELDS,
    DEFAULT_OVERLAP_SECONDS,
    DUPLICATE,
    MAX_PAGE_LIMIT,
    RATE_LIMIT,
    READ_ONLY_FIELDS,
    SEARCH,
    UPDATE_FIELDS,
    UPSERT,
    UPSERT_FIELDS,
    contact_path,
    tags_path,
)
from connectors.gohighlevel.settings import GoHighLevelCredentials, GoHighLevelOptions
from connectors.http import Action, FetchedPage, HttpConnector
from connectors.pulls import ChangeFeedPull, UnreadablePage, UnreadableRecord, decode_json, read_items, server_now
from connectors.timestamps import iso_ms, parse_iso

JSON = dict[str, Any]


class GoHighLevelConnector(ChangeFeedPull, HttpConnector):
    """One GoHighLevel location (sub-account)."""

    platform = "gohighlevel"
    options_model = GoHighLevelOptions
    credentials_model = GoHighLevelCredentials
    options: GoHighLevelOptions
    capabilities = Capabilities(
        pull_mode=PullMode.CHANGE_FEED,
        can_create=True,
        can_update=True,
        can_delete=True,
        can_merge=False,
        can_upsert=True,
        tags_via_endpoint=True,
        updatable_fields=UPDATE_FIELDS - {"tags"},
        lookup_keys=("email", "phone"),
        deletes_detectable=False,
        listing_current=False,
        rate_limit=RATE_LIMIT,
        overlap_seconds=DEFAULT_OVERLAP_SECONDS,
    )

    def __init__(self, settings: ConnectionSettings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(settings, transport)
        opts = self.options
        self.location_id = opts.location_id
        self.version = opts.version
        self.page_size = min(opts.page_size, MAX_PAGE_LIMIT)
        # Custom field key -> id of the location: written items then carry the id the spec
        # requires (an item with only a key is sent as is, which GoHighLevel also accepts).
        self.custom_field_ids: dict[str, str] = dict(opts.custom_field_ids)
        self.capabilities = dataclasses.replace(type(self).capabilities, overlap_seconds=opts.overlap_seconds)

    # -- hooks

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret('token')}", "Version": self.version}

    def classify(self, response: httpx.Response) -> Action | None:
        # The spec lists no 404 for contact routes: a missing contact is a 400 "not found".
        if response.status_code == 400 and "not found" in self.error_message(response).lower():
            return Action.NOT_FOUND
        return None

    def error_message(self, response: httpx.Response) -> str:
        try:
            body = response.json()
        except ValueError:
            return super().error_message(response)
        message = body.get("message") if isinstance(body, dict) else None
        if isinstance(message, list):  # 422: a list of messages
            return "; ".join(str(m) for m in message)
        return str(message) if message else super().error_message(response)

    # -- reading

    def _record(self, contact: JSON) -> RawRecord:
        payload = {k: v for k, v in contact.items() if k != "searchAfter"}
        updated = payload.get("dateUpdated") or payload.get("dateAdded")
        return RawRecord(
            remote_id=str(payload["id"]),
            payload=payload,
            updated_at=parse_iso(updated) if updated else None,
        )

    # ChangeFeedPull owns the loop and the cursor ``{"date_updated": <max dateUpdated yielded>}``.
    cursor_key = "date_updated"
    listing_name = "search"

    def format_time(self, moment: datetime) -> str:
        return iso_ms(moment)

    def parse_cursor_time(self, value: Any) -> datetime | None:
        return parse_iso(value) if value else None

    def change_fetcher(self, start: datetime | None) -> Callable[[Hashable | None], Awaitable[FetchedPage]]:
        """Search sorted by ``dateUpdated`` ascending, ``gte`` the range start, paged with
        ``searchAfter``."""
        base: JSON = {
            "locationId": self.location_id,
            "pageLimit": self.page_size,
            "sort": [{"field": "dateUpdated", "direction": "asc"}],
        }
        if start is not None:
            base["filters"] = [{"field": "dateUpdated", "operator": "range", "value": {"gte": iso_ms(start)}}]
        seen_ids: set[str] = set()

        async def fetch(token: Hashable | None) -> FetchedPage:
            body = dict(base)
            if token is not None:
                body["searchAfter"] = list(token)  # type: ignore[call-overload]
            response = await self.http.request("POST", SEARCH, json_body=body)
            data = decode_json(response, f"{self.platform} POST {SEARCH}")
            contacts = _contacts_of(data)
            records = read_items(contacts, self._record, id_types=(str,))
            seen_ids.update(r.remote_id for r in records if r.remote_id)
            total = data.get("total")
            # Stop on a short page, or once every match the search counts has been seen
            # (saves the empty request after a full last page).
            done = isinstance(total, int) and not isinstance(total, bool) and len(seen_ids) >= total
            next_token = None
            if len(contacts) >= self.page_size and not done:
                next_token = _search_after(contacts[-1], records)
            return FetchedPage(records, next_token, {"server_now": server_now(response)})

        return fetch

    async def get(self, remote_id: str) -> RawRecord | None:
        try:
            data = await self.http.json("GET", contact_path(remote_id))
        except NotFound:
            return None
        return self._record(data["contact"])

    # An idempotency marker for creates that carry no email or phone (a chat identity only):
    # the engine sets ``source`` to it on create and finds the contact again by searching on
    # it after a lost response. ``source`` is stored and returned by the API; filtering the
    # search on it is inferred (the spec's filters name no field list) - keep it a switch.
    marker_field = "source"

    async def lookup_marker(self, marker: str) -> str | None:
        """The contact whose ``source`` is ``marker``; None when there is none."""
        body = {
            "locationId": self.location_id,
            "pageLimit": 1,
            "filters": [{"field": self.marker_field, "operator": "eq", "value": marker}],
        }
        data = await self.http.json("POST", "/contacts/search", json_body=body)
        contacts = (data or {}).get("contacts") or []
        return str(contacts[0]["id"]) if contacts else None

    async def lookup(self, keys: Mapping[str, str]) -> str | None:
        found = await self._lookup_contact(keys)
        return str(found["id"]) if found else None

    async def _lookup_contact(self, keys: Mapping[str, str]) -> JSON | None:
        for key in self.capabilities.lookup_keys:
            value = keys.get(key)
            if not value:
                continue
            param = "number" if key == "phone" else "email"
            data = await self.http.json("GET", DUPLICATE, params={"locationId": self.location_id, param: value})
            contact = (data or {}).get("contact")
            if contact:
                return contact
        return None

    # -- writing

    def _write_body(self, payload: JSON, allowed: frozenset[str]) -> JSON:
        body = {k: v for k, v in payload.items() if k in allowed and v is not None}
        if "customFields" in body:
            body["customFields"] = [self._custom_item(item) for item in body["customFields"]]
        return body

    def _custom_item(self, item: JSON) -> JSON:
        item = dict(item)
        if "id" not in item and item.get("key") in self.custom_field_ids:
            item["id"] = self.custom_field_ids[item["key"]]
        if "field_value" not in item and "value" in item:
            item["field_value"] = item.pop("value")
        return item

    async def create(self, payload: JSON) -> WriteResult:
        """Create a contact at most once. A duplicate refusal (the location disallows
        duplicates) returns the existing contact with ``created=False``."""
        body = self._write_body(payload, CREATE_FIELDS)
        body["locationId"] = self.location_id
        keys = {"email": body.get("email", ""), "phone": body.get("phone", "")}

        async def send() -> WriteResult:
            try:
                response = await self.http.request("POST", CREATE, json_body=body, idempotent=False)
            except RecordError as exc:
                existing = _duplicate_of(exc)
                if existing is None:
                    raise
                record = await self.get(existing)
                return WriteResult(existing, record, created=False, extra={"duplicate_of": existing})
            record = self._record(response.json()["contact"])
            return WriteResult(record.remote_id, record, created=True)

        async def recheck() -> WriteResult | None:
            found = await self._lookup_contact(keys) if any(keys.values()) else None
            if found is None:
                return None
            record = self._record(found)
            return WriteResult(record.remote_id, record, created=True, extra={"settled_by_lookup": True})

        return await self.http.write_once(send, recheck)

    async def update(self, remote_id: str, changes: JSON) -> WriteResult:
        """Send only ``changes``. ``tags`` (the full wanted list) is never put on the update:
        it becomes add/remove calls against the contact's current tags."""
        changes = dict(changes)
        wanted_tags = changes.pop("tags", None)
        unknown = set(changes) - READ_ONLY_FIELDS - UPDATE_FIELDS
        if unknown:
            raise RecordError(422, f"{self.platform}: fields not updatable: {sorted(unknown)}")
        # The spec has no nullable strings: a cleared value is sent as "" (inferred).
        cleared = {k: ("" if v is None else v) for k, v in changes.items() if k not in READ_ONLY_FIELDS}
        body = self._write_body(cleared, UPDATE_FIELDS)
        record: RawRecord | None = None
        if body:
            data = await self.http.json("PUT", contact_path(remote_id), json_body=body)
            record = self._record(data["contact"])
        if wanted_tags is not None:
            current = record or await self.get(remote_id)
            if current is None:
                raise NotFound(400, f"{self.platform}: contact {remote_id} not found")
            have = {t.lower(): t for t in current.payload.get("tags", [])}
            want = {t.lower(): t for t in wanted_tags}
            add = [t for k, t in want.items() if k not in have]
            remove = [t for k, t in have.items() if k not in want]
            if add:
                await self.add_tags(remote_id, add)
            if remove:
                await self.remove_tags(remote_id, remove)
            if add or remove:
                record = await self.get(remote_id)
            else:
                record = current
        return WriteResult(remote_id, record)

    async def delete(self, remote_id: str) -> None:
        try:
            await self.http.request("DELETE", contact_path(remote_id))
        except NotFound:
            return  # already gone (perhaps our own earlier attempt landed)

    async def add_tags(self, remote_id: str, tags: list[str]) -> None:
        if tags:
            await self.http.request("POST", tags_path(remote_id), json_body={"tags": list(tags)})

    async def remove_tags(self, remote_id: str, tags: list[str]) -> None:
        if tags:
            await self.http.request("DELETE", tags_path(remote_id), json_body={"tags": list(tags)})

    async def upsert(self, payload: JSON) -> WriteResult:
        """Create or update by the location's duplicate rule (email, then phone). Safe to
        repeat, so it is retried like a read."""
        body = self._write_body(payload, UPSERT_FIELDS)
        body["locationId"] = self.location_id
        data = await self.http.json("POST", UPSERT, json_body=body)
        record = self._record(data["contact"])
        return WriteResult(
            record.remote_id,
            record,
            created=bool(data.get("new")),
            extra={"traceId": data.get("traceId")} if data.get("traceId") else {},
        )


def _contacts_of(data: Any) -> list[Any]:
    """The ``contacts`` list of a search response. A 200 whose body is not that (an error body
    such as ``{"statusCode": 400, "message": ...}``, no ``contacts`` key) is an error, never an
    empty complete page."""
    if isinstance(data, dict) and isinstance(data.get("contacts"), list):
        status = data.get("statusCode")
        if not (isinstance(status, int) and status >= 400):
            return data["contacts"]
    detail = ""
    if isinstance(data, dict):
        detail = f": statusCode {data.get('statusCode')!r}, message {str(data.get('message'))[:200]!r}"
    raise UnreadablePage(f"gohighlevel POST {SEARCH}: a 200 without a contacts list{detail}")


def _search_after(last: Any, records: list[RawRecord]) -> tuple[Any, ...]:
    """The ``searchAfter`` of the page after this one: the last item's own, else built from the
    last readable record's updated time and id."""
    after = last.get("searchAfter") if isinstance(last, dict) else None
    if not isinstance(after, list) or not after:
        after = None
        for r in reversed(records):
            if not isinstance(r, UnreadableRecord) and r.updated_at is not None:
                after = [int(r.updated_at.timestamp() * 1000), r.remote_id]
                break
    if after is None:
        raise UnreadablePage(f"gohighlevel POST {SEARCH}: no searchAfter to continue from")
    return tuple(after)


def _duplicate_of(exc: RecordError) -> str | None:
    """The existing contact id of a "does not allow duplicated contacts" refusal."""
    body = exc.body if isinstance(exc.body, dict) else {}
    meta = found if isinstance(found := body.get("meta"), dict) else {}
    if exc.status == 400 and meta.get("contactId"):
        return str(meta["contactId"])
    return None
