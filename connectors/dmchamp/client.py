"""The DM Champ connector: a write-mostly target found by phone number or email.

DM Champ cannot list contacts, report changes or return a contact's fields, so this connector
never pulls: the engine pushes persons here and finds them again by lookup. A contact is keyed by
its phone number (required on create, never changeable through the API), so :meth:`create`
looks the number up first and never makes a second contact for it, whichever of the two
documented answers to a duplicate create the account gives ("Contact already exists" or the
existing contact's id).

Settings: :class:`~connectors.dmchamp.settings.DmChampCredentials` (``api_key``, sent as the
``apiKey`` query parameter, so every URL carries it: the shared HTTP layer redacts it from logs
and errors) and :class:`~connectors.dmchamp.settings.DmChampOptions` (``list_id``: every contact
this connector creates or adopts is put in that contact list, ``listId`` on create).
"""

from __future__ import annotations

from collections.abc import Mapping
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
from connectors.dmchamp import behaviours as bh
from connectors.dmchamp.api import (
    ALREADY_EXISTS_MESSAGE,
    CONTACT_LISTS,
    CONTACTS,
    CREATE_DEFAULTS,
    CREATE_KEYS,
    PLACEHOLDER_EMAIL,
    UPDATABLE_KEYS,
    contact_path,
    tags_path,
)
from connectors.dmchamp.settings import DmChampCredentials, DmChampOptions
from connectors.http import HttpConnector
from connectors.pulls import LookupOnlyPull

JSON = dict[str, Any]
log = structlog.get_logger("contactsync.dmchamp")

_ALREADY_EXISTS = ALREADY_EXISTS_MESSAGE.lower().removeprefix("contact ")  # "already exists"


