"""The DM Champ emulator: the contact endpoints of ``https://api.dmchamp.com/v1``.

Routes (relative to the API base):

    GET    /contacts?phoneNumber=&email=     -> {"success": true, "contactId": "..."} or 404
    POST   /contacts                         -> {"success": true, "data": {"message", "contactId"}}
    PUT    /contacts/{contactId}             -> {"success": true, "message": "Contact updated successfully"}
    POST   /contacts/lists  {contactId, listId}
    DELETE /contacts/lists  {contactId, listId}
    GET    /contacts/tags/{contactId}        -> [{"name", "description"}]
    GET    /contacts/messages/{contactId}    -> []

Auth is the ``apiKey`` query parameter (``userId`` is the documented alternative). There is no
list, no get-by-id and no delete; the full state is still available to tests (:meth:`records`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from connectors.dmchamp import behaviours as bh
from connectors.dmchamp.api import (
    ALREADY_EXISTS_MESSAGE,
    CONTACT,
    CONTACT_LISTS,
    CONTACT_MESSAGES,
    CONTACT_TAGS,
    CONTACTS,
)
from connectors.dmchamp.state import DmChampError, DmChampState, bad_request
from connectors.emulation import Emulator
from connectors.probing import check_variants

JSON = dict[str, Any]


class DmChampEmulator(Emulator):
    """In-memory DM Champ account. ``state_options`` go to :class:`DmChampState`
    (``on_duplicate_phone``, ``extra_update_keys``, ``auto_create_lists``, ...); ``variants``
    choose the inferred behaviours (``connectors/dmchamp/behaviours.py``) and win over them."""

    platform = "dmchamp"
    documented_rate_limit = None  # none documented
    default_credentials = {"api_key": "dmc-test-key"}

    def __init__(
        self, *, state_options: JSON | None = None, variants: Mapping[str, str] | None = None, **kwargs: Any
    ) -> None:
        self._state_options = dict(state_options or {})
        self.variants = check_variants(bh.BEHAVIOURS, variants or {})
        if variants is not None or "on_duplicate_phone" not in self._state_options:
            duplicate = self.variants[bh.DUPLICATE_CREATE]
            self._state_options["on_duplicate_phone"] = "return_existing" if duplicate == "200_existing" else "error"
            self._state_options["duplicate_status"] = 400 if duplicate == "400" else 409
        self._state_options.setdefault("phone_lookup", self.variants[bh.PHONE_LOOKUP])
        self._state_options.setdefault("default_email", self.variants[bh.DEFAULT_EMAIL])
        super().__init__(**kwargs)
        self.state = DmChampState(self.clock.now, self.contacts, **self._state_options)

    # ----------------------------------------------------------------- framework hooks

    def routes(self) -> Sequence[BaseRoute]:
        return [
            Route(CONTACTS, self._find, methods=["GET"]),
            Route(CONTACTS, self._create, methods=["POST"]),
            Route(CONTACT_LISTS, self._add_to_list, methods=["POST"]),
            Route(CONTACT_LISTS, self._remove_from_list, methods=["DELETE"]),
            Route(CONTACT_TAGS, self._tags, methods=["GET"]),
            Route(CONTACT_MESSAGES, self._messages, methods=["GET"]),
            Route(CONTACT, self._update, methods=["PUT"]),
        ]

    def authenticate(self, request: Request) -> Response | None:
        key = request.query_params.get("apiKey")
        user = request.query_params.get("userId")
        if key and key == self.credentials.get("api_key"):
            return None
        if user and user == self.credentials.get("user_id"):
            return None
        # Documented 401 body: a bare JSON string.
        return JSONResponse("Unauthorized", status_code=401)

    def insert_person(self, person: JSON) -> str:
        record: JSON = {}
        if person.get("phone"):
            record["phoneNumber"] = person["phone"]
        record["firstName"] = person.get("first_name") or "Unknown"
        record["lastName"] = person.get("last_name") or "Unknown"
        if person.get("email"):
            record["email"] = person["email"]
        if person.get("tags"):
            record["tags"] = list(person["tags"])
        return self.state.seed(record)

    def touch(self, record: JSON) -> None:
        record["updatedAt"] = self.state.stamp()

    def apply_edit(self, record: JSON, changes: JSON) -> None:
        self.state.apply_edit(record, changes)

    def error_response(self, status: int, headers: dict[str, str]) -> Response:
        return JSONResponse({"success": False, "message": "emulated fault"}, status_code=status, headers=headers)

    def rate_limited_response(self, retry_after: float, headers: dict[str, str]) -> Response:
        return JSONResponse({"success": False, "message": "Too many requests"}, status_code=429, headers=headers)

    # ----------------------------------------------------------------- helpers for tests

    def seed_raw(self, record: JSON) -> str:
        """Store one contact in DM Champ's own shape (``phoneNumber``, ``firstName``, ...;
        optional ``id``, ``tags``, ``listIds``); its id."""
        return self.state.seed(record)

    def add_list(self, list_id: str, name: str | None = None) -> None:
        """Create a contact list (done in the DM Champ UI, not through the API)."""
        self.state.add_list(list_id, name)

    def list_members(self, list_id: str) -> set[str]:
        return set(self.state.lists.get(list_id, {}).get("members", set()))

    # ----------------------------------------------------------------- handlers

    @staticmethod
    def _error(exc: DmChampError) -> Response:
        return JSONResponse(exc.body, status_code=exc.status)

    @staticmethod
    async def _body(request: Request) -> Any:
        raw = await request.body()
        if not raw:
            return {}
        try:
            return json.loads(raw)
        except ValueError:
            raise bad_request("Request body is not valid JSON") from None

    async def _find(self, request: Request) -> Response:
        try:
            contact_id = self.state.find(request.query_params.get("phoneNumber"), request.query_params.get("email"))
        except DmChampError as exc:
            return self._error(exc)
        return JSONResponse({"success": True, "contactId": contact_id})

    async def _create(self, request: Request) -> Response:
        try:
            contact_id, created = self.state.create(await self._body(request))
        except DmChampError as exc:
            return self._error(exc)
        message = "Successfully created new contact" if created else ALREADY_EXISTS_MESSAGE
        return JSONResponse({"success": True, "data": {"message": message, "contactId": contact_id}})

    async def _update(self, request: Request) -> Response:
        try:
            self.state.update(request.path_params["contact_id"], await self._body(request))
        except DmChampError as exc:
            return self._error(exc)
        return JSONResponse({"success": True, "message": "Contact updated successfully"})

    async def _add_to_list(self, request: Request) -> Response:
        try:
            name = self.state.add_to_list(await self._body(request))
        except DmChampError as exc:
            return self._error(exc)
        return JSONResponse({"success": True, "message": f"Contact successfully added to list {name}"})

    async def _remove_from_list(self, request: Request) -> Response:
        try:
            name = self.state.remove_from_list(await self._body(request))
        except DmChampError as exc:
            return self._error(exc)
        return JSONResponse({"success": True, "message": f"Contact successfully removed from list {name}"})

    async def _tags(self, request: Request) -> Response:
        try:
            tags = self.state.contact_tags(request.path_params["contact_id"])
        except DmChampError as exc:
            return self._error(exc)
        return JSONResponse(tags)

    async def _messages(self, request: Request) -> Response:
        try:
            self.state.contact_tags(request.path_params["contact_id"])  # existence check
        except DmChampError as exc:
            return self._error(exc)
        return JSONResponse([])
