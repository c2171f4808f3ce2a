"""A faithful fake of GoHighLevel's contacts API (LeadConnector API v2).

Routes, parameters and bodies follow the official OpenAPI spec (``apps/contacts.json``):

* ``POST /contacts/search`` - ``locationId``, ``pageLimit`` (<= 500), ``page`` *or*
  ``searchAfter``, ``filters`` (eq, not_eq, contains, not_contains, exists, not_exists, range;
  nested ``{group, filters}``), ``sort``. Answers ``{"contacts": [...], "total": N}``, each
  contact carrying its ``searchAfter`` cursor (GoHighLevel's search doc; the spec's 200 has no
  schema). Search is eventually consistent: a change becomes visible after a per-change delay
  drawn from ``[0, search_delay_s]``, so visibility is not in update order.
* ``GET|PUT|DELETE /contacts/{contactId}``, ``POST /contacts/``, ``POST /contacts/upsert``,
  ``GET /contacts/search/duplicate``, ``POST|DELETE /contacts/{contactId}/tags``.
* ``GET /locations/{locationId}/customFields`` - the location's custom fields (``id``, ``name``,
  ``fieldKey`` ``contact.<key>``, ``dataType``, ``model``), per the official SDK's locations
  service (the contacts spec does not cover it).
* Bearer token + ``Version`` header (2021-07-28, 2021-04-15 and the SDK's v3 accepted unless
  the ``gohighlevel.version`` variant requires one); 401 as
  UnauthorizedDTO; 422 as UnprocessableDTO (``message`` is a list); a missing contact is a 400
  (the spec lists no 404 for these routes).
* Rate limit 100 requests / 10 s (scaled by ``rate_scale``) with ``X-RateLimit-*`` headers on
  every response; 429 without Retry-After (none documented).

Every inferred behaviour is a switch (``variants``, see ``connectors/gohighlevel/behaviours.py``):
search count key ``total``/``count``; the Version(s) required; a refused duplicate create as 400
with ``meta.contactId``, a plain 400, or allowed; the ``dateUpdated`` range value as ISO or epoch ms.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import random
import re
import string
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, cast

import phonenumbers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connectors.base import RateLimit
from connectors.emulation import Clock, Emulator, FaultConfig, ValueIndex
from connectors.gohighlevel import behaviours as bh
from connectors.gohighlevel.api import (
    API_VERSIONS,
    CONTACT,
    CONTACT_TAGS,
    CREATE,
    CREATE_FIELDS,
    CUSTOM_FIELDS,
    DAILY_LIMIT,
    DATED_VERSIONS,
    DEFAULT_VERSION,
    DUPLICATE,
    MAX_PAGE_LIMIT,
    MAX_STANDARD_RESULTS,
    RATE_LIMIT,
    SDK_VERSION,
    SEARCH,
    UPDATE_FIELDS,
    UPDATE_FIELDS_SPEC,
    UPSERT,
    UPSERT_FIELDS,
)
from connectors.probing import check_variants
from connectors.timestamps import parse_iso

JSON = dict[str, Any]

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_OPERATORS = {"eq", "not_eq", "contains", "not_contains", "exists", "not_exists", "range"}


class Unprocessable(Exception):
    """A 422 with GoHighLevel's list of messages."""

    def __init__(self, *messages: str) -> None:
        super().__init__("; ".join(messages))
        self.messages = list(messages)


def _unprocessable(*messages: str) -> JSONResponse:
    return JSONResponse(
        {"statusCode": 422, "message": list(messages), "error": "Unprocessable Entity"}, status_code=422
    )


def _bad_request(message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"statusCode": 400, "message": message, **extra}, status_code=400)


def _sort_value(contact: JSON, field: str) -> Any:
    value = contact.get(field)
    if field in ("dateUpdated", "dateAdded") and isinstance(value, str):
        return int(parse_iso(value).timestamp() * 1000)  # searchAfter carries epoch ms
    if isinstance(value, str):
        return value.lower()
    return value if value is not None else ""