class DmChampConnector(LookupOnlyPull, HttpConnector):
    """One DM Champ account (``https://api.dmchamp.com/v1``)."""

    platform = "dmchamp"
    capabilities = Capabilities(
        pull_mode=PullMode.LOOKUP_ONLY,
        can_create=True,
        can_update=True,
        can_delete=False,
        can_merge=False,
        # create() finds an existing contact by phone number before creating: an upsert.
        can_upsert=True,
        updatable_fields=UPDATABLE_KEYS,
        required_for_create=("phones",),
        lookup_keys=("phone", "email"),
        deletes_detectable=False,
        rate_limit=None,  # none documented
    )
    options_model = DmChampOptions
    credentials_model = DmChampCredentials
    options: DmChampOptions

    def __init__(self, settings: Any, transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(settings, transport)
        self.list_id: str | None = self.options.list_id
        # dmchamp.phone_lookup: unless measured "normalized", a number may be stored as written
        # in the DM Champ UI (14155557181) while we look up +14155557181, and a miss is a
        # duplicate that can be neither listed nor deleted: both spellings are looked up.
        self.phone_spellings_differ = settings.behaviours.get(bh.PHONE_LOOKUP) != "normalized"

    # ----------------------------------------------------------------- hooks

    def auth_params(self) -> dict[str, str]:
        return {"apiKey": self.secret("api_key")}

    def error_message(self, response: httpx.Response) -> str:
        try:
            body = response.json()
        except ValueError:
            return response.text[:200] or response.reason_phrase
        if isinstance(body, str):
            return body[:200]
        return super().error_message(response)

    # LookupOnlyPull: DM Champ has no list or change feed, so nothing is ever pulled.

    # ----------------------------------------------------------------- lookups

    async def lookup(self, keys: Mapping[str, str]) -> str | None:
        """The contact id for ``keys["phone"]`` (E.164, and its spelling without "+" unless the
        lookup is measured to normalize), else ``keys["email"]`` (never the placeholder email a
        create may be given, dmchamp.default_email)."""
        for kind in self.capabilities.lookup_keys:
            value = keys.get(kind)
            if not value:
                continue
            if kind == "phone":
                found = await self.find_phone(value)
            elif value.strip().lower() == PLACEHOLDER_EMAIL:
                continue
            else:
                found = await self._find(email=value)
            if found is not None:
                return found
        return None

    def phone_spellings(self, phone: str) -> list[str]:
        """The spellings of one number a lookup tries: as given, then without (or with) "+"."""
        spellings = [phone]
        if self.phone_spellings_differ:
            other = phone[1:] if phone.startswith("+") else f"+{phone}"
            if other.strip("+").isdigit():
                spellings.append(other)
        return spellings

    async def find_phone(self, phone: str) -> str | None:
        """The contact holding this phone number, in any spelling the lookup may tell apart."""
        for spelling in self.phone_spellings(phone):
            found = await self._find(phone=spelling)
            if found is not None:
                return found
        return None

    async def _find(self, phone: str | None = None, email: str | None = None) -> str | None:
        params = {"phoneNumber": phone} if phone else {"email": email}
        response = await self.http.request("GET", CONTACTS, params=params, allow=(404,))
        if response.status_code == 404:
            return None
        body = _json(response)
        contact_id = body.get("contactId") if isinstance(body, dict) else None
        if not contact_id:
            raise RemoteUnavailable("dmchamp GET /contacts: response has no contactId")
        return str(contact_id)

    async def get(self, remote_id: str) -> RawRecord | None:
        """DM Champ cannot return a contact's fields; there is nothing to read back."""
        raise NotImplementedError("dmchamp has no read API: a contact cannot be fetched by id")

    # ----------------------------------------------------------------- writes

    async def create(self, payload: JSON) -> WriteResult:
        """Create the contact, or adopt the existing one with this phone number (then only
        the updatable keys of ``payload`` are applied to it). ``created`` tells which."""
        phone = payload.get("phoneNumber")
        if not phone:
            # Engines exclude persons without a phone before planning a create (capability
            # required_for_create); this is the guard for anything that did not.
            raise RecordError(400, "dmchamp: phoneNumber is required to create a contact")
        body = {k: v for k, v in payload.items() if k in CREATE_KEYS and v is not None}
        # The list is validated and joined atomically with the create (documented).
        send_body = {**body, "listId": self.list_id} if self.list_id else body
        existing = await self.find_phone(str(phone))
        if existing is not None:
            return await self._adopt(existing, body)

        async def send() -> WriteResult:
            # dmchamp.duplicate_create: "Contact already exists" as a 409, as another 4xx, or a
            # 200 carrying the existing contact's id; all three adopt that contact.
            response = await self.http.request(
                "POST", CONTACTS, json_body=send_body, idempotent=False, allow=(400, 409, 422)
            )
            data = _json(response)
            if response.status_code >= 400:
                message = self.error_message(response)
                if _ALREADY_EXISTS not in message.lower():
                    raise RecordError(
                        response.status_code, f"dmchamp POST {CONTACTS}: {self.http.redact(message)}", data
                    )
                # It appeared since our lookup.
                found = await self.find_phone(str(phone))
                if found is None:
                    raise RecordError(
                        response.status_code, "dmchamp: contact already exists but cannot be found by phone", data
                    )
                return await self._adopt(found, body)
            inner = data.get("data") if isinstance(data, dict) else None
            if not isinstance(inner, dict) or not inner.get("contactId"):
                raise RemoteUnavailable("dmchamp POST /contacts: response has no data.contactId")
            contact_id = inner["contactId"]
            message = str(inner.get("message") or "")
            if _ALREADY_EXISTS in message.lower():
                # The other documented answer: the existing contact's id, nothing changed.
                return await self._adopt(str(contact_id), body)
            return WriteResult(str(contact_id), RawRecord(str(contact_id), _with_defaults(body)), created=True)

        async def recheck() -> WriteResult | None:
            found = await self.find_phone(str(phone))
            if found is None:
                return None
            return WriteResult(found, RawRecord(found, _with_defaults(body)), created=True)

        return await self.http.write_once(send, recheck)

    async def upsert(self, payload: JSON) -> WriteResult:
        """Same as :meth:`create`: DM Champ contacts are unique by phone number."""
        return await self.create(payload)

    async def _adopt(self, contact_id: str, body: JSON) -> WriteResult:
        changes = {k: v for k, v in body.items() if k in UPDATABLE_KEYS}
        if changes:
            await self._put(contact_id, changes)
        if self.list_id:
            await self.add_to_list(contact_id, self.list_id)
        log.info("dmchamp.adopted_existing", connection=self.settings.name)
        # The stored fields beyond what we sent are unknown: no record to return.
        return WriteResult(contact_id, None, created=False, extra={"existing": True})

    async def update(self, remote_id: str, changes: JSON) -> WriteResult:
        """PUT the updatable keys of ``changes`` (firstName, lastName, email, is_bot_active,
        do_not_disturb). Other keys cannot change through the API: they are dropped and
        reported in ``extra["dropped"]``."""
        allowed = {k: v for k, v in changes.items() if k in UPDATABLE_KEYS}
        dropped = sorted(set(changes) - UPDATABLE_KEYS)
        if dropped:
            log.warning("dmchamp.unwritable_keys", connection=self.settings.name, keys=dropped)
        if allowed:
            await self._put(remote_id, allowed)
        return WriteResult(remote_id, None, extra={"dropped": dropped} if dropped else {})

    async def _put(self, contact_id: str, changes: JSON) -> None:
        await self.http.request("PUT", contact_path(contact_id), json_body=changes)

    # ----------------------------------------------------------------- DM Champ extras

    async def add_to_list(self, contact_id: str, list_id: str) -> None:
        """Add a contact to a contact list (``POST /contacts/lists``)."""
        await self.http.request("POST", CONTACT_LISTS, json_body={"contactId": contact_id, "listId": list_id})

    async def remove_from_list(self, contact_id: str, list_id: str) -> None:
        """Remove a contact from a contact list (``DELETE /contacts/lists``)."""
        await self.http.request("DELETE", CONTACT_LISTS, json_body={"contactId": contact_id, "listId": list_id})

    async def tags(self, contact_id: str) -> list[str]:
        """The names of a contact's tags (``GET /contacts/tags/{id}``); NotFound if none."""
        response = await self.http.request("GET", tags_path(contact_id))
        body = _json(response)
        if not isinstance(body, list):
            raise RemoteUnavailable("dmchamp GET /contacts/tags: response is not a list")
        return [str(t.get("name")) for t in body if isinstance(t, dict) and t.get("name")]

    async def exists(self, contact_id: str) -> bool:
        """Whether a contact id exists (via its tags; the API has no get-by-id)."""
        try:
            await self.tags(contact_id)
        except NotFound:
            return False
        return True


def _with_defaults(body: JSON) -> JSON:
    """What a contact we created holds: what we sent, plus the documented defaults of the keys
    we did not send (``do_not_disturb`` false, ``is_bot_active`` true). The engine's snapshot
    then knows them, so a platform-filled value elsewhere (GoHighLevel's ``dnd: false``) is no
    change to write here (issue 15)."""
    return {**CREATE_DEFAULTS, **body}


def _json(response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        raise RemoteUnavailable("dmchamp: response is not JSON") from None
