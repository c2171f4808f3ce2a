"""The Comm100 emulator: the contact endpoints of API v4 (``https://api{NN}.comm100.io/v4``).

Routes (relative to the API base):

    GET    /global/contacts        pageIndex, pageSize, sortBy, sortOrder, isIncludeDeleted,
                                   include=contactIdentity, contactIdentityValueSearch,
                                   contactIdentityValue, contactKeywords, contactIdentityType,
                                   contactIdentityName
           -> {"contacts": [...], "nextPage": full URL | null, "previousPage": ..., "total": N}
    POST   /global/contacts        -> 201 contact
    GET    /global/contacts/{id}   include=contactIdentity
    PUT    /global/contacts/{id}   -> 200 contact ("name" required)
    DELETE /global/contacts/{id}   -> 204
    POST   /contact/contacts/{id}:merge  {"contactId": loser}   (only with ``merge_endpoint``)

Auth: ``Authorization: Bearer {token}`` (OAuth2), or HTTP Basic ``agent email : API key`` with
``?siteId=`` (documented). Rate limit 300 calls per 5 minutes (documented), windows divided by
``rate_scale``; a 429 carries no Retry-After unless ``retry_after_on_429`` (not documented).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from connectors.comm100.api import CONTACT, CONTACTS, DEFAULT_PAGE_SIZE, MERGE, RATE_LIMIT, ZERO_GUID
from connectors.comm100.behaviours import (
    BEHAVIOURS,
    IDENTITY_VALUES,
    LIST_PAGING,
    LIST_SHAPE,
    PUT_IDENTITIES,
    PUT_SEMANTICS,
    UNDOCUMENTED_FIELDS,
)
from connectors.comm100.state import (
    Comm100Error,
    Comm100State,
    ListQuery,
    validation,
)
from connectors.emulation import Emulator
from connectors.probing import check_variants

#: The page size of a server that ignores pageSize (variant comm100.list_paging=ignored_*).
SERVER_PAGE_SIZE = 25

JSON = dict[str, Any]


def _bool_param(raw: str | None, name: str) -> bool:
    if raw is None or raw == "":
        return False
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    raise validation(name, f"{name} must be true or false.")


def _int_param(raw: str | None, name: str, default: int) -> int:
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise validation(name, f"{name} must be an integer.") from None


class Comm100Emulator(Emulator):
    """In-memory Comm100 site.

    ``state_options`` go to :class:`Comm100State` (``utc_suffix``, ``soft_delete``,
    ``put_replaces``, ``unique_identities``, ``merge_via_put``, ``honor_client_times``).
    ``merge_endpoint`` (inferred: it exists in a newer API family) enables
    ``POST /contact/contacts/{id}:merge``. ``site_id`` is the site Basic auth must name.

    ``variants`` picks a reading of each inferred behaviour (``connectors/comm100/behaviours.py``;
    unnamed ones run their ``emulator_default``); they set the state options above, which an
    explicit ``state_options`` entry still overrides.
    """

    platform = "comm100"
    documented_rate_limit = RATE_LIMIT
    default_credentials = {
        "token": "c100-test-token",
        "agent_email": "agent@example.com",
        "api_key": "c100-test-key",
    }

    def __init__(
        self,
        *,
        state_options: JSON | None = None,
        merge_endpoint: bool = False,
        retry_after_on_429: bool = False,
        site_id: str = "10000",
        variants: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        self.variants = check_variants(BEHAVIOURS, variants or {})
        v = self.variants
        self._state_options = {
            "put_replaces": v[PUT_SEMANTICS] == "replace",
            "unique_identities": v[IDENTITY_VALUES] == "unique",
            "ignore_undocumented": v[UNDOCUMENTED_FIELDS] == "ignored",
            "extend_identities": v[PUT_IDENTITIES] == "extend",
            **(state_options or {}),
        }
        self.merge_endpoint = merge_endpoint
        self.retry_after_on_429 = retry_after_on_429
        self.site_id = site_id
        super().__init__(**kwargs)
        self.state = Comm100State(self.clock.now, self.contacts, self.deleted, **self._state_options)

    # ----------------------------------------------------------------- framework hooks

    def routes(self) -> Sequence[BaseRoute]:
        routes: list[BaseRoute] = [
            Route(CONTACTS, self._list, methods=["GET"]),
            Route(CONTACTS, self._create, methods=["POST"]),
            Route(CONTACT, self._get, methods=["GET"]),
            Route(CONTACT, self._update, methods=["PUT"]),
            Route(CONTACT, self._delete, methods=["DELETE"]),
        ]
        if self.merge_endpoint:
            routes.append(Route(MERGE, self._merge, methods=["POST"]))
        return routes

    def authenticate(self, request: Request) -> Response | None:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value and value == self.credentials.get("token"):
            return None
        if scheme.lower() == "basic" and value:
            try:
                email, _, key = base64.b64decode(value).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                email, key = "", ""
            if (
                email
                and email == self.credentials.get("agent_email")
                and key == self.credentials.get("api_key")
                and request.query_params.get("siteId") == self.site_id
            ):
                return None
        return JSONResponse({"code": 401, "message": "Unauthorized."}, status_code=401)

    def insert_person(self, person: JSON) -> str:
        first, last = person.get("first_name"), person.get("last_name")
        name = " ".join(p for p in (first, last) if p) or person.get("email") or person.get("phone") or "Unknown"
        record: JSON = {
            "name": name,
            "firstName": first,
            "lastName": last,
            "company": person.get("company"),
            "phone": person.get("phone"),
            "city": person.get("city"),
            "stateOrProvince": person.get("state"),
            "countryOrRegion": person.get("country"),
            "contactIdentities": [],
        }
        if person.get("email"):
            record["contactIdentities"].append({"contactIdentityType": "Email", "name": name, "value": person["email"]})
        return str(self.state.seed(record)["id"])

    def touch(self, record: JSON) -> None:
        self.state.touch(record)

    def apply_edit(self, record: JSON, changes: JSON) -> None:
        self.state.apply_edit(record, changes)

    def connector_options(self) -> JSON:
        return {"site_id": self.site_id}

    def rate_limited_response(self, retry_after: float, headers: dict[str, str]) -> Response:
        extra = dict(headers)
        if self.retry_after_on_429:
            extra["Retry-After"] = f"{retry_after:.3f}"
        return JSONResponse({"code": 429, "message": "Too many requests."}, status_code=429, headers=extra)

    def error_response(self, status: int, headers: dict[str, str]) -> Response:
        return JSONResponse({"code": status, "message": "emulated fault"}, status_code=status, headers=headers)

    # ----------------------------------------------------------------- helpers for tests

    def seed_raw(self, record: JSON) -> str:
        """Store one contact in Comm100's own shape (``contactIdentities`` included; optional
        ``id``, times, ``mergeToContactId``, ``isDeleted``); its id."""
        return str(self.state.seed(record)["id"])

    def merge_contacts(self, survivor_id: str, loser_id: str) -> None:
        """An agent merges two contacts in the console (no API call)."""
        self.state.merge(survivor_id, loser_id)

    # ----------------------------------------------------------------- handlers

    @staticmethod
    def _error(exc: Comm100Error) -> Response:
        return JSONResponse(exc.body(), status_code=exc.status)

    @staticmethod
    async def _body(request: Request) -> Any:
        raw = await request.body()
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise Comm100Error(400, "The request body is not valid JSON.") from None

    @staticmethod
    def _include_identities(request: Request) -> bool:
        return "contactidentity" in {
            v.strip().lower() for v in request.query_params.get("include", "").split(",") if v.strip()
        }

    async def _list(self, request: Request) -> Response:
        p = request.query_params
        paging = self.variants[LIST_PAGING]
        honoured = paging == "honoured"
        try:
            q = ListQuery(
                page_index=_int_param(p.get("pageIndex"), "pageIndex", 1) if honoured else 1,
                page_size=_int_param(p.get("pageSize"), "pageSize", DEFAULT_PAGE_SIZE)
                if honoured
                else SERVER_PAGE_SIZE,
                sort_by=(p.get("sortBy") or "createTime") if honoured else "createTime",
                sort_order=(p.get("sortOrder") or "asc").lower() if honoured else "asc",
                include_deleted=_bool_param(p.get("isIncludeDeleted"), "isIncludeDeleted"),
                include_identities=self._include_identities(request),
                identity_value_search=p.get("contactIdentityValueSearch") or None,
                identity_value=p.get("contactIdentityValue") or None,
                identity_type=p.get("contactIdentityType") or None,
                identity_name=p.get("contactIdentityName") or None,
                keywords=p.get("contactKeywords") or None,
            )
            rows = self.state.list(q)
        except Comm100Error as exc:
            return self._error(exc)
        if paging == "ignored_arbitrary":
            rows = sorted(rows, key=lambda c: hashlib.sha256(str(c["id"]).encode()).digest())
        if honoured:
            start = (q.page_index - 1) * q.page_size
        else:
            # The server's own paging: an opaque offset in its nextPage links.
            start = _int_param(p.get("skip"), "skip", 0)
        lo, hi = self.page_window(start, q.page_size)
        # Encoded at once by the response: the stored records need no copy.
        page = [self.state.view(c, q.include_identities) for c in rows[lo:hi]]
        if self.variants[LIST_SHAPE] == "array":
            # The text's reading ("An array of Contact"): no envelope, no links; a server that
            # does not page answers everything at once.
            if not honoured:
                page = [self.state.view(c, q.include_identities) for c in rows]
            return JSONResponse(page)
        if honoured:
            next_url = str(request.url.include_query_params(pageIndex=q.page_index + 1)) if hi < len(rows) else None
            prev_url = str(request.url.include_query_params(pageIndex=q.page_index - 1)) if q.page_index > 1 else None
        else:
            next_url = str(request.url.include_query_params(skip=hi)) if hi < len(rows) else None
            prev_url = str(request.url.include_query_params(skip=max(0, lo - q.page_size))) if lo > 0 else None
        return JSONResponse({"contacts": page, "nextPage": next_url, "previousPage": prev_url, "total": len(rows)})

    async def _create(self, request: Request) -> Response:
        try:
            contact = self.state.create(await self._body(request))
        except Comm100Error as exc:
            return self._error(exc)
        return JSONResponse(contact, status_code=201)

    async def _get(self, request: Request) -> Response:
        try:
            contact = self.state.get(request.path_params["contact_id"], self._include_identities(request))
        except Comm100Error as exc:
            return self._error(exc)
        return JSONResponse(contact)

    async def _update(self, request: Request) -> Response:
        try:
            contact = self.state.update(request.path_params["contact_id"], await self._body(request))
        except Comm100Error as exc:
            return self._error(exc)
        return JSONResponse(contact)

    async def _delete(self, request: Request) -> Response:
        try:
            self.state.delete(request.path_params["contact_id"])
        except Comm100Error as exc:
            return self._error(exc)
        return Response(status_code=204)

    async def _merge(self, request: Request) -> Response:
        try:
            body = await self._body(request)
            loser = body.get("contactId") if isinstance(body, dict) else None
            if not isinstance(loser, str) or not loser or loser == ZERO_GUID:
                raise validation("contactId", "The contactId field is required.")
            contact = self.state.merge(request.path_params["contact_id"], loser)
        except Comm100Error as exc:
            return self._error(exc)
        return JSONResponse(contact)