class GoHighLevelEmulator(Emulator):
    """In-memory GoHighLevel location. Options (inferred behaviour marked as such):

    * ``search_delay_s``: the longest a change takes to reach search results ("a few seconds"
      documented; default 2 s, divided by ``rate_scale``); each change draws its own delay;
    * ``allow_duplicates``: the location's "Allow Duplicate Contact" setting (default off: a
      create matching an existing email/phone is a 400 naming the existing contact);
    * ``strict_update_fields``: reject update keys outside the spec's UpdateContactDto with 422
      (default off: GoHighLevel accepts ``companyName`` on update, inferred);
    * ``auto_custom_fields``: a custom field key never seen before gets a new stable id
      (default on: the real API needs the field defined in the location first, inferred).
    """

    platform = "gohighlevel"
    documented_rate_limit = RATE_LIMIT
    default_credentials = {"token": "pit-emulator-0000-ghl-token"}
    daily_limit = DAILY_LIMIT

    def __init__(
        self,
        *,
        base_url: str | None = None,
        rate_scale: float = 1.0,
        faults: FaultConfig | None = None,
        clock: Clock | None = None,
        credentials: dict[str, str] | None = None,
        rate_limit: RateLimit | None | bool = True,
        location_id: str = "ve9EPM428h8vShlRW1KT",
        search_delay_s: float | None = None,
        allow_duplicates: bool = False,
        strict_update_fields: bool = False,
        auto_custom_fields: bool = True,
        id_seed: int = 0,
        variants: Mapping[str, str] | None = None,
    ) -> None:
        self.variants = check_variants(bh.BEHAVIOURS, variants or {})
        if self.variants[bh.DUPLICATE_CREATE] == "allowed":
            allow_duplicates = True
        self.location_id = location_id
        self.search_delay_s = (2.0 / max(rate_scale, 1.0)) if search_delay_s is None else search_delay_s
        self.allow_duplicates = allow_duplicates
        self.strict_update_fields = strict_update_fields
        self.auto_custom_fields = auto_custom_fields
        self._id_rng = random.Random(id_seed)
        self._delay_rng = random.Random(id_seed + 1)
        self.custom_field_ids: dict[str, str] = {}  # key -> id (fieldKey "contact.<key>")
        self.custom_field_names: dict[str, str] = {}  # key -> display name
        # What search sees: id -> contact, plus changes not visible yet (a heap by visible time).
        self._visible: dict[str, JSON] = {}
        self._pending: list[tuple[datetime, int, str, JSON | None]] = []
        self._seq = itertools.count()
        self._sorted: dict[tuple[str, str], tuple[list[tuple[Any, str]], list[str]]] = {}
        self._daily_used = 0
        # The location's duplicate rule without a scan: lower-cased email ("" when none) and
        # stored (E.164) phone -> contact ids, kept by every path that sets them (_apply, delete).
        self._emails = ValueIndex()
        self._phones = ValueIndex()
        # Test hook: the delay of the next change only (then back to random draws).
        self.next_search_delay: float | None = None
        super().__init__(
            base_url=base_url,
            rate_scale=rate_scale,
            faults=faults,
            clock=clock,
            credentials=credentials,
            rate_limit=rate_limit,
        )

    # -- framework hooks

    def routes(self) -> list[Route]:
        return [
            Route(CUSTOM_FIELDS, self.custom_fields, methods=["GET"]),
            Route(SEARCH, self.search, methods=["POST"]),
            Route(DUPLICATE, self.duplicate, methods=["GET"]),
            Route(UPSERT, self.upsert, methods=["POST"]),
            Route(CREATE, self.create, methods=["POST"]),
            Route(CONTACT_TAGS, self.add_tags, methods=["POST"]),
            Route(CONTACT_TAGS, self.remove_tags, methods=["DELETE"]),
            Route(CONTACT, self.get, methods=["GET"]),
            Route(CONTACT, self.update, methods=["PUT"]),
            Route(CONTACT, self.delete, methods=["DELETE"]),
        ]

    def authenticate(self, request: Request) -> Response | None:
        self._daily_used += 1
        auth = request.headers.get("authorization", "")
        if auth != f"Bearer {self.credentials['token']}":
            return JSONResponse(
                {"statusCode": 401, "message": "Invalid token: access token is invalid", "error": "Unauthorized"},
                status_code=401,
            )
        version = request.headers.get("version")
        if version is None:
            return _bad_request("Version header was not found")
        required = self.variants[bh.VERSION]
        accepted = API_VERSIONS if required == "both" else (DATED_VERSIONS if required != "v3" else (SDK_VERSION,))
        if version not in accepted:
            return _bad_request(f"Version {version} is not supported")
        return None

    def rate_limit_headers(self, remaining: int) -> dict[str, str]:
        assert self.rate_limit is not None
        return {
            "X-RateLimit-Max": str(self.rate_limit.requests),
            "X-RateLimit-Remaining": str(max(0, remaining)),
            "X-RateLimit-Interval-Milliseconds": str(int(round(self.rate_limit.per_seconds * 1000))),
            "X-RateLimit-Limit-Daily": str(self.daily_limit),
            "X-RateLimit-Daily-Remaining": str(max(0, self.daily_limit - self._daily_used)),
        }

    def rate_limited_response(self, retry_after: float, headers: dict[str, str]) -> Response:
        # The X-RateLimit-* headers are added to every response by the emulator's gate; adding
        # ``headers`` here as well sent each of them twice.
        return JSONResponse({"statusCode": 429, "message": "Too Many Requests"}, status_code=429)

    def error_response(self, status: int, headers: dict[str, str]) -> Response:
        messages = {
            429: "Too Many Requests",
            500: "Internal server error",
            502: "Bad Gateway",
            503: "Service Unavailable",
        }
        return JSONResponse(
            {"statusCode": status, "message": messages.get(status, "Error")}, status_code=status, headers=headers
        )

    def connector_options(self) -> JSON:
        return {
            "location_id": self.location_id,
            "version": DEFAULT_VERSION,
            # The overlap must cover the longest search delay.
            "overlap_seconds": self.search_delay_s * 1.5 + 0.001,
            # No custom_field_ids: the connector discovers them from the location, as it would
            # from a copied config.example.yaml.
        }

    def insert_person(self, person: JSON) -> str:
        body: JSON = {
            "firstName": person.get("first_name"),
            "lastName": person.get("last_name"),
            "email": person.get("email"),
            "phone": person.get("phone"),
            "companyName": person.get("company"),
            "address1": person.get("address"),
            "city": person.get("city"),
            "state": person.get("state"),
            "postalCode": person.get("postal_code"),
            "country": person.get("country"),
            "website": person.get("website"),
            "timezone": person.get("timezone"),
            "dnd": bool(person.get("do_not_disturb", False)),
            "tags": list(person.get("tags") or []),
            "customFields": [{"key": k, "field_value": v} for k, v in (person.get("custom") or {}).items()],
        }
        body.update(person.get("raw") or {})
        contact = self._new_contact({k: v for k, v in body.items() if v is not None})
        self._visible[contact["id"]] = _copy(contact)  # seeded history is already indexed
        self._sorted.clear()
        return contact["id"]

    def touch(self, record: JSON) -> None:
        record["dateUpdated"] = self.now_iso()
        self._index(record["id"], record)

    def apply_edit(self, record: JSON, changes: JSON) -> None:
        self._apply(record, changes)

    # -- state

    def _new_id(self) -> str:
        alphabet = string.ascii_letters + string.digits
        while True:
            rid = "".join(self._id_rng.choice(alphabet) for _ in range(20))
            if rid not in self.contacts and rid not in self.deleted:
                return rid

    def _custom_id(self, key: str) -> str | None:
        key = key.removeprefix("contact.")
        if key not in self.custom_field_ids:
            if not self.auto_custom_fields:
                return None
            self.add_custom_field(key)
        return self.custom_field_ids[key]

    def add_custom_field(self, key: str, name: str | None = None, field_id: str | None = None) -> str:
        """Define a contact custom field in the location (done in the GoHighLevel UI); its id."""
        key = key.removeprefix("contact.")
        if key not in self.custom_field_ids:
            self.custom_field_ids[key] = field_id or "".join(
                self._id_rng.choice(string.ascii_letters) for _ in range(20)
            )
            self.custom_field_names[key] = name or key.replace("_", " ").title()
        return self.custom_field_ids[key]

    def _index(self, rid: str, record: JSON | None) -> None:
        """Queue a change for search: visible after this change's own delay."""
        if self.next_search_delay is not None:
            delay, self.next_search_delay = self.next_search_delay, None
        else:
            delay = self._delay_rng.uniform(0, self.search_delay_s) if self.search_delay_s > 0 else 0.0
        snapshot = _copy(record) if record is not None else None
        if delay <= 0:
            self._make_visible(rid, snapshot)
        else:
            heapq.heappush(self._pending, (self.clock.now() + timedelta(seconds=delay), next(self._seq), rid, snapshot))

    def _make_visible(self, rid: str, snapshot: JSON | None) -> None:
        old = self._visible.pop(rid, None) if snapshot is None else self._visible.get(rid)
        if snapshot is not None:
            self._visible[rid] = snapshot
        # Keep every sorted view in order (a bisect and a list move each) rather than sort all
        # contacts again for the next search.
        for (field, direction), (keys, ids) in self._sorted.items():
            descending = direction == "desc"
            if old is not None:
                key = _view_key(old, rid, field, descending)
                i = bisect.bisect_left(keys, key)
                if i == len(keys) or keys[i] != key:
                    self._sorted.clear()  # not where expected: rebuild on the next search
                    return
                del keys[i], ids[i]
            if snapshot is not None:
                key = _view_key(snapshot, rid, field, descending)
                i = bisect.bisect_left(keys, key)
                keys.insert(i, key)
                ids.insert(i, rid)

    def _settle(self) -> None:
        now = self.clock.now()
        while self._pending and self._pending[0][0] <= now:
            _, _, rid, snapshot = heapq.heappop(self._pending)
            self._make_visible(rid, snapshot)

    def _normalize_phone(self, phone: str) -> str:
        # GoHighLevel stores phones in E.164 (default region US, inferred).
        try:
            parsed = phonenumbers.parse(phone, "US")
        except phonenumbers.NumberParseException:
            return phone
        return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)

    def _validate(self, body: JSON, allowed: frozenset[str], *, strict: bool = True) -> None:
        messages = []
        if strict:
            messages += [f"property {k} should not exist" for k in body if k not in allowed]
        email = body.get("email")
        if email is not None and (not isinstance(email, str) or not _EMAIL.match(email)):
            messages.append("email must be an email")
        for key in (
            "firstName",
            "lastName",
            "name",
            "phone",
            "companyName",
            "address1",
            "city",
            "state",
            "postalCode",
            "website",
            "timezone",
            "country",
            "source",
        ):
            if key in body and not isinstance(body[key], str):
                messages.append(f"{key} must be a string")
        if "dnd" in body and not isinstance(body["dnd"], bool):
            messages.append("dnd must be a boolean value")
        if "tags" in body and (not isinstance(body["tags"], list) or not all(isinstance(t, str) for t in body["tags"])):
            messages.append("each value in tags must be a string")
        if "customFields" in body and not isinstance(body["customFields"], list):
            messages.append("customFields must be an array")
        if messages:
            raise Unprocessable(*messages)

    def _apply(self, contact: JSON, body: JSON) -> None:
        """Set the given keys on a stored contact (strings never stored empty or null)."""
        try:
            self._apply_keys(contact, body)
        finally:
            # Even a body refused half-way may have set some keys: the indexes follow them.
            self._emails.put(contact["id"], str(contact.get("email", "")).lower())
            self._phones.put(contact["id"], contact.get("phone"))

    def _apply_keys(self, contact: JSON, body: JSON) -> None:
        for key, value in body.items():
            if key in ("locationId", "createNewIfDuplicateAllowed"):
                continue
            if key == "customFields":
                self._apply_custom(contact, value)
            elif key == "tags":
                contact["tags"] = _dedupe([t.strip() for t in value if t.strip()])
            elif key == "name":
                # A full name fills first/last only when those are not given themselves.
                first, _, last = str(value).strip().partition(" ")
                if first and "firstName" not in body:
                    contact["firstName"] = first
                if last and "lastName" not in body:
                    contact["lastName"] = last
            elif value is None or value == "":
                contact.pop(key, None)
            elif key == "phone":
                contact["phone"] = self._normalize_phone(value)
            else:
                contact[key] = value
        for key, source in (
            ("firstNameLowerCase", "firstName"),
            ("lastNameLowerCase", "lastName"),
            ("emailLowerCase", "email"),
        ):
            if source in contact:
                contact[key] = str(contact[source]).lower()
            else:
                contact.pop(key, None)

    def _apply_custom(self, contact: JSON, items: list[JSON]) -> None:
        current = {c["id"]: c["value"] for c in contact.get("customFields", [])}
        for item in items:
            fid = item.get("id") or (self._custom_id(item["key"]) if item.get("key") else None)
            if fid is None:
                raise Unprocessable(f"custom field {item.get('key')!r} does not exist")
            value = item.get("field_value", item.get("value"))
            if value is None or value == "":
                current.pop(fid, None)
            else:
                current[fid] = value
        contact["customFields"] = [{"id": k, "value": v} for k, v in current.items()]

    def _new_contact(self, body: JSON) -> JSON:
        now = self.now_iso()
        contact: JSON = {
            "id": self._new_id(),
            "locationId": self.location_id,
            "type": "lead",
            "dnd": False,
            "tags": [],
            "customFields": [],
            "dateAdded": now,
            "dateUpdated": now,
        }
        try:
            self._apply(contact, body)
        except Unprocessable:
            self._emails.drop(contact["id"])  # refused: never stored, so never a duplicate
            self._phones.drop(contact["id"])
            raise
        self.contacts[contact["id"]] = contact
        return contact

    def find_duplicate(self, email: str | None, phone: str | None) -> JSON | None:
        """The location's duplicate rule: email first, then phone (current state)."""
        if email:
            found = self._emails.first(email.strip().lower())
            if found is not None:
                return self.contacts[str(found)]
        if phone:
            found = self._phones.first(self._normalize_phone(phone))
            if found is not None:
                return self.contacts[str(found)]
        return None

    # -- helpers for handlers

    async def _body(self, request: Request) -> JSON:
        try:
            body = await request.json()
        except ValueError:
            raise Unprocessable("body must be a JSON object") from None
        if not isinstance(body, dict):
            raise Unprocessable("body must be a JSON object")
        return body

    def _check_location(self, location_id: Any) -> Response | None:
        if not location_id:
            return _unprocessable("locationId should not be empty", "locationId must be a string")
        if location_id != self.location_id:
            return JSONResponse(
                {"statusCode": 403, "message": "The token does not have access to this location."}, status_code=403
            )
        return None

    async def custom_fields(self, request: Request) -> Response:
        denied = self._check_location(request.path_params["locationId"])
        if denied is not None:
            return denied
        fields = [
            {
                "id": fid,
                "name": self.custom_field_names.get(key, key),
                "fieldKey": f"contact.{key}",
                "placeholder": "",
                "dataType": "TEXT",
                "position": position,
                "locationId": self.location_id,
                "model": "contact",
            }
            for position, (key, fid) in enumerate(self.custom_field_ids.items())
        ]
        return JSONResponse({"customFields": fields})

    def _missing(self, rid: str) -> JSONResponse:
        return _bad_request("Contact not found")

    # -- handlers

    async def search(self, request: Request) -> Response:
        try:
            body = await self._body(request)
            denied = self._check_location(body.get("locationId"))
            if denied is not None:
                return denied
            page_limit = body.get("pageLimit", 20)
            if not isinstance(page_limit, int) or page_limit < 1:
                raise Unprocessable("pageLimit must be a positive number")
            if page_limit > MAX_PAGE_LIMIT:
                raise Unprocessable(f"pageLimit must not be greater than {MAX_PAGE_LIMIT}")
            search_after = body.get("searchAfter")
            page = body.get("page")
            if search_after is not None and page is not None:
                raise Unprocessable("page and searchAfter cannot be used together")
            if search_after is not None and (not isinstance(search_after, list) or len(search_after) != 2):
                raise Unprocessable("searchAfter must be an array of 2 values")
            filters = body.get("filters") or []
            _check_filters(filters, self.variants[bh.DATE_FILTER])
            sort = body.get("sort") or [{"field": "dateAdded", "direction": "desc"}]
            if not isinstance(sort, list) or not sort or "field" not in sort[0]:
                raise Unprocessable("sort must be an array of {field, direction}")
            field = sort[0]["field"]
            descending = str(sort[0].get("direction", "asc")).lower() == "desc"
        except Unprocessable as exc:
            return _unprocessable(*exc.messages)

        self._settle()
        keys, ids = self._sorted_view(field, descending)
        window = _range_on(filters, field) if not descending else None
        if window is not None:
            # Fast path (the change feed): one range filter on the sort field -> bisect.
            lo_v, lo_incl, hi_v, hi_incl = window
            a = (
                0
                if lo_v is None
                else (bisect.bisect_left if lo_incl else bisect.bisect_right)(keys, (lo_v, "" if lo_incl else "\uffff"))
            )
            b = (
                len(keys)
                if hi_v is None
                else (bisect.bisect_right if hi_incl else bisect.bisect_left)(keys, (hi_v, "\uffff" if hi_incl else ""))
            )
            keys, matched, filters = keys[a:b], ids[a:b], []
        else:
            matched = [i for i in ids if _matches(self._visible[i], filters)] if filters else ids
        total = len(matched)
        if search_after is not None:
            token = (search_after[0], str(search_after[1]))
            if filters:
                mkeys = [(_sort_value(self._visible[i], field), i) for i in matched]
                if descending:
                    mkeys = [(_neg(v), i) for v, i in mkeys]
                start = bisect.bisect_right(mkeys, (_neg(token[0]) if descending else token[0], token[1]))
            else:
                start = bisect.bisect_right(keys, (_neg(token[0]) if descending else token[0], token[1]))
        else:
            page = page or 1
            if not isinstance(page, int) or page < 1:
                return _unprocessable("page must be a positive number")
            if page * page_limit > MAX_STANDARD_RESULTS:
                return _bad_request("Standard pagination is limited to 10000 results; use searchAfter")
            start = (page - 1) * page_limit
        lo, hi = self.page_window(start, page_limit)
        out = []
        for rid in matched[lo:hi]:
            contact = dict(self._visible[rid])
            contact["searchAfter"] = [_sort_value(contact, field), rid]
            out.append(contact)
        return JSONResponse({"contacts": out, self.variants[bh.SEARCH_COUNT]: total})

    def _sorted_view(self, field: str, descending: bool) -> tuple[list[tuple[Any, str]], list[str]]:
        key = (field, "desc" if descending else "asc")
        view = self._sorted.get(key)
        if view is None:
            keys = sorted(_view_key(c, rid, field, descending) for rid, c in self._visible.items())
            view = (keys, [rid for _, rid in keys])
            self._sorted[key] = view
        return view

    async def duplicate(self, request: Request) -> Response:
        q = request.query_params
        denied = self._check_location(q.get("locationId"))
        if denied is not None:
            return denied
        found = self.find_duplicate(q.get("email"), q.get("number"))
        return JSONResponse({"contact": _copy(found) if found else None})

    async def get(self, request: Request) -> Response:
        rid = request.path_params["contactId"]
        contact = self.contacts.get(rid)
        if contact is None:
            return self._missing(rid)
        return JSONResponse({"contact": _copy(contact)})

    async def create(self, request: Request) -> Response:
        try:
            body = await self._body(request)
            denied = self._check_location(body.get("locationId"))
            if denied is not None:
                return denied
            self._validate(body, CREATE_FIELDS | {"locationId"})
        except Unprocessable as exc:
            return _unprocessable(*exc.messages)
        if not self.allow_duplicates:
            existing = self.find_duplicate(body.get("email"), body.get("phone"))
            if existing is not None:
                field = (
                    "email"
                    if body.get("email") and existing.get("email", "").lower() == str(body["email"]).lower()
                    else "phone"
                )
                if self.variants[bh.DUPLICATE_CREATE] == "400_plain":
                    return _bad_request("This location does not allow duplicated contacts.")
                return _bad_request(
                    "This location does not allow duplicated contacts.",
                    meta={
                        "contactName": " ".join(filter(None, [existing.get("firstName"), existing.get("lastName")])),
                        "contactId": existing["id"],
                        "matchingField": field,
                    },
                )
        try:
            contact = self._new_contact(body)
        except Unprocessable as exc:
            return _unprocessable(*exc.messages)
        self._index(contact["id"], contact)
        return JSONResponse({"contact": _copy(contact)}, status_code=201)

    async def upsert(self, request: Request) -> Response:
        try:
            body = await self._body(request)
            denied = self._check_location(body.get("locationId"))
            if denied is not None:
                return denied
            self._validate(body, UPSERT_FIELDS | {"locationId"})
            existing = self.find_duplicate(body.get("email"), body.get("phone"))
            if existing is None or (self.allow_duplicates and body.get("createNewIfDuplicateAllowed")):
                contact, new = self._new_contact(body), True
            else:
                contact, new = existing, False
                self._apply(contact, body)
        except Unprocessable as exc:
            return _unprocessable(*exc.messages)
        self.touch(contact)
        return JSONResponse(
            {"new": new, "contact": _copy(contact), "traceId": str(uuid.UUID(int=self._id_rng.getrandbits(128)))}
        )

    async def update(self, request: Request) -> Response:
        rid = request.path_params["contactId"]
        try:
            body = await self._body(request)
            allowed = UPDATE_FIELDS_SPEC if self.strict_update_fields else UPDATE_FIELDS
            self._validate(body, allowed)
        except Unprocessable as exc:
            return _unprocessable(*exc.messages)
        contact = self.contacts.get(rid)
        if contact is None:
            return self._missing(rid)
        try:
            self._apply(contact, body)
        except Unprocessable as exc:
            return _unprocessable(*exc.messages)
        self.touch(contact)
        # The v2 spec spells it "succeded" (sic); the v3 models of the official SDK "succeeded".
        flag = "succeeded" if request.headers.get("version") == SDK_VERSION else "succeded"
        return JSONResponse({flag: True, "contact": _copy(contact)})

    async def delete(self, request: Request) -> Response:
        rid = request.path_params["contactId"]
        contact = self.contacts.pop(rid, None)
        if contact is None:
            return self._missing(rid)
        self._emails.drop(rid)
        self._phones.drop(rid)
        self.deleted[rid] = contact
        self._index(rid, None)
        return JSONResponse({"succeded": True})

    async def _tags_body(self, request: Request) -> list[str]:
        body = await self._body(request)
        tags = body.get("tags")
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise Unprocessable("tags must be an array", "each value in tags must be a string")
        return [t.strip() for t in tags if t.strip()]

    async def add_tags(self, request: Request) -> Response:
        rid = request.path_params["contactId"]
        try:
            tags = await self._tags_body(request)
        except Unprocessable as exc:
            return _unprocessable(*exc.messages)
        contact = self.contacts.get(rid)
        if contact is None:
            return self._missing(rid)
        contact["tags"] = _dedupe(contact.get("tags", []) + tags)
        self.touch(contact)
        return JSONResponse({"tags": list(contact["tags"])}, status_code=201)

    async def remove_tags(self, request: Request) -> Response:
        rid = request.path_params["contactId"]
        try:
            tags = await self._tags_body(request)
        except Unprocessable as exc:
            return _unprocessable(*exc.messages)
        contact = self.contacts.get(rid)
        if contact is None:
            return self._missing(rid)
        drop = {t.lower() for t in tags}
        contact["tags"] = [t for t in contact.get("tags", []) if t.lower() not in drop]
        self.touch(contact)
        return JSONResponse({"tags": list(contact["tags"])})


