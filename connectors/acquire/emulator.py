"""The Acquire emulator: the CRM contact endpoints of ``https://{account}.acquire.io/api/v1``.

Routes (paths relative to the API base; the connector's ``base_url`` carries ``/api/v1`` in
production and the bare host here):

    GET    /crm/objects/contact            limit, page, relations, search
    POST   /crm/objects/contact
    GET    /crm/objects/contact/{id}       relations
    PUT    /crm/objects/contact/{id}
    DELETE /crm/objects/contact/{id}
    POST   /crm/contact/merge/{primaryContactId}   {"sourceIds": [...]}

Auth is ``Authorization: Bearer {API_KEY}``; errors are 400 with a typed body (a missing record
is ``ERROR_RECORD_NOT_FOUND`` with status 400, not 404) or 401 ``ERROR_UNAUTHORIZED``. Acquire
documents no rate limit, so none is applied unless a test asks for one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from connectors.acquire.api import (
    CONTACT,
    CONTACTS,
    DEFAULT_LIMIT,
    ERROR_INVALID_INPUT,
    ERROR_UNAUTHORIZED,
    FIRST_PAGE,
    MERGE,
    error_body,
)
from connectors.acquire.behaviours import BEHAVIOURS, CUSTOM_ATTRIBUTES, MERGE_RESULT, PAGING_BASE, SEARCH
from connectors.acquire.behaviours import MAX_LIMIT as MAX_LIMIT_BEHAVIOUR
from connectors.acquire.state import AcquireError, AcquireState
from connectors.emulation import Emulator
from connectors.probing import check_variants

JSON = dict[str, Any]


def _display_phone(e164: str) -> str:
    """A North-American E.164 number the way agents type it (``+1 415 555 2671``): Acquire
    stores phones as entered, so the connector must never rely on one formatting."""
    if e164.startswith("+1") and len(e164) == 12:
        return f"+1 {e164[2:5]} {e164[5:8]} {e164[8:]}"
    return e164


class AcquireEmulator(Emulator):
    """In-memory Acquire account. ``state_options`` go to :class:`AcquireState`
    (``unique_email``, ``merge_keeps_details``, ``null_updated_on_create``)."""

    platform = "acquire"
    documented_rate_limit = None  # "There are no API consumption limits."
    default_credentials = {"api_key": "acq-test-key"}

    def __init__(
        self, *, state_options: JSON | None = None, variants: Mapping[str, str] | None = None, **kwargs: Any
    ) -> None:
        # ``variants``: a reading of each inferred behaviour (connectors/acquire/behaviours.py);
        # an explicit ``state_options`` entry still overrides the state options they set.
        self.variants = check_variants(BEHAVIOURS, variants or {})
        v = self.variants
        self._state_options = {
            "merge_result": v[MERGE_RESULT],
            "ignore_new_attributes": v[CUSTOM_ATTRIBUTES] == "ignored",
            "search": v[SEARCH],
            **(state_options or {}),
        }
        if "merge_keeps_details" in self._state_options and "merge_result" not in (state_options or {}):
            self._state_options.pop("merge_result")
        super().__init__(**kwargs)
        self.state = AcquireState(self.clock.now, self.contacts, self.deleted, **self._state_options)

    # ----------------------------------------------------------------- framework hooks

    def routes(self) -> Sequence[BaseRoute]:
        return [
            Route(CONTACTS, self._list, methods=["GET"]),
            Route(CONTACTS, self._create, methods=["POST"]),
            Route(CONTACT, self._get, methods=["GET"]),
            Route(CONTACT, self._update, methods=["PUT"]),
            Route(CONTACT, self._delete, methods=["DELETE"]),
            Route(MERGE, self._merge, methods=["POST"]),
        ]

    def authenticate(self, request: Request) -> Response | None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token and token == self.credentials.get("api_key"):
            return None
        return self._error(AcquireError(401, ERROR_UNAUTHORIZED, "Missing, incorrect, or invalid API Key"))

    def insert_person(self, person: JSON) -> str:
        fields: JSON = {}
        name = " ".join(p for p in (person.get("first_name"), person.get("last_name")) if p)
        if name:
            fields["name"] = name
        if person.get("email"):
            fields["email"] = person["email"]
        if person.get("phone"):
            fields["phone"] = _display_phone(person["phone"])
        for key in ("city", "state"):
            if person.get(key):
                fields[key] = person[key]
        # Custom attributes live beside the standard keys inside ``fields``.
        for key, value in (person.get("custom") or {}).items():
            fields[key] = value
        record = self.state.seed({"fields": fields, "tags": list(person.get("tags") or [])})
        return str(record["id"])

    def touch(self, record: JSON) -> None:
        self.state.touch(record)

    def apply_edit(self, record: JSON, changes: JSON) -> None:
        self.state.apply_edit(record, changes)

    def error_response(self, status: int, headers: dict[str, str]) -> Response:
        error_type = "ERROR_SERVER_ERROR" if status >= 500 else "ERROR_TOO_MANY_REQUESTS"
        return JSONResponse(error_body(error_type, "emulated fault", status), status_code=status, headers=headers)

    # ----------------------------------------------------------------- helpers for tests

    def seed_raw(self, record: JSON) -> str:
        """Store one contact in Acquire's own raw shape (``fields``, ``tags``, optional
        ``id``/dates); its id."""
        return str(self.state.seed(record)["id"])

    # ----------------------------------------------------------------- handlers

    @staticmethod
    def _error(exc: AcquireError) -> Response:
        return JSONResponse(exc.body(), status_code=exc.status)

    @staticmethod
    def _int_param(request: Request, name: str, default: int) -> int:
        raw = request.query_params.get(name)
        if raw in (None, ""):
            return default
        try:
            value = int(raw)
        except ValueError:
            raise AcquireError(400, ERROR_INVALID_INPUT, f"{name} must be an integer") from None
        if value < 0:
            raise AcquireError(400, ERROR_INVALID_INPUT, f"{name} must not be negative")
        return value

    @staticmethod
    def _relations(request: Request, default: tuple[str, ...]) -> tuple[str, ...]:
        raw = request.query_params.get("relations")
        if raw is None:
            return default
        return tuple(r.strip() for r in raw.split(",") if r.strip())

    @staticmethod
    def _contact_id(request: Request, key: str = "contact_id") -> int:
        raw = request.path_params[key]
        if not raw.isdigit():
            raise AcquireError(400, ERROR_INVALID_INPUT, "contact id must be an integer")
        return int(raw)

    @staticmethod
    async def _body(request: Request) -> Any:
        raw = await request.body()
        if not raw:
            return {}
        try:
            return json.loads(raw)
        except ValueError:
            raise AcquireError(400, ERROR_INVALID_INPUT, "request body is not valid JSON") from None

    async def _list(self, request: Request) -> Response:
        try:
            limit = self._int_param(request, "limit", DEFAULT_LIMIT) or DEFAULT_LIMIT
            most, _, rule = self.variants[MAX_LIMIT_BEHAVIOUR].partition("_")
            if limit > int(most):
                if rule == "refused":
                    raise AcquireError(400, ERROR_INVALID_INPUT, f"limit must be at most {most}")
                limit = int(most)
            if self.variants[PAGING_BASE] == "zero":
                start = self._int_param(request, "page", 0) * limit
            else:
                # Pages are 1-based; page 0 is the first page too (inferred: the docs' example
                # body carries "page":0).
                start = (max(self._int_param(request, "page", FIRST_PAGE), FIRST_PAGE) - 1) * limit
            relations = self._relations(request, ())
        except AcquireError as exc:
            return self._error(exc)
        rows = self.state.matching(request.query_params.get("search"))
        lo, hi = self.page_window(start, limit)
        # Encoded at once by the response: the stored records need no copy.
        wanted = set(relations)
        items = [self.state.view(c, wanted) for c in rows[lo:hi]]
        return JSONResponse({"data": {"list": items, "counts": {"filteredCount": len(rows)}}})

    async def _create(self, request: Request) -> Response:
        try:
            record = self.state.create(await self._body(request))
        except AcquireError as exc:
            return self._error(exc)
        return JSONResponse({"data": record})

    async def _get(self, request: Request) -> Response:
        try:
            record = self.state.get(self._contact_id(request), self._relations(request, ("fields",)))
        except AcquireError as exc:
            return self._error(exc)
        return JSONResponse({"data": record})

    async def _update(self, request: Request) -> Response:
        try:
            record = self.state.update(self._contact_id(request), await self._body(request))
        except AcquireError as exc:
            return self._error(exc)
        return JSONResponse({"data": record})

    async def _delete(self, request: Request) -> Response:
        try:
            deleted = self.state.delete(self._contact_id(request))
        except AcquireError as exc:
            return self._error(exc)
        return JSONResponse({"data": {"deleted": deleted}})

    async def _merge(self, request: Request) -> Response:
        try:
            body = await self._body(request)
            if not isinstance(body, dict):
                raise AcquireError(400, ERROR_INVALID_INPUT, "request body must be a JSON object")
            record = self.state.merge(self._contact_id(request, "primary_id"), body.get("sourceIds"))
        except AcquireError as exc:
            return self._error(exc)
        return JSONResponse({"data": record})
