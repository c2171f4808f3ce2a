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
:class:`~connectors.gohighlevel.settings.GoHighLevelCredentials` (``token``, or ``oauth``: then the
engine binds a token provider, see :mod:`connectors.gohighlevel.oauth`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Hashable, Mapping
from datetime import datetime
from typing import Any

import httpx
import structlog

from connectors.base import (
    Capabilities,
    ConnectionSettings,
    NotFound,
    PullMode,
    RawRecord,
    RecordError,
    WriteResult,
)
from connectors.gohighlevel import behaviours as bh
from connectors.gohighlevel.api import (
    CREATE,
    CREATE_FIELDS,
    DEFAULT_OVERLAP_SECONDS,
    DEFAULT_VERSION,
    DUPLICATE,
    MAX_PAGE_LIMIT,
    RATE_LIMIT,
    READ_ONLY_FIELDS,
    SDK_VERSION,
    SEARCH,
    UPDATE_FIELDS,
    UPSERT,
    UPSERT_FIELDS,
    contact_path,
    custom_fields_path,
    tags_path,
)
from connectors.gohighlevel.oauth import NeedsReauth, OAuthApp, TokenProvider
from connectors.gohighlevel.settings import GoHighLevelCredentials, GoHighLevelOptions, looks_like_field_id
from connectors.http import Action, FetchedPage, HttpConnector
from connectors.pulls import ChangeFeedPull, UnreadablePage, UnreadableRecord, decode_json, read_items, server_now
from connectors.timestamps import iso_ms, parse_iso

JSON = dict[str, Any]
log = structlog.get_logger("contactsync.gohighlevel")


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
        self.location_id = opts.location_id or ""  # none only on an agency connection (it syncs nothing)
        self.page_size = min(opts.page_size, MAX_PAGE_LIMIT)
        measured = settings.behaviours
        # The Version header: as configured, unless a probe measured which one the server takes
        # (gohighlevel.version). A request refused for its Version is retried once with the other
        # spelling (classify), so an unmeasured connection still finds the one that works.
        self.version = opts.version
        if measured.get(bh.VERSION) == "v3":
            self.version = SDK_VERSION
        elif measured.get(bh.VERSION) == "2021-07-28" and self.version == SDK_VERSION:
            self.version = DEFAULT_VERSION
        self._versions_tried = {self.version}
        # gohighlevel.date_filter: the dateUpdated range value as ISO (default) or epoch ms; a
        # search refusing one format (422) is sent again in the other, which is then kept.
        self.date_format = measured.get(bh.DATE_FILTER, "iso")
        # gohighlevel.duplicate_create "allowed": the location keeps duplicates, so a create
        # looks the person's email/phone up first (one more call per create, only then).
        self.lookup_before_create = measured.get(bh.DUPLICATE_CREATE) == "allowed"
        # Custom fields: the location's own (GET /locations/{id}/customFields, discovered on first
        # use), plus ``custom_field_ids`` (key -> id) as configured, which win. A mapping names a
        # custom field by its key (fieldKey without "contact.") or its name; an id read back is
        # given its key; a key that resolves to no field is sent as a key and reported
        # (``unresolved_custom_fields``), never when it looks like a raw id.
        self.custom_field_ids: dict[str, str] = dict(opts.custom_field_ids)
        self._configured_custom_ids = dict(opts.custom_field_ids)
        self.custom_field_keys: dict[str, str] = {v: k for k, v in self.custom_field_ids.items()}  # id -> key
        self._custom_aliases: dict[str, str] = {}  # lower-cased fieldKey / name -> id
        self._custom_discovered = False
        self.unresolved_custom_fields: set[str] = set()
        self._rediscovered: set[str] = set()
        self.capabilities = dataclasses.replace(type(self).capabilities, overlap_seconds=opts.overlap_seconds)
        oauth = self.credentials.oauth() if isinstance(self.credentials, GoHighLevelCredentials) else {}
        if oauth:
            self.oauth_app = OAuthApp(
                client_id=oauth.get("client_id", ""),
                client_secret=oauth.get("client_secret", ""),
                user_type=oauth.get("user_type", "Location"),
                company_id=oauth.get("company_id"),
                app_id=oauth.get("app_id"),
                agency=oauth.get("agency"),
            )

    # -- hooks

    # -- OAuth mode: the tokens come from a provider bound by the engine (the store holds them)

    #: The connection's OAuth app (None: a Private Integration token).
    oauth_app: OAuthApp | None = None
    _tokens: TokenProvider | None = None
    _access: str | None = None

    def bind_tokens(self, provider: TokenProvider) -> None:
        """OAuth mode: every request carries ``provider``'s current access token."""
        self._tokens = provider

    async def before_send(self) -> None:
        if self.oauth_app is None:
            return
        if self._tokens is None:
            raise NeedsReauth(f"{self.settings.name}: OAuth mode but no token store bound to the connector")
        self._access = await self._tokens.access_token()

    async def renew_credentials(self) -> bool:
        if self.oauth_app is None or self._tokens is None or self._access is None:
            return False
        self._access = await self._tokens.renew(self._access)
        return True

    async def aclose(self) -> None:
        closer = getattr(self._tokens, "aclose", None)
        if closer is not None:
            await closer()
        await super().aclose()

    def auth_headers(self) -> dict[str, str]:
        if self.oauth_app is not None:
            return {"Authorization": f"Bearer {self._access or ''}", "Version": self.version}
        return {"Authorization": f"Bearer {self.secret('token')}", "Version": self.version}

    def classify(self, response: httpx.Response) -> Action | None:
        # The spec lists no 404 for contact routes: a missing contact is a 400 "not found".
        if response.status_code == 400:
            message = self.error_message(response).lower()
            refused = ("not supported", "unsupported", "not found", "invalid")
            if "version" in message and any(word in message for word in refused):
                other = DEFAULT_VERSION if self.version == SDK_VERSION else SDK_VERSION
                if other in self._versions_tried:
                    return Action.FAIL_CONFIG  # neither spelling is taken: nothing else to try
                log.warning(
                    "gohighlevel.version_switched", connection=self.settings.name, refused=self.version, now=other
                )
                self.version = other
                self._versions_tried.add(other)
                # Refused before anything was applied: sent again at once (with the new header),
                # like a 429, also for a create.
                return Action.RATE_LIMITED
            if "not found" in message:
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
        if isinstance(payload.get("customFields"), list):
            payload["customFields"] = [self._keyed(item) for item in payload["customFields"]]
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
        seen_ids: set[str] = set()

        async def fetch(token: Hashable | None) -> FetchedPage:
            await self.discover_custom_fields()
            body = dict(base)
            if start is not None:
                body["filters"] = [self._date_filter(start)]
            if token is not None:
                body["searchAfter"] = list(token)  # type: ignore[call-overload]
            try:
                response = await self.http.request("POST", SEARCH, json_body=body)
            except RecordError as exc:
                if start is None or exc.status != 422:
                    raise
                # gohighlevel.date_filter: perhaps this location takes the other format (its 422
                # wording is not documented): tried once; kept if it is taken.
                self.date_format = "epoch_ms" if self.date_format == "iso" else "iso"
                body["filters"] = [self._date_filter(start)]
                try:
                    response = await self.http.request("POST", SEARCH, json_body=body)
                except RecordError:
                    self.date_format = "epoch_ms" if self.date_format == "iso" else "iso"
                    raise exc from None
                log.warning("gohighlevel.date_filter_switched", connection=self.settings.name, now=self.date_format)
            data = decode_json(response, f"{self.platform} POST {SEARCH}")
            contacts = _contacts_of(data)
            records = read_items(contacts, self._record, id_types=(str,))
            seen_ids.update(r.remote_id for r in records if r.remote_id)
            # gohighlevel.search_count: only a ``total`` is trusted as the number of matches; the
            # spec's ``count`` may as well be the page's length, so it never ends a pull early.
            total = data.get("total")
            # Stop on a short page, or once every match the search counts has been seen
            # (saves the empty request after a full last page).
            done = isinstance(total, int) and not isinstance(total, bool) and len(seen_ids) >= total
            next_token = None
            if len(contacts) >= self.page_size and not done:
                next_token = _search_after(contacts[-1], records)
            return FetchedPage(records, next_token, {"server_now": server_now(response), "total": total})

        return fetch

    def _date_filter(self, start: datetime) -> JSON:
        value: Any = int(start.timestamp() * 1000) if self.date_format == "epoch_ms" else iso_ms(start)
        return {"field": "dateUpdated", "operator": "range", "value": {"gte": value}}

    # -- custom fields

    async def discover_custom_fields(self, *, force: bool = False) -> dict[str, str]:
        """The location's custom fields, key -> id (``GET /locations/{id}/customFields``), merged
        with the configured ``custom_field_ids`` (which win). Asked once per connector; a token
        that may not read them leaves the configured ones (warned)."""
        if self._custom_discovered and not force:
            return dict(self.custom_field_ids)
        self._custom_discovered = True
        try:
            # 401 stays a configuration error (a bad token fails fast); a token without the
            # custom-fields scope (403) or a 4xx leaves the configured ids only.
            response = await self.http.request("GET", custom_fields_path(self.location_id), allow=(403, 404, 422))
        except RecordError as exc:
            log.warning("gohighlevel.custom_fields_unreadable", connection=self.settings.name, error=str(exc))
            return dict(self.custom_field_ids)
        if response.status_code >= 300:
            log.warning(
                "gohighlevel.custom_fields_unreadable",
                connection=self.settings.name,
                error=f"HTTP {response.status_code}",
            )
            return dict(self.custom_field_ids)
        data = decode_json(response, f"{self.platform} GET {custom_fields_path(self.location_id)}")
        items = data.get("customFields") if isinstance(data, dict) else None
        for item in items if isinstance(items, list) else []:
            if not isinstance(item, dict) or not item.get("id") or item.get("model", "contact") != "contact":
                continue
            fid = str(item["id"])
            field_key = str(item.get("fieldKey") or "")
            key = field_key.removeprefix("contact.") or str(item.get("name") or fid)
            self.custom_field_ids.setdefault(key, fid)
            self.custom_field_keys.setdefault(fid, key)
            for alias in (field_key, key, str(item.get("name") or "")):
                if alias:
                    self._custom_aliases.setdefault(alias.lower(), fid)
        # Configured key -> id pairs win over what the location calls them.
        for key, fid in self._configured_custom_ids.items():
            self.custom_field_ids[key] = fid
            self.custom_field_keys[fid] = key
        return dict(self.custom_field_ids)

    async def _resolve_custom_keys(self, payload: JSON) -> None:
        """Discover the location's custom fields (once), and again once for each key this
        payload names that is not known yet (a field defined in the location since)."""
        await self.discover_custom_fields()
        items = payload.get("customFields")
        keys = {str(i["key"]) for i in items or [] if isinstance(i, dict) and i.get("key") and not i.get("id")}
        missing = {k for k in keys if self.resolve_custom_field(k) is None and k not in self._rediscovered}
        if missing:
            self._rediscovered |= missing
            await self.discover_custom_fields(force=True)

    def resolve_custom_field(self, key: str) -> str | None:
        """The id of the custom field a mapping calls ``key`` (its key, fieldKey or name)."""
        if key in self.custom_field_ids:
            return self.custom_field_ids[key]
        if key in self.custom_field_keys:
            return key  # already an id of this location
        return self._custom_aliases.get(key.lower()) or self._custom_aliases.get(f"contact.{key}".lower())

    def _keyed(self, item: Any) -> Any:
        """A ``customFields`` item as read, given its ``key`` when its id is known."""
        if not isinstance(item, dict) or item.get("key") or not item.get("id"):
            return item
        key = self.custom_field_keys.get(str(item["id"]))
        return {**item, "key": key} if key else item

    async def get(self, remote_id: str) -> RawRecord | None:
        await self.discover_custom_fields()
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
            items = [self._custom_item(item) for item in body["customFields"]]
            body["customFields"] = [item for item in items if item is not None]
            if not body["customFields"]:
                del body["customFields"]
        return body

    def _custom_item(self, item: JSON) -> JSON | None:
        """An item as sent: ``{id, field_value}`` when its key names a custom field of the
        location; ``{key, field_value}`` (documented: GoHighLevel takes a key too) when not, and
        that key is reported (``unresolved_custom_fields``); None (never sent) when the key
        looks like a raw field id, which would make a new field named after an id."""
        item = dict(item)
        if not item.get("id"):
            key = str(item.get("key") or "")
            fid = self.resolve_custom_field(key) if key else None
            if fid is not None:
                item.pop("key", None)
                item["id"] = fid
            else:
                if key not in self.unresolved_custom_fields:
                    log.warning("gohighlevel.custom_field_unresolved", connection=self.settings.name, key=key)
                self.unresolved_custom_fields.add(key)
                if not key or looks_like_field_id(key):
                    return None
        else:
            item.pop("key", None)
        if "field_value" not in item and "value" in item:
            item["field_value"] = item.pop("value")
        return item

    async def create(self, payload: JSON) -> WriteResult:
        """Create a contact at most once. A duplicate refusal (the location disallows
        duplicates) returns the existing contact with ``created=False``."""
        await self._resolve_custom_keys(payload)
        body = self._write_body(payload, CREATE_FIELDS)
        body["locationId"] = self.location_id
        keys = {"email": body.get("email", ""), "phone": body.get("phone", "")}
        if self.lookup_before_create and any(keys.values()):
            # The location keeps duplicates (measured): only a look-up keeps this create single.
            found = await self._lookup_contact(keys)
            if found is not None:
                record = self._record(found)
                return WriteResult(record.remote_id, record, created=False, extra={"duplicate_of": record.remote_id})

        async def send() -> WriteResult:
            try:
                response = await self.http.request("POST", CREATE, json_body=body, idempotent=False)
            except RecordError as exc:
                existing = _duplicate_of(exc)
                if existing is None and _is_duplicate_refusal(exc) and any(keys.values()):
                    # gohighlevel.duplicate_create "400_plain": no contact id in the refusal.
                    found = await self._lookup_contact(keys)
                    existing = str(found["id"]) if found else None
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
        await self._resolve_custom_keys(cleared)
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
        await self._resolve_custom_keys(payload)
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


def _is_duplicate_refusal(exc: RecordError) -> bool:
    """A 400 refusing a create as a duplicate ("does not allow duplicated contacts")."""
    return exc.status == 400 and "duplicate" in str(exc).lower()


def _duplicate_of(exc: RecordError) -> str | None:
    """The existing contact id of a "does not allow duplicated contacts" refusal."""
    body = exc.body if isinstance(exc.body, dict) else {}
    meta = found if isinstance(found := body.get("meta"), dict) else {}
    if exc.status == 400 and meta.get("contactId"):
        return str(meta["contactId"])
    return None