# --------------------------------------------------------------------------- search filters


def _view_key(contact: JSON, rid: str, field: str, descending: bool) -> tuple[Any, str]:
    """A contact's place in a sorted view: its sort value (reversed when descending), then its id."""
    value = _sort_value(contact, field)
    return (_neg(value) if descending else value, rid)


class _Neg:
    """Reverses the order of any comparable value (descending sorts with bisect)."""

    __slots__ = ("v",)

    def __init__(self, v: Any) -> None:
        self.v = v

    def __lt__(self, other: _Neg) -> bool:
        return other.v < self.v

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Neg) and other.v == self.v

    def __le__(self, other: _Neg) -> bool:
        return other.v <= self.v


def _neg(v: Any) -> Any:
    return -v if isinstance(v, (int, float)) and not isinstance(v, bool) else _Neg(v)


def _check_filters(filters: Any, date_format: str = "iso") -> None:
    if not isinstance(filters, list):
        raise Unprocessable("filters must be an array")
    for f in filters:
        if not isinstance(f, dict):
            raise Unprocessable("each filter must be an object")
        if "group" in f:
            if f["group"] not in ("AND", "OR"):
                raise Unprocessable("group must be one of AND, OR")
            _check_filters(f.get("filters"), date_format)
            continue
        if f.get("operator") not in _OPERATORS:
            raise Unprocessable(f"operator must be one of {', '.join(sorted(_OPERATORS))}")
        if not f.get("field"):
            raise Unprocessable("field should not be empty")
        if f["operator"] == "range":
            value = f.get("value")
            if not isinstance(value, dict) or not set(value) <= {"gte", "lte", "gt", "lt"} or not value:
                raise Unprocessable("range value must have gte, lte, gt or lt")
            if f["field"] in ("dateUpdated", "dateAdded"):
                _check_date_values(f["field"], value, date_format)


