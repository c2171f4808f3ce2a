"""The Comm100 connector (API v4): a sorted scan of ``/global/contacts`` plus writes.

Comm100 has no change feed. Its list can be sorted (inferred): newest ``lastUpdatedTime`` first,
merged and deleted contacts included (``isIncludeDeleted=true``) so merges and deletes are seen
as such (a non-zero ``mergeToContactId`` sets ``RawRecord.merged_into``; ``isDeleted`` sets
``deleted``). A pull follows ``nextPage`` and stops at the first record older than the cursor
minus an overlap window. The cursor moves only on the last page of a pull: with newest-first
order, every earlier page's safe resume point is the old cursor.

Settings: :class:`~connectors.comm100.settings.Comm100Credentials` (``token``, OAuth2 bearer,
or ``agent_email`` + ``api_key``, HTTP Basic with option ``site_id`` sent as ``?siteId=``) and
:class:`~connectors.comm100.settings.Comm100Options` (``page_size``, ``overlap_seconds``,
``default_region`` for phone matching in lookups, ``read_back``, ``merge_via``).

Writes are not read back by default: write responses carry no ``contactIdentities``, but the
engine does not need them - it keeps what it sent as the record's payload and snapshot, and the
next pull re-reads every contact we wrote anyway (the cursor is never moved past our own writes),
at a hundred contacts per request instead of one: the rate budget is what bounds a Comm100
cycle.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Hashable, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx
import structlog

from connectors.base import (
    Capabilities,
    NotFound,
    PullMode,
    RawRecord,
    RecordError,
    RemoteUnavailable,
    WriteResult,
)
from connectors.comm100.api import (
    CONTACTS,
    MAX_PAGE_SIZE,
    PHONE_IDENTITY_TYPES,
    RATE_LIMIT,
    SERVER_KEYS,
    ZERO_GUID,
    contact_path,
    merge_path,
    parse_time,
)
from connectors.comm100.behaviours import IDENTITY_VALUES, LIST_PAGING, PUT_IDENTITIES, PUT_SEMANTICS
from connectors.comm100.settings import Comm100Credentials, Comm100Options
from connectors.http import FetchedPage, HttpConnector
from connectors.pulls import SortedScanPull, UnreadablePage, decode_json, read_items, server_now
from sync.normalize import InvalidValue, normalize_email, normalize_phone

JSON = dict[str, Any]
log = structlog.get_logger("contactsync.comm100")


def to_record(contact: JSON) -> RawRecord:
    """A Comm100 contact as a RawRecord: merged-away and deleted contacts say so."""
    merged = contact.get("mergeToContactId")
    merged_into = str(merged) if merged and merged != ZERO_GUID else None
    stamp = contact.get("lastUpdatedTime")
    return RawRecord(
        remote_id=str(contact["id"]),
        payload=contact,
        updated_at=_parse(stamp),
        merged_into=merged_into,
        deleted=bool(contact.get("isDeleted")) and merged_into is None,
    )


def _parse(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return parse_time(value)
    except ValueError:
        return None


class Comm100Connector(SortedScanPull, HttpConnector):
    """One Comm100 site (``https://api{NN}.comm100.io/v4``)."""

    platform = "comm100"
    capabilities = Capabilities(
        pull_mode=PullMode.SORTED_SCAN,
        can_merge=False,  # enabled per connection by option merge_via (inferred endpoints)
        lookup_keys=("email", "phone"),
        deletes_detectable=True,
        unique_keys=True,  # an identity value sits on one contact ("identity already used")
        rate_limit=RATE_LIMIT,  # documented: 300 calls per 5 minutes
        overlap_seconds=30.0,
    )

    options_model = Comm100Options
    credentials_model = Comm100Credentials
    options: Comm100Options
    credentials: Comm100Credentials

    def __init__(self, settings: Any, transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(settings, transport)
        opts = self.options
        self.merge_via: str | None = opts.merge_via
        self.capabilities = dataclasses.replace(
            type(self).capabilities, can_merge=opts.merge_via is not None, overlap_seconds=opts.overlap_seconds
        )
        self._use_token = self.credentials.uses_token
        self.page_size = min(opts.page_size, MAX_PAGE_SIZE)
        self.default_region = opts.default_region
        self.read_back = opts.read_back
        # Measured behaviours (contactsync probe); an absent one is unknown and the safe
        # reading is taken: PUT may replace, the list order may not hold.
        self.behaviours = dict(getattr(settings, "behaviours", None) or {})
        if self.behaviours.get(IDENTITY_VALUES) == "shared":
            self.capabilities = dataclasses.replace(self.capabilities, unique_keys=False)
        self._array_last_ids: list[str] | None = None

    # ----------------------------------------------------------------- hooks

    def auth_headers(self) -> dict[str, str]:
        if self._use_token:
            return {"Authorization": f"Bearer {self.secret('token')}"}
        raw = f"{self.secret('agent_email')}:{self.secret('api_key')}".encode()
        return {"Authorization": "Basic " + base64.b64encode(raw).decode()}

    def auth_params(self) -> dict[str, str]:
        site = self.options.site_id
        return {"siteId": site} if site else {}

    # ----------------------------------------------------------------- pull

    # SortedScanPull owns the loop: newest first down to ``cursor["since"]`` minus the overlap
    # window; the cursor moves on the last page; a stable ``total`` makes a full scan.

    def parse_cursor_time(self, value: Any) -> datetime | None:
        return _parse(value)

    async def fetch_page(self, token: Hashable | None) -> FetchedPage:
        params = {
            "pageSize": self.page_size,
            "sortBy": "lastUpdatedTime",
            "sortOrder": "desc",
            "isIncludeDeleted": "true",
            "include": "contactIdentity",
        }
        if token is None or isinstance(token, int):
            # The first page, or page N of a bare-array listing (no nextPage links to follow).
            response = await self.http.request("GET", CONTACTS, params={"pageIndex": token or 1, **params})
        else:
            # httpx replaces (not merges) a URL's query when params are passed, and the
            # shared layer always passes the auth params: split nextPage into path + params.
            url = httpx.URL(str(token))
            # nextPage is followed on the configured origin only: a link to another host (or
            # to plain http) would carry our credentials there.
            self.http.check_origin(url)
            response = await self.http.request(
                "GET", str(url.copy_with(query=None)), params=dict(url.params.multi_items())
            )
        body = decode_json(response, f"comm100 GET {CONTACTS}")
        index = token if isinstance(token, int) else 1
        if isinstance(body, list):
            # The page's text says "An array of Contact" (seed 004 line 39; behaviour
            # comm100.list_shape=array): no links, no total. A full page asks for the next page
            # index; a page equal to the previous one (paging ignored) ends the listing.
            records = read_items(body, to_record, id_types=(str,))
            ids = [r.remote_id for r in records]
            repeated = token is not None and bool(ids) and ids == self._array_last_ids
            self._array_last_ids = ids
            extra: dict[str, Any] = {"total": None, "server_now": server_now(response)}
            # A page of pageSize (or more: a page shifted back over the one before) has a
            # successor; a first page longer than pageSize is everything (paging ignored).
            more = len(body) >= self.page_size
            if token is None and len(body) > self.page_size:
                extra["unordered"] = "the list answered more records than pageSize: paging ignored"
                more = False
            if repeated:
                # The page before, again: asked for once more (the paginator gives up on a page
                # that keeps repeating).
                return FetchedPage(records, index, extra)
            return FetchedPage(records, index + 1 if more else None, extra)
        if not isinstance(body, dict) or not isinstance(body.get("contacts"), list):
            raise RemoteUnavailable("comm100 GET /global/contacts: response has no contacts array")
        next_page = body.get("nextPage") or None
        if next_page is not None and not isinstance(next_page, str):
            raise UnreadablePage(f"comm100 GET {CONTACTS}: nextPage is a {type(next_page).__name__}, not a URL")
        records = read_items(body["contacts"], to_record, id_types=(str,))
        extra = {"total": body.get("total"), "server_now": server_now(response)}
        if self.behaviours.get(LIST_PAGING, "honoured") != "honoured":
            extra["unordered"] = f"measured {LIST_PAGING}={self.behaviours[LIST_PAGING]}"
        elif next_page is not None and len(body["contacts"]) != self.page_size:
            # A page of another size than asked for, with more to come: the server pages its
            # own way, so it may well ignore the order asked for too.
            extra["unordered"] = f"a page of {len(body['contacts'])} records for pageSize {self.page_size}"
        return FetchedPage(records, next_page, extra)

    # ----------------------------------------------------------------- reads

    async def get(self, remote_id: str) -> RawRecord | None:
        try:
            body = await self.http.json("GET", contact_path(remote_id), params={"include": "contactIdentity"})
        except NotFound:
            return None
        if not isinstance(body, dict) or "id" not in body:
            raise RemoteUnavailable("comm100 GET /global/contacts/{id}: response is not a contact")
        return to_record(body)

    async def lookup(self, keys: Mapping[str, str]) -> str | None:
        """Find a live contact by an Email identity (``keys["email"]``) or an SMS/WhatsApp
        identity (``keys["phone"]``) through ``contactIdentityValue``; candidates are confirmed
        by their normalized values and the oldest one wins.

        A primary phone lives in the top-level ``phone`` field, which no search parameter
        covers; so a phone not found among identities is looked for among the most recently
        created contacts (one page, newest first) - enough to settle an in-flight create, the
        reason lookups exist."""
        for kind in self.capabilities.lookup_keys:
            value = keys.get(kind)
            if not value:
                continue
            body = await self.http.json(
                "GET",
                CONTACTS,
                params={"contactIdentityValue": value, "include": "contactIdentity", "pageSize": 100},
            )
            found = self._oldest_holding(body, kind, value)
            if found is None and kind == "phone":
                body = await self.http.json(
                    "GET",
                    CONTACTS,
                    params={
                        "sortBy": "createTime",
                        "sortOrder": "desc",
                        "include": "contactIdentity",
                        "pageSize": self.page_size,
                    },
                )
                found = self._oldest_holding(body, kind, value)
            if found is not None:
                return found
        return None

    def _oldest_holding(self, body: Any, kind: str, value: str) -> str | None:
        contacts = body if isinstance(body, list) else body.get("contacts") if isinstance(body, dict) else None
        matches = [c for c in contacts or [] if self._holds(c, kind, value)]
        if not matches:
            return None
        matches.sort(key=lambda c: _parse(c.get("createTime")) or datetime.max.replace(tzinfo=UTC))
        return str(matches[0]["id"])

    def _holds(self, contact: JSON, kind: str, value: str) -> bool:
        if contact.get("isDeleted") or (contact.get("mergeToContactId") or ZERO_GUID) != ZERO_GUID:
            return False
        for ident in contact.get("contactIdentities") or []:
            itype = str(ident.get("contactIdentityType") or "").lower()
            raw = ident.get("value")
            if not isinstance(raw, str):
                continue
            if kind == "email" and itype == "email" and _same(normalize_email, raw, value):
                return True
            if (
                kind == "phone"
                and itype in PHONE_IDENTITY_TYPES
                and _same(normalize_phone, raw, value, self.default_region)
            ):
                return True
        phone = contact.get("phone")
        return kind == "phone" and isinstance(phone, str) and _same(normalize_phone, phone, value, self.default_region)

    # ----------------------------------------------------------------- writes

    async def create(self, payload: JSON) -> WriteResult:
        body = _body(payload)
        if not body.get("name"):
            body["name"] = _derive_name(body)

        async def send() -> WriteResult:
            created = await self.http.json("POST", CONTACTS, json_body=body, idempotent=False)
            if not isinstance(created, dict) or not created.get("id"):
                raise RemoteUnavailable("comm100 POST /global/contacts: response has no id")
            if "contactIdentities" not in created:
                # The response has no identities; a new contact holds the ones sent (or the
                # create is refused). The rest of the response shows what was stored, so the
                # engine can verify the write (phone, company... may be ignored).
                created = {**created, "contactIdentities": body.get("contactIdentities") or []}
            return WriteResult(str(created["id"]), await self._record(created), created=True)

        async def recheck() -> WriteResult | None:
            found = await self.lookup(_identity_keys(body))
            if found is None:
                return None
            return WriteResult(found, await self.get(found) if self.read_back else None, created=True)

        return await self.http.write_once(send, recheck)

    #: ``update`` takes ``current=``: the contact as the caller read it by id just before (the
    #: engine's read before an update), used instead of reading it again.
    update_takes_current = True

    def update_reads_current(self, changes: JSON) -> bool:
        """Whether :meth:`update` of ``changes`` reads the contact first when no ``current``
        is given: for a full representation (PUT semantics not measured to merge) or the
        required ``name`` it does not carry."""
        return self.behaviours.get(PUT_SEMANTICS) != "merge" or not _body(changes).get("name")

    async def update(self, remote_id: str, changes: JSON, *, current: RawRecord | None = None) -> WriteResult:
        """PUT ``changes`` - as a full representation unless PUT is measured to merge.

        ``name`` is required on every PUT, which suggests PUT replaces the contact (seed 004;
        behaviour ``comm100.put_semantics``). Unless a probe measured ``merge``, the contact is
        read first and the body is the whole documented representation (name, first and last
        name, identities, and the other profile keys it holds) with ``changes`` over it: a
        partial PUT under replace semantics would erase every key left out.

        The result carries the contact as the platform holds it afterwards (the PUT response,
        with identities: those read, or those sent when the PUT replaced them; read again when
        an identity was to be removed and PUT may only extend), so the engine can verify the
        write.

        ``current``: the contact read by id by the caller just before this call (the engine
        reads it to check the update is still current); it stands for the read here, so one GET
        serves both and the representation sent is the one that was checked."""
        body = _body(changes)
        full = self.behaviours.get(PUT_SEMANTICS) != "merge"
        needed = full or not body.get("name")
        if current is None and needed:
            current = await self.get(remote_id)
        if (needed or current is not None) and (current is None or current.merged_into or current.deleted):
            raise NotFound(404, f"comm100: no live contact {remote_id}")
        if current is not None and full:
            body = {**_body(_representation(current.payload)), **body}
        if not body.get("name"):
            assert current is not None
            body["name"] = current.payload.get("name") or _derive_name({**current.payload, **body})
        updated = await self.http.json("PUT", contact_path(remote_id), json_body=body)
        if not isinstance(updated, dict):
            raise RemoteUnavailable("comm100 PUT /global/contacts/{id}: response is not a contact")
        result = {"id": remote_id, **updated}
        if "contactIdentities" not in result:
            sent = body.get("contactIdentities")
            held = (current.payload.get("contactIdentities") or []) if current is not None else None
            if (
                sent is not None
                and (held is None or _drops_identity(held, sent))
                and (self.behaviours.get(PUT_IDENTITIES) != "replace")
            ):
                # PUT may extend rather than replace the identities: see what it kept.
                record = await self.get(remote_id)
                if record is None:
                    raise NotFound(404, f"comm100: contact {remote_id} vanished after a write")
                return WriteResult(remote_id, record)
            if sent is not None:
                result["contactIdentities"] = sent
            elif held is not None:
                result["contactIdentities"] = held
        return WriteResult(remote_id, await self._record(result))

    async def delete(self, remote_id: str) -> None:
        await self.http.request("DELETE", contact_path(remote_id))

    async def merge(self, survivor_id: str, loser_ids: list[str]) -> WriteResult:
        """Native merge through the inferred endpoint chosen by option ``merge_via``."""
        if self.merge_via is None:
            raise NotImplementedError("comm100: native merge is off (set option merge_via)")
        for loser in loser_ids:
            await self._merge_one(survivor_id, loser)
        return WriteResult(survivor_id, await self.get(survivor_id) if self.read_back else None)

    async def _merge_one(self, survivor_id: str, loser_id: str) -> None:
        async def send() -> None:
            if self.merge_via == "endpoint":
                await self.http.request(
                    "POST",
                    merge_path(survivor_id),
                    json_body={"contactId": loser_id},
                    idempotent=False,
                )
            else:
                loser = await self.get(loser_id)
                if loser is None:
                    raise NotFound(404, f"comm100: no contact {loser_id}")
                if loser.merged_into == survivor_id:
                    return
                await self.http.request(
                    "PUT",
                    contact_path(loser_id),
                    json_body={"name": loser.payload.get("name") or "Unknown", "mergeToContactId": survivor_id},
                    idempotent=False,
                )

        async def recheck() -> bool | None:
            loser = await self.get(loser_id)
            return True if loser is not None and loser.merged_into == survivor_id else None

        await self.http.write_once(send, recheck)

    async def _record(self, contact: JSON) -> RawRecord | None:
        """The written contact as a full record when it can be had: write responses carry no
        identities, so it takes a GET (option ``read_back``); None when reading back is off
        (the default: the caller keeps what it sent, and the next pull reads the contact)."""
        if "contactIdentities" in contact:
            return to_record(contact)
        if not self.read_back:
            return None
        record = await self.get(str(contact["id"]))
        if record is None:
            raise NotFound(404, f"comm100: contact {contact['id']} vanished after a write")
        return record


def _body(payload: Mapping[str, Any]) -> JSON:
    """A create/update body: the payload without the server-owned keys; identities without
    their server-assigned ids."""
    body = {k: v for k, v in payload.items() if k not in SERVER_KEYS}
    idents = body.get("contactIdentities")
    if idents is not None:
        if not isinstance(idents, list):
            raise RecordError(400, "comm100: contactIdentities must be a list")
        body["contactIdentities"] = [
            {k: v for k, v in i.items() if k not in ("id", "contactId")} for i in idents if isinstance(i, Mapping)
        ]
    return body


def _representation(contact: Mapping[str, Any]) -> JSON:
    """A read contact as a full PUT body: its profile keys that hold a value and its identities."""
    out = {
        k: v for k, v in contact.items() if v is not None and k not in SERVER_KEYS and not isinstance(v, (dict, bool))
    }
    out["contactIdentities"] = list(contact.get("contactIdentities") or [])
    return out


def _drops_identity(held: list[Any], sent: list[Any]) -> bool:
    """Whether ``sent`` leaves out an identity ``held`` has (where replace and extend differ)."""

    def key(i: Any) -> tuple[str, str]:
        return (str(i.get("contactIdentityType") or "").lower(), str(i.get("value") or "").lower())

    wanted = {key(i) for i in sent if isinstance(i, Mapping)}
    return any(key(i) not in wanted for i in held if isinstance(i, Mapping))


def _derive_name(body: Mapping[str, Any]) -> str:
    """Comm100 requires ``name``: first + last name, else the first identity's value."""
    name = " ".join(str(body[k]) for k in ("firstName", "lastName") if body.get(k)).strip()
    if name:
        return name
    for ident in body.get("contactIdentities") or []:
        if isinstance(ident, Mapping) and ident.get("value"):
            return str(ident["value"])
    return str(body.get("phone") or "Unknown")


def _identity_keys(body: Mapping[str, Any]) -> dict[str, str]:
    keys: dict[str, str] = {}
    for ident in body.get("contactIdentities") or []:
        itype = str(ident.get("contactIdentityType") or "").lower()
        if itype == "email" and "email" not in keys and ident.get("value"):
            keys["email"] = str(ident["value"])
        elif itype in PHONE_IDENTITY_TYPES and "phone" not in keys and ident.get("value"):
            keys["phone"] = str(ident["value"])
    if "phone" not in keys and body.get("phone"):
        keys["phone"] = str(body["phone"])
    return keys


def _same(fn: Any, a: str, b: str, *args: Any) -> bool:
    try:
        return bool(fn(a, *args) == fn(b, *args))
    except InvalidValue:
        return False


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat() if moment else None
