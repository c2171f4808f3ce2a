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
* The daily budget (``daily_limit``, 200,000 by default, per ``day_seconds`` window aligned on
  the Unix epoch) with ``X-RateLimit-Limit-Daily`` / ``X-RateLimit-Daily-Remaining``; a 429 once
  it is spent (inferred body).
* OAuth: ``POST /oauth/token`` (form-encoded; authorization_code, refresh_token; each refresh
  spends its token: a second use is ``invalid_grant``), ``POST /oauth/locationToken`` and
  ``GET /oauth/installedLocations`` (agency token); bearer tokens it issued are accepted until
  they expire (``token_ttl_s``), besides the Private Integration token. The app's client id
  and secret are ``emulator-client-id`` / ``emulator-client-secret`` unless ``oauth_clients``
  says otherwise. Test hooks:
  :meth:`issue_code`, :meth:`revoke_refresh_tokens`, :meth:`expire_access_tokens`.

Every inferred behaviour is a switch (``variants``, see ``connectors/gohighlevel/behaviours.py``):
search count key ``total``/``count``; the Version(s) required; a refused duplicate create as 400
with ``meta.contactId``, a plain 400, or allowed; the ``dateUpdated`` range value as ISO or epoch ms.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import itertools
import random
import re
import string
import time
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
from connectors.gohighlevel.oauth import INSTALLED_LOCATIONS as OAUTH_INSTALLED
from connectors.gohighlevel.oauth import LOCATION_TOKEN as OAUTH_LOCATION_TOKEN
from connectors.gohighlevel.oauth import TOKEN as OAUTH_TOKEN
from connectors.gohighlevel.webhooks import WebhookSender
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


def _unauthorized(message: str) -> JSONResponse:
    return JSONResponse({"statusCode": 401, "message": message, "error": "Unauthorized"}, status_code=401)