def _check_date_values(field: str, value: JSON, date_format: str) -> None:
    """The ``gohighlevel.date_filter`` variant: a date range takes ISO strings or epoch ms only."""
    for bound in value.values():
        if date_format == "epoch_ms":
            if not isinstance(bound, int) or isinstance(bound, bool):
                raise Unprocessable(f"{field} range value must be a number (epoch milliseconds)")
        else:
            ok = isinstance(bound, str)
            if ok:
                try:
                    parse_iso(bound)
                except ValueError:
                    ok = False
            if not ok:
                raise Unprocessable(f"{field} range value must be a valid ISO 8601 date string")


def _range_on(filters: list[JSON], field: str) -> tuple[Any, bool, Any, bool] | None:
    """(low, inclusive, high, inclusive) when ``filters`` is exactly one range on ``field``."""
    if len(filters) != 1 or filters[0].get("operator") != "range" or filters[0].get("field") != field:
        return None
    value = filters[0]["value"]
    lo = value.get("gte", value.get("gt"))
    hi = value.get("lte", value.get("lt"))
    return (
        None if lo is None else _comparable(field, lo),
        "gte" in value,
        None if hi is None else _comparable(field, hi),
        "lte" in value,
    )


def _comparable(field: str, value: Any) -> Any:
    if field in ("dateUpdated", "dateAdded"):
        if isinstance(value, (int, float)):
            return int(value)
        if isinstance(value, str):
            try:
                return int(parse_iso(value).timestamp() * 1000)
            except ValueError:
                return value
    return value.lower() if isinstance(value, str) else value


