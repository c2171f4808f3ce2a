"""The DM Champ emulator's in-memory contact store, free of HTTP.

DM Champ's API cannot list contacts or read one back; it can find a contact's id by phone number
or email, create, update five keys, manage list membership and read tags. The store still holds
every contact in full so tests can assert on what reached the platform (:meth:`records`).

Documented: ``phoneNumber`` required on create (with country code), ``firstName``/``lastName``
default "Unknown", ``is_bot_active`` default true, ``do_not_disturb`` default false, list
assignment on create (``listId``/``listIds``, all lists validated first, atomically), 404 when a
lookup finds nothing. Where the docs disagree or are silent the behaviour is an option.
"""

from __future__ import annotations

import copy
import re
import secrets
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal, cast

from email_validator import EmailNotValidError, validate_email

from connectors.dmchamp.api import ALREADY_EXISTS_MESSAGE, BOOL_KEYS, CREATE_KEYS, PLACEHOLDER_EMAIL, UPDATABLE_KEYS
from connectors.emulation import ValueIndex

JSON = dict[str, Any]

# "must include valid country code": a plus sign, then 8..15 digits.
_INTL_PHONE = re.compile(r"^\+[1-9]\d{7,14}$")
_PHONE_JUNK = re.compile(r"[\s().\-]")

DuplicatePolicy = Literal["error", "return_existing"]
ExtraKeyPolicy = Literal["reject", "ignore"]