def _invalid_grant(description: str) -> JSONResponse:
    return JSONResponse({"error": "invalid_grant", "error_description": description}, status_code=400)


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
        daily_limit: int | None = None,
        day_seconds: float = 86_400.0,
        oauth_clients: dict[str, str] | None = None,
        token_ttl_s: float = 86_399.0,
        refresh_ttl_s: float = 365 * 86_400.0,
        company_id: str = "emuCompany0000000001",
        installed_locations: list[JSON] | None = None,
        variants: Mapping[str, str] | None = None,
    ) -> None:
        self.variants = check_variants(bh.BEHAVIOURS, variants or {})
        if self.variants[bh.DUPLICATE_CREATE] == "allowed":
            allow_duplicates = True
        self.location_id = location_id
        # The daily budget (documented 200,000 per app per location); windows of ``day_seconds``
        # aligned on the Unix epoch (UTC midnight for a real day), small in tests.
        self.daily_limit = DAILY_LIMIT if daily_limit is None else daily_limit
        self.day_seconds = day_seconds
        self._day = self._day_index()
        # OAuth (marketplace apps): client id -> secret; issued tokens with their wall-clock
        # expiry (``token_ttl_s``: a day, small in tests); each refresh spends its token.
        self.oauth_clients = dict(oauth_clients or {"emulator-client-id": "emulator-client-secret"})
        self.token_ttl_s = token_ttl_s
        self.refresh_ttl_s = refresh_ttl_s
        self.company_id = company_id
        self.installed_locations: list[JSON] = list(
            installed_locations
            or [{"_id": location_id, "name": "Emulated location", "address": "1 Loopback Way", "isInstalled": True}]
        )
        self._codes: dict[str, JSON] = {}
        self._access: dict[str, JSON] = {}
        self._refresh: dict[str, JSON] = {}
        self._spent_refresh: set[str] = set()
        #: Test hooks: every token request as ``(grant_type, refresh_token or code)``.
        self.token_requests: list[tuple[str, str]] = []
        #: Test hook: seconds the token endpoint takes to answer (a refresh race needs overlap).
        self.token_delay_s = 0.0
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
        # Webhook deliveries (deliver_webhooks); the event type the next touch() emits.
        self.webhooks: WebhookSender | None = None
        self._event_type: str | None = None
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
            Route(OAUTH_TOKEN, self.oauth_token, methods=["POST"]),
            Route(OAUTH_LOCATION_TOKEN, self.oauth_location_token, methods=["POST"]),
            Route("/oauth/location-token", self.oauth_location_token, methods=["POST"]),  # the v3 SDK's spelling
            Route(OAUTH_INSTALLED, self.oauth_installed_locations, methods=["GET"]),
            Route("/oauth/installed-locations", self.oauth_installed_locations, methods=["GET"]),
        ]

    def _day_index(self) -> int:
        return int(time.time() // self.day_seconds)

    def _roll_day(self) -> None:
        day = self._day_index()
        if day != self._day:
            self._day, self._daily_used = day, 0

    def authenticate(self, request: Request) -> Response | None:
        path = request.url.path
        if path == OAUTH_TOKEN:
            return None  # client credentials in the form, checked by the handler
        self._roll_day()
        if self._daily_used >= self.daily_limit:
            return JSONResponse(
                {"statusCode": 429, "message": "Daily request limit reached for this location"}, status_code=429
            )
        self._daily_used += 1
        auth = request.headers.get("authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else ""
        grant = self._access.get(token)
        if path.startswith("/oauth/"):
            if grant is None or grant["expires"] <= time.time() or grant["userType"] != "Company":
                return _unauthorized("This route is not yet supported by the IAM Service (an agency token is needed)")
        elif token != self.credentials.get("token"):
            if grant is None or grant["expires"] <= time.time():
                return _unauthorized("Invalid token: access token is invalid")
            if grant["userType"] != "Location":
                return _unauthorized("This route is not yet supported by the IAM Service")
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
        self._roll_day()
        return {
            "X-RateLimit-Max": str(self.rate_limit.requests),
            "X-RateLimit-Remaining": str(max(0, remaining)),
            "X-RateLimit-Interval-Milliseconds": str(int(round(self.rate_limit.per_seconds * 1000))),
            "X-RateLimit-Limit-Daily": str(self.daily_limit),
            # This request counted (it is counted as it passes authentication).
            "X-RateLimit-Daily-Remaining": str(max(0, self.daily_limit - self._daily_used - 1)),
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
            **({"daily_window_s": self.day_seconds} if self.day_seconds != 86_400.0 else {}),
            # OAuth tokens with a scaled lifetime are refreshed a tenth of it before they expire.
            **({"refresh_margin_s": self.token_ttl_s / 10} if self.token_ttl_s < 3000 else {}),
            # No custom_field_ids: the connector discovers them from the location, as it would
            # from a copied config.example.yaml.
        }

    # -- OAuth (marketplace apps)

    def issue_code(self, user_type: str = "Location", *, location_id: str | None = None) -> str:
        """An authorization code, as the marketplace's redirect delivers after an install."""
        code = "code-" + uuid.uuid4().hex
        self._codes[code] = {
            "userType": user_type,
            "companyId": self.company_id,
            "locationId": (location_id or self.location_id) if user_type == "Location" else None,
        }
        return code

    def revoke_refresh_tokens(self) -> None:
        """Revoke every refresh token issued so far (the app uninstalled, or revoked by hand):
        the next refresh answers ``invalid_grant``."""
        self._spent_refresh.update(self._refresh)
        self._refresh.clear()

    def expire_access_tokens(self) -> None:
        """Every access token issued so far expires now."""
        for grant in self._access.values():
            grant["expires"] = 0.0

    def _issue(self, grant: JSON, *, with_refresh: bool = True) -> JSON:
        access = "emu-at-" + uuid.uuid4().hex
        now = time.time()
        self._access[access] = {**grant, "expires": now + self.token_ttl_s}
        body: JSON = {
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": self.token_ttl_s,
            "scope": "contacts.readonly contacts.write locations.readonly oauth.readonly oauth.write",
            "userType": grant["userType"],
            "companyId": grant.get("companyId"),
            "userId": "emuUser0000000000001",
        }
        if grant.get("locationId"):
            body["locationId"] = grant["locationId"]
        if with_refresh:
            refresh = "emu-rt-" + uuid.uuid4().hex
            self._refresh[refresh] = {**grant, "expires": now + self.refresh_ttl_s}
            body["refresh_token"] = refresh
        return body

    async def oauth_token(self, request: Request) -> Response:
        form = await request.form()
        if self.token_delay_s:
            await asyncio.sleep(self.token_delay_s)

        def field(snake: str, camel: str) -> str:
            value = form.get(snake) or form.get(camel) or ""
            return value if isinstance(value, str) else ""

        client_id, secret = field("client_id", "clientId"), field("client_secret", "clientSecret")
        grant_type = field("grant_type", "grantType")
        if not client_id or self.oauth_clients.get(client_id) != secret:
            return JSONResponse({"error": "invalid_client", "error_description": "Client authentication failed"}, 401)
        if grant_type == "authorization_code":
            code = field("code", "code")
            self.token_requests.append((grant_type, code))
            grant = self._codes.pop(code, None)
            if grant is None:
                return _invalid_grant("Invalid authorization code")
        elif grant_type == "refresh_token":
            token = field("refresh_token", "refreshToken")
            self.token_requests.append((grant_type, token))
            grant = self._refresh.pop(token, None)
            if grant is None or grant["expires"] <= time.time():
                if token in self._spent_refresh:
                    return _invalid_grant("Refresh token has already been used or revoked")
                return _invalid_grant("Invalid refresh token")
            self._spent_refresh.add(token)
            grant = {k: v for k, v in grant.items() if k != "expires"}
        else:
            return JSONResponse({"error": "unsupported_grant_type", "error_description": grant_type}, 400)
        user_type = field("user_type", "userType") or grant["userType"]
        if user_type not in ("Company", "Location") or user_type != grant["userType"]:
            return _invalid_grant(f"user_type {user_type!r} does not match the grant")
        return JSONResponse(self._issue(grant))

    async def oauth_location_token(self, request: Request) -> Response:
        form = await request.form()
        company, location = form.get("companyId"), form.get("locationId")
        if company != self.company_id:
            return _bad_request("companyId does not match the token")
        if location not in {loc["_id"] for loc in self.installed_locations}:
            return _bad_request("The app is not installed on this location")
        return JSONResponse(
            self._issue({"userType": "Location", "companyId": company, "locationId": location}, with_refresh=False)
        )

    async def oauth_installed_locations(self, request: Request) -> Response:
        params = request.query_params
        if params.get("companyId") != self.company_id:
            return _bad_request("companyId does not match the token")
        installed = [loc for loc in self.installed_locations if loc.get("isInstalled", True)]
        return JSONResponse({"locations": installed, "count": len(installed)})

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
        event_type, self._event_type = self._event_type or "ContactUpdate", None
        self.emit_event(event_type, record)

    def apply_edit(self, record: JSON, changes: JSON) -> None:
        self._apply(record, changes)

    def external_edit(self, remote_id: str, changes: JSON) -> JSON:
        keys = set(changes)
        if keys == {"dnd"}:
            self._event_type = "ContactDndUpdate"
        elif keys == {"tags"}:
            self._event_type = "ContactTagUpdate"
        return super().external_edit(remote_id, changes)

    def external_delete(self, remote_id: str) -> None:
        """A contact deleted by a person on the platform (emits ContactDelete)."""
        contact = self.contacts.pop(remote_id)
        self._emails.drop(remote_id)
        self._phones.drop(remote_id)
        self.deleted[remote_id] = contact
        self._index(remote_id, None)
        self.emit_event("ContactDelete", contact)

    # -- webhooks

    def deliver_webhooks(self, url: str, **options: Any) -> WebhookSender:
        """From now on, post a signed event to ``url`` for every contact change (API writes and
        outside edits alike); ``options`` go to :class:`WebhookSender` (schemes, drop_share,
        truncate_share, retry_interval_s, transport ...)."""
        if self.webhooks is not None:
            self.webhooks.close()
        self.webhooks = WebhookSender(url, **options)
        return self.webhooks

    def emit_event(self, event_type: str, contact: JSON) -> None:
        """Queue one contact event: the flat contact (no ``dateUpdated``, as documented) with
        ``type`` and ``locationId``; the sender adds ``timestamp`` and ``webhookId``."""
        if self.webhooks is None:
            return
        payload = {k: v for k, v in _copy(contact).items() if k != "dateUpdated"}
        payload.update(type=event_type, locationId=self.location_id, id=contact["id"])
        self.webhooks.emit(payload)

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
        self.emit_event("ContactCreate", contact)
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
        self._event_type = "ContactCreate" if new else None
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
        self.emit_event("ContactDelete", contact)
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
        self._event_type = "ContactTagUpdate"
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
        self._event_type = "ContactTagUpdate"
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
