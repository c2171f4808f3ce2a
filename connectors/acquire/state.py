"""The Acquire emulator's in-memory contact store: the rules of the CRM contact object, free of
HTTP. The emulator's routes translate requests into calls here and :class:`AcquireError` into
Acquire's typed 400/401 error bodies.

Documented: integer ids, ``fields`` (name, email, phone, city, state, countryId and custom
attribute keys), ``tags`` relation, ``archive``, ``dateCreated``/``dateUpdated`` (ISO-8601 UTC
with milliseconds; ``dateUpdated`` may be null), the merge endpoint keeping both sets of details
on the primary. Everything else here is marked inferred and is a constructor option.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from datetime import datetime
from typing import Any

from email_validator import EmailNotValidError, validate_email

from connectors.acquire.api import (
    ERROR_DUPLICATE_RECORD_FOUND,
    ERROR_INVALID_INPUT,
    ERROR_RECORD_NOT_FOUND,
    LIST_FIELD_KEYS,
    error_body,
    format_time,
)
from connectors.emulation import ValueIndex

JSON = dict[str, Any]
#: The standard keys of ``fields`` (documented); any other key is a custom attribute.
STANDARD_KEYS = ("name", "email", "phone", "city", "state", "countryId")
_DIGITS = re.compile(r"\D")
_PHONE_LIKE = re.compile(r"^[+\d\s().\-]+$")


class AcquireError(Exception):
    """A request Acquire rejects: ``status`` and the documented error ``type``."""

    def __init__(self, status: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message

    def body(self) -> JSON:
        return error_body(self.error_type, self.message, self.status)


def _digits(value: str) -> str:
    return _DIGITS.sub("", value)


def _same_phone(a: str, b: str) -> bool:
    da, db = _digits(a), _digits(b)
    if da == db:
        return bool(da)
    short, long_ = sorted((da, db), key=len)
    return len(short) >= 7 and long_.endswith(short)


class AcquireState:
    """All contacts of one Acquire account.

    Options (all inferred, the docs are silent):
      * ``unique_email``: a create or update whose ``fields.email`` already belongs to another
        contact is rejected with ``ERROR_DUPLICATE_RECORD_FOUND``.
      * ``merge_keeps_details``: a merge appends the sources' differing emails/phones to the
        primary's ``otherEmails``/``otherPhones`` and fills its empty fields from them (the
        docs: "differing details are kept on the primary"); False drops the sources' details.
      * ``null_updated_on_create``: a new contact's ``dateUpdated`` is null until its first
        update (the docs show null ``dateUpdated`` values).
      * ``merge_result`` (variant ``acquire.merge_result``): ``other_fields`` as above,
        ``fill_empty`` (only the primary's empty email/phone take the sources'), ``dropped``.
      * ``ignore_new_attributes`` (variant ``acquire.custom_attributes=ignored``): a ``fields``
        key the account does not define is silently dropped by create/update.
      * ``search`` (variant ``acquire.search``): ``substring``, ``exact`` (equals a stored
        email/phone) or ``none`` (the parameter is ignored).
    """

    def __init__(
        self,
        now: Callable[[], datetime],
        contacts: dict[str, JSON] | None = None,
        deleted: dict[str, JSON] | None = None,
        *,
        unique_email: bool = True,
        merge_keeps_details: bool = True,
        null_updated_on_create: bool = True,
        merge_result: str | None = None,
        ignore_new_attributes: bool = False,
        search: str = "substring",
    ) -> None:
        self._now = now
        # "other_fields" (otherEmails/otherPhones), "fill_empty" or "dropped"; the older
        # boolean ``merge_keeps_details`` picks between the first and the last.
        self.merge_result = merge_result or ("other_fields" if merge_keeps_details else "dropped")
        self.ignore_new_attributes = ignore_new_attributes
        self.search = search
        # Custom attribute keys the account defines (seeds and console edits define them; an
        # API write of another key is ignored when ``ignore_new_attributes``).
        self.defined_attributes: set[str] = set(STANDARD_KEYS)
        self.unique_email = unique_email
        self.merge_keeps_details = merge_keeps_details
        self.null_updated_on_create = null_updated_on_create
        # Keyed by str(id) (the emulator framework's ``contacts``/``deleted``); stored records
        # are full raw payloads (fields and tags included).
        self.contacts: dict[str, JSON] = {} if contacts is None else contacts
        self.deleted: dict[str, JSON] = {} if deleted is None else deleted
        self._last_id = 0
        # Id-ordered contacts: appended to by creates (new ids are the highest), rebuilt after
        # removals and out-of-order seeds.
        self._ordered: list[JSON] | None = None
        self._tag_ids: dict[str, int] = {}
        # fields.email (trimmed, lower case) -> contact ids: the unique-email check.
        self._emails = ValueIndex()
        for contact in self.contacts.values():
            self._index_email(contact)

    # ----------------------------------------------------------------- reads

    def matching(self, search: str | None = None) -> list[JSON]:
        """The stored contacts matching ``search`` (all when None), in id order (inferred: the
        docs do not say how the list is ordered; id order keeps paging stable). The list is
        shared with a cache: read it, never change it."""
        if self._ordered is None or len(self._ordered) != len(self.contacts):
            self._ordered = sorted(self.contacts.values(), key=lambda c: int(c["id"]))
        if search is None or not search.strip() or self.search == "none":
            return self._ordered
        return [c for c in self._ordered if self._matches(c, search)]

    def get(self, contact_id: int, relations: Iterable[str] = ("fields", "tags")) -> JSON:
        return self.render(self._require(contact_id), relations)

    @staticmethod
    def render(contact: JSON, relations: Iterable[str]) -> JSON:
        """A contact as the API shows it: relations appear only when asked for."""
        return copy.deepcopy(AcquireState.view(contact, set(relations)))

    @staticmethod
    def view(contact: JSON, relations: AbstractSet[str]) -> JSON:
        """:meth:`render` without the copy: shares the stored values, so only for a response
        encoded at once (a list page), never for one kept or changed."""
        out = {k: v for k, v in contact.items() if k not in ("fields", "tags")}
        if "fields" in relations:
            out["fields"] = contact["fields"]
        if "tags" in relations:
            out["tags"] = contact["tags"]
        return out

    def _matches(self, contact: JSON, search: str) -> bool:
        # Inferred search semantics: case-insensitive substring over name, emails and phones;
        # a phone-looking query also matches on digits, whatever the stored formatting.
        needle = search.strip().lower()
        if not needle:
            return True
        f = contact["fields"]
        if self.search == "exact":
            exact = [f.get("email"), f.get("phone"), *(f.get("otherEmails") or []), *(f.get("otherPhones") or [])]
            return any(isinstance(t, str) and t.strip().lower() == needle for t in exact)
        others = [*(f.get("otherEmails") or []), *(f.get("otherPhones") or [])]
        texts = [f.get("name"), f.get("email"), f.get("phone"), *others]
        if any(isinstance(t, str) and needle in t.lower() for t in texts):
            return True
        digits = _digits(needle)
        if len(digits) >= 6 and _PHONE_LIKE.match(needle):
            phones = [f.get("phone"), *(f.get("otherPhones") or [])]
            for p in phones:
                if isinstance(p, str) and _same_phone(p, needle):
                    return True
        return False

    # ----------------------------------------------------------------- writes

    def create(self, body: Mapping[str, Any]) -> JSON:
        fields = self._defined(self._fields_from_body(body))
        self._check_unique_email(fields.get("email"), None)
        now = format_time(self._now())
        contact_id = self._next_id()
        contact: JSON = {
            "id": contact_id,
            "archive": "no",
            "companyId": None,
            "dateCreated": now,
            "dateUpdated": None if self.null_updated_on_create else now,
            "fields": {"name": None, "email": None, "phone": None, **fields},
            "tags": [],
        }
        self._insert(contact)
        return self.get(contact_id)

    def update(self, contact_id: int, body: Mapping[str, Any]) -> JSON:
        contact = self._require(contact_id)
        fields = self._defined(self._fields_from_body(body))
        if "email" in fields:
            self._check_unique_email(fields["email"], contact_id)
        contact["fields"].update(fields)
        self._index_email(contact)
        contact["dateUpdated"] = format_time(self._now())
        return self.get(contact_id)

    def delete(self, contact_id: int) -> int:
        self._require(contact_id)
        self._remove(contact_id)
        return 1

    def merge(self, primary_id: int, source_ids: Any) -> JSON:
        """Fold ``source_ids`` into the primary; the sources disappear (documented: not
        reversible; conversations, notes and views move to the primary)."""
        if not isinstance(source_ids, list) or not source_ids:
            raise AcquireError(400, ERROR_INVALID_INPUT, "sourceIds must be a non-empty array of contact ids")
        ids: list[int] = []
        for raw in source_ids:
            if isinstance(raw, bool) or not isinstance(raw, (int, str)) or not str(raw).isdigit():
                raise AcquireError(400, ERROR_INVALID_INPUT, "sourceIds must be contact ids")
            ids.append(int(raw))
        if primary_id in ids:
            raise AcquireError(400, ERROR_INVALID_INPUT, "a contact cannot be merged into itself")
        primary = self._require(primary_id)
        sources = [self._require(i) for i in ids]
        for source in sources:
            if self.merge_result == "other_fields":
                self._fold_details(primary["fields"], source["fields"])
            elif self.merge_result == "fill_empty":
                for key in ("email", "phone"):
                    if primary["fields"].get(key) in (None, "") and source["fields"].get(key) not in (None, ""):
                        primary["fields"][key] = source["fields"][key]
            names = {t["name"] for t in primary["tags"]}
            primary["tags"].extend(copy.deepcopy(t) for t in source["tags"] if t["name"] not in names)
        for i in ids:
            self._remove(i)
        self._index_email(primary)  # a merge keeps the primary's email; indexed all the same
        primary["dateUpdated"] = format_time(self._now())
        return self.get(primary_id)

    @staticmethod
    def _fold_details(target: JSON, source: JSON) -> None:
        def append(key: str, single: str, value: Any) -> None:
            if not isinstance(value, str) or not value:
                return
            # "Differing" details: emails compared case-insensitively, phones by their digits
            # (a national spelling matches its international one).
            have = [h for h in [target.get(single), *(target.get(key) or [])] if isinstance(h, str)]
            if single == "phone":
                same = any(_same_phone(value, h) for h in have)
            else:
                same = value.lower() in {h.lower() for h in have}
            if not same:
                target[key] = [*(target.get(key) or []), value]

        for value in [source.get("email"), *(source.get("otherEmails") or [])]:
            append("otherEmails", "email", value)
        for value in [source.get("phone"), *(source.get("otherPhones") or [])]:
            append("otherPhones", "phone", value)
        for key, value in source.items():
            if key in ("email", "phone", *LIST_FIELD_KEYS):
                continue
            if target.get(key) in (None, "") and value not in (None, ""):
                target[key] = copy.deepcopy(value)

    def _defined(self, fields: JSON) -> JSON:
        if not self.ignore_new_attributes:
            return fields
        return {k: v for k, v in fields.items() if k in self.defined_attributes}

    # ----------------------------------------------------------------- test helpers

    def seed(self, record: Mapping[str, Any]) -> JSON:
        """Insert a contact as given (raw payload shape; missing parts get defaults), without
        validation: seeds may hold what the API would refuse (duplicates, odd phones)."""
        contact_id = int(record["id"]) if record.get("id") is not None else self._next_id()
        if str(contact_id) in self.contacts:
            raise ValueError(f"acquire contact {contact_id} already seeded")
        self._last_id = max(self._last_id, contact_id)
        now = format_time(self._now())
        contact: JSON = {
            "id": contact_id,
            "archive": record.get("archive", "no"),
            "companyId": record.get("companyId"),
            "dateCreated": record.get("dateCreated", now),
            "dateUpdated": record.get("dateUpdated", now),
            "fields": {"name": None, "email": None, "phone": None, **copy.deepcopy(dict(record.get("fields", {})))},
            "tags": [self._tag(t) for t in record.get("tags", [])],
        }
        self.defined_attributes.update(contact["fields"])
        self._insert(contact)
        return contact  # the stored record itself (no copy: seeding is bulk work)

    def apply_edit(self, contact: JSON, changes: Mapping[str, Any]) -> None:
        """An edit made by an agent in the Acquire UI (bypasses API validation): ``fields``
        keys are merged, ``tags`` (names or tag objects) replace the tag list, other top-level
        keys are set."""
        for key, value in changes.items():
            if key == "fields":
                contact["fields"].update(copy.deepcopy(dict(value)))
                self.defined_attributes.update(value)
            elif key == "tags":
                contact["tags"] = [self._tag(t) for t in value]
            elif key != "id":
                contact[key] = copy.deepcopy(value)
        self._index_email(contact)

    def touch(self, contact: JSON) -> None:
        contact["dateUpdated"] = format_time(self._now())

    def _insert(self, contact: JSON) -> None:
        ordered = self._ordered
        if (
            ordered is not None
            and len(ordered) == len(self.contacts)
            and (not ordered or ordered[-1]["id"] < contact["id"])
        ):
            ordered.append(contact)
        else:
            self._ordered = None
        self.contacts[str(contact["id"])] = contact
        self._index_email(contact)

    def _remove(self, contact_id: int) -> None:
        self.deleted[str(contact_id)] = self.contacts.pop(str(contact_id))
        self._emails.drop(contact_id)
        self._ordered = None

    def _index_email(self, contact: JSON) -> None:
        email = contact["fields"].get("email")
        self._emails.put(contact["id"], email.strip().lower() if isinstance(email, str) else None)

    def _next_id(self) -> int:
        # Ids are never reused and stay clear of seeded ones.
        self._last_id += 1
        return self._last_id

    def _tag(self, tag: Any) -> JSON:
        name = tag["name"] if isinstance(tag, Mapping) else str(tag)
        if name not in self._tag_ids:
            self._tag_ids[name] = len(self._tag_ids) + 1
        return {"id": self._tag_ids[name], "name": name}

    # ----------------------------------------------------------------- validation

    def _require(self, contact_id: int) -> JSON:
        contact = self.contacts.get(str(contact_id))
        if contact is None:
            raise AcquireError(400, ERROR_RECORD_NOT_FOUND, f"contact {contact_id} not found")
        return contact

    def _check_unique_email(self, email: Any, own_id: int | None) -> None:
        if not self.unique_email or not isinstance(email, str) or not email:
            return
        if any(holder != own_id for holder in self._emails.holders(email.strip().lower())):
            raise AcquireError(400, ERROR_DUPLICATE_RECORD_FOUND, "a contact with this email already exists")

    @staticmethod
    def _fields_from_body(body: Any) -> JSON:
        """The ``fields`` a create/update body sets: top-level ``name``/``email``/``phone``
        (documented shorthand) plus the ``fields`` object. Tags are read-only (no documented
        write) and are ignored."""
        if not isinstance(body, Mapping):
            raise AcquireError(400, ERROR_INVALID_INPUT, "request body must be a JSON object")
        nested = body.get("fields", {})
        if nested is None:
            nested = {}
        if not isinstance(nested, Mapping):
            raise AcquireError(400, ERROR_INVALID_INPUT, "fields must be an object")
        fields: JSON = {}
        for key in ("name", "email", "phone"):
            if key in body:
                fields[key] = body[key]
        fields.update(copy.deepcopy(dict(nested)))
        for key, value in fields.items():
            if key in LIST_FIELD_KEYS:
                if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
                    raise AcquireError(400, ERROR_INVALID_INPUT, f"fields.{key} must be an array of strings")
            elif value is not None and not isinstance(value, (str, int, float, bool)):
                raise AcquireError(400, ERROR_INVALID_INPUT, f"fields.{key} must be a scalar")
        email = fields.get("email")
        if email not in (None, ""):
            if not isinstance(email, str):
                raise AcquireError(400, ERROR_INVALID_INPUT, "fields.email must be a string")
            try:
                # The reserved .test domain is accepted (test accounts); syntax still checked.
                validate_email(email, check_deliverability=False, test_environment=True)
            except EmailNotValidError:
                raise AcquireError(400, ERROR_INVALID_INPUT, "fields.email is not a valid email address") from None
        phone = fields.get("phone")
        if phone not in (None, "") and (not isinstance(phone, str) or len(_digits(phone)) < 5):
            raise AcquireError(400, ERROR_INVALID_INPUT, "fields.phone is not a valid phone number")
        return fields