class DmChampError(Exception):
    """A rejected request: HTTP ``status`` and the JSON body DM Champ answers with."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(str(body))
        self.status = status
        self.body = body


def bad_request(message: str) -> DmChampError:
    # The docs' 400 schema is "a string, or an object with an error string"; the object it is.
    return DmChampError(400, {"error": message})


def not_found(message: str = "Contact not found") -> DmChampError:
    return DmChampError(404, {"success": False, "message": message})


def compact_phone(raw: str) -> str:
    """The phone number as stored and matched: separators removed."""
    return _PHONE_JUNK.sub("", raw.strip())


def phone_digits(raw: str) -> str:
    """The digits of a phone number (the ``normalized`` phone lookup compares these)."""
    return re.sub(r"\D", "", raw)


class DmChampState:
    """All contacts, lists and tags of one DM Champ account.

    Options:
      * ``on_duplicate_phone``: the docs disagree on a create with a phone number that already
        exists: ``"error"`` answers 409 "Contact already exists", ``"return_existing"`` answers
        200 with the existing contact's id (nothing is changed on it).
      * ``extra_update_keys`` (inferred): an update carrying keys other than the five
        documented ones is ``"reject"``-ed with a 400 or has them ``"ignore"``-d.
      * ``auto_create_lists`` (inferred): a list id never seen before is created on first use
        instead of answering "List not found".
      * ``duplicate_status`` (``dmchamp.duplicate_create``): the status of the "Contact already
        exists" error (409 or 400); ``on_duplicate_phone`` says whether it is an error at all.
      * ``phone_lookup`` (``dmchamp.phone_lookup``): ``"exact"`` matches the number as stored
        (separators aside: ``14155557181`` is not ``+14155557181``), ``"normalized"`` its digits;
        the same rule decides whether a create is a duplicate.
      * ``default_email`` (``dmchamp.default_email``): ``"placeholder"`` stores
        :data:`PLACEHOLDER_EMAIL` on a create without an email.
    """

    def __init__(
        self,
        now: Callable[[], datetime],
        contacts: dict[str, JSON] | None = None,
        *,
        on_duplicate_phone: DuplicatePolicy = "error",
        extra_update_keys: ExtraKeyPolicy = "reject",
        auto_create_lists: bool = False,
        duplicate_status: int = 409,
        phone_lookup: str = "exact",
        default_email: str = "none",
    ) -> None:
        if on_duplicate_phone not in ("error", "return_existing"):
            raise ValueError("on_duplicate_phone must be 'error' or 'return_existing'")
        if extra_update_keys not in ("reject", "ignore"):
            raise ValueError("extra_update_keys must be 'reject' or 'ignore'")
        self._now = now
        self.on_duplicate_phone = on_duplicate_phone
        self.extra_update_keys = extra_update_keys
        self.auto_create_lists = auto_create_lists
        self.duplicate_status = duplicate_status
        self.phone_lookup = phone_lookup
        self.default_email = default_email
        self._digits: dict[str, str] = {}  # phone digits -> contact id (the normalized lookup)
        # Keyed by contact id (the emulator framework's ``contacts``); each stored record is
        # the contact in full, its ``id`` included.
        self.contacts: dict[str, JSON] = {} if contacts is None else contacts
        self._phones: dict[str, str] = {}  # compact phone -> contact id (the lookup key)
        self._emails = ValueIndex()  # trimmed lower-case email -> contact ids (the other one)
        for contact in self.contacts.values():
            self._index_email(contact)
        # list id -> {"name": ..., "members": set of contact ids}
        self.lists: dict[str, JSON] = {}
        self.tags: dict[str, list[JSON]] = {}

    # ----------------------------------------------------------------- API operations

    def find(self, phone: str | None, email: str | None) -> str:
        """The id of the contact with this phone number, else with this email."""
        if not phone and not email:
            raise bad_request("phoneNumber or email is required")
        if phone:
            found = self._by_phone(compact_phone(phone))
            if found is not None:
                return found
        if email:
            found = cast("str | None", self._emails.first(email.strip().lower()))
            if found is not None:
                return str(found)
        raise not_found()

    def create(self, body: Any) -> tuple[str, bool]:
        """Create a contact; returns ``(contactId, created)`` (``created`` False when an
        existing contact is returned under ``return_existing``)."""
        if not isinstance(body, Mapping):
            raise bad_request("Request body must be a JSON object")
        phone = body.get("phoneNumber")
        if phone in (None, ""):
            raise bad_request("phoneNumber is required")
        if not isinstance(phone, str) or not _INTL_PHONE.match(compact_phone(phone)):
            raise bad_request("phoneNumber must include a valid country code")
        phone = compact_phone(phone)
        self._check_email(body.get("email"))
        self._check_bools(body)
        list_ids = self._list_ids(body)
        existing = self._by_phone(phone)
        if existing is not None:
            if self.on_duplicate_phone == "error":
                raise DmChampError(self.duplicate_status, {"success": False, "message": ALREADY_EXISTS_MESSAGE})
            return existing, False
        contact: JSON = {k: copy.deepcopy(v) for k, v in body.items() if k in CREATE_KEYS}
        contact["phoneNumber"] = phone
        contact.setdefault("firstName", "Unknown")
        contact.setdefault("lastName", "Unknown")
        if self.default_email == "placeholder" and not contact.get("email"):
            contact["email"] = PLACEHOLDER_EMAIL
        contact.setdefault("is_bot_active", True)
        contact.setdefault("do_not_disturb", False)
        contact.setdefault("isChatWindowOpen", False)
        contact_id = secrets.token_hex(12)
        contact["id"] = contact_id
        contact["createdAt"] = self.stamp()
        contact["updatedAt"] = contact["createdAt"]
        self.contacts[contact_id] = contact
        self._phones[phone] = contact_id
        self._digits.setdefault(phone_digits(phone), contact_id)
        self._index_email(contact)
        for list_id in list_ids:
            self.lists[list_id]["members"].add(contact_id)
        return contact_id, True

    def update(self, contact_id: str, body: Any) -> None:
        contact = self._require(contact_id)
        if not isinstance(body, Mapping):
            raise bad_request("Request body must be a JSON object")
        extra = sorted(set(body) - UPDATABLE_KEYS)
        if extra and self.extra_update_keys == "reject":
            raise bad_request(f"Fields cannot be updated: {', '.join(extra)}")
        changes = {k: v for k, v in body.items() if k in UPDATABLE_KEYS}
        self._check_email(changes.get("email"))
        self._check_bools(changes)
        for key in ("firstName", "lastName"):
            if key in changes and changes[key] is not None and not isinstance(changes[key], str):
                raise bad_request(f"{key} must be a string")
        contact.update(copy.deepcopy(changes))
        self._index_email(contact)
        contact["updatedAt"] = self.stamp()

    def add_to_list(self, body: Any) -> str:
        contact_id, list_id = self._list_body(body)
        self._require(contact_id)
        lst = self._require_list(list_id)
        lst["members"].add(contact_id)
        return str(lst["name"])

    def remove_from_list(self, body: Any) -> str:
        contact_id, list_id = self._list_body(body)
        self._require(contact_id)
        lst = self._require_list(list_id)
        lst["members"].discard(contact_id)
        return str(lst["name"])

    def contact_tags(self, contact_id: str) -> list[JSON]:
        self._require(contact_id)
        return copy.deepcopy(self.tags.get(contact_id, []))

    # ----------------------------------------------------------------- test helpers

    def seed(self, record: Mapping[str, Any]) -> str:
        """Insert a contact as given (``id`` optional), without API validation."""
        contact_id = str(record.get("id") or secrets.token_hex(12))
        contact = {k: copy.deepcopy(v) for k, v in record.items() if k not in ("tags", "listIds")}
        contact["id"] = contact_id
        if contact.get("phoneNumber"):
            contact["phoneNumber"] = compact_phone(str(contact["phoneNumber"]))
            self._phones.setdefault(contact["phoneNumber"], contact_id)
            self._digits.setdefault(phone_digits(contact["phoneNumber"]), contact_id)
        contact.setdefault("is_bot_active", True)
        contact.setdefault("do_not_disturb", False)
        contact.setdefault("createdAt", self.stamp())
        contact.setdefault("updatedAt", contact["createdAt"])
        self.contacts[contact_id] = contact
        self._index_email(contact)
        if record.get("tags"):
            self.tags[contact_id] = [
                dict(t) if isinstance(t, Mapping) else {"name": str(t), "description": ""} for t in record["tags"]
            ]
        for list_id in record.get("listIds", []) or []:
            self.add_list(list_id)["members"].add(contact_id)
        return contact_id

    def add_list(self, list_id: str, name: str | None = None) -> JSON:
        """Make a list exist (lists are created in the DM Champ UI, not through this API)."""
        return self.lists.setdefault(list_id, {"name": name or list_id, "members": set()})

    def apply_edit(self, contact: JSON, changes: Mapping[str, Any]) -> None:
        """An edit made in the DM Champ UI (any key, the phone number included)."""
        old_phone = contact.get("phoneNumber")
        contact.update({k: copy.deepcopy(v) for k, v in changes.items() if k != "id"})
        self._index_email(contact)
        if "phoneNumber" in changes:
            if self._phones.get(str(old_phone)) == contact["id"]:
                del self._phones[str(old_phone)]
            if self._digits.get(phone_digits(str(old_phone))) == contact["id"]:
                del self._digits[phone_digits(str(old_phone))]
            if changes["phoneNumber"]:
                contact["phoneNumber"] = compact_phone(str(changes["phoneNumber"]))
                self._phones.setdefault(contact["phoneNumber"], contact["id"])
                self._digits.setdefault(phone_digits(contact["phoneNumber"]), contact["id"])

    # ----------------------------------------------------------------- internals

    def stamp(self) -> str:
        """Now as ISO-8601 UTC (the emulator's own bookkeeping; the API never shows it)."""
        return self._now().astimezone(UTC).isoformat().replace("+00:00", "Z")

    def _index_email(self, contact: JSON) -> None:
        email = contact.get("email")
        self._emails.put(contact["id"], email.strip().lower() if isinstance(email, str) else None)

    def _by_phone(self, phone: str) -> str | None:
        found = self._digits.get(phone_digits(phone)) if self.phone_lookup == "normalized" else self._phones.get(phone)
        return found if found is not None and found in self.contacts else None

    def _require(self, contact_id: str) -> JSON:
        contact = self.contacts.get(contact_id)
        if contact is None:
            raise not_found()
        return contact

    def _require_list(self, list_id: str) -> JSON:
        if list_id not in self.lists:
            if not self.auto_create_lists:
                raise DmChampError(404, {"success": False, "message": "List not found"})
            self.add_list(list_id)
        return self.lists[list_id]

    def _list_ids(self, body: Mapping[str, Any]) -> list[str]:
        # Documented: listIds takes precedence over listId; every list is validated before the
        # contact is created, so a bad list id creates nothing.
        raw = body.get("listIds")
        if raw is None:
            raw = [body["listId"]] if body.get("listId") else []
        if not isinstance(raw, list) or not all(isinstance(i, str) and i for i in raw):
            raise bad_request("listIds must be an array of list ids")
        for list_id in raw:
            self._require_list(list_id)
        return list(raw)

    @staticmethod
    def _list_body(body: Any) -> tuple[str, str]:
        if not isinstance(body, Mapping) or not body.get("contactId") or not body.get("listId"):
            raise bad_request("contactId and listId are required")
        return str(body["contactId"]), str(body["listId"])

    @staticmethod
    def _check_email(email: Any) -> None:
        if email in (None, ""):
            return
        if not isinstance(email, str):
            raise bad_request("email must be a string")
        try:
            # test_environment: the reserved ``.test`` domain is accepted (test accounts use it);
            # the syntax and the other special-use names are still checked.
            validate_email(email, check_deliverability=False, test_environment=True)
        except EmailNotValidError:
            raise bad_request("email must be a valid email address") from None

    @staticmethod
    def _check_bools(body: Mapping[str, Any]) -> None:
        for key in BOOL_KEYS:
            if key in body and not isinstance(body[key], bool):
                raise bad_request(f"{key} must be a boolean")