def _matches(contact: JSON, filters: list[JSON], group: str = "AND") -> bool:
    results = (_match_one(contact, f) for f in filters)
    return all(results) if group == "AND" else any(results)


def _match_one(contact: JSON, f: JSON) -> bool:
    if "group" in f:
        return _matches(contact, f.get("filters") or [], f["group"])
    field, op, value = f["field"], f["operator"], f.get("value")
    actual = contact.get(field)
    if op == "exists":
        return actual not in (None, "", [])
    if op == "not_exists":
        return actual in (None, "", [])
    if op in ("eq", "not_eq"):
        if isinstance(actual, list):
            hit = any(_comparable(field, a) == _comparable(field, value) for a in actual)
        else:
            hit = actual is not None and _comparable(field, actual) == _comparable(field, value)
        return hit if op == "eq" else not hit
    if op in ("contains", "not_contains"):
        hit = actual is not None and str(value).lower() in str(actual).lower()
        return hit if op == "contains" else not hit
    # range
    if actual is None:
        return False
    a = _comparable(field, actual)
    checks = {"gte": lambda b: a >= b, "gt": lambda b: a > b, "lte": lambda b: a <= b, "lt": lambda b: a < b}
    return all(checks[k](_comparable(field, v)) for k, v in cast(JSON, value).items())


def _dedupe(tags: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for t in tags:
        if t.lower() not in seen:
            seen.add(t.lower())
            out.append(t)
    return out


def _copy(contact: JSON) -> JSON:
    out = dict(contact)
    out["tags"] = list(contact.get("tags", []))
    out["customFields"] = [dict(c) for c in contact.get("customFields", [])]
    return out
