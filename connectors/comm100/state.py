"""The Comm100 emulator's in-memory contact store (API v4 ``/global/contacts``), free of HTTP.

Documented: GUID ids, the flat contact model, ``contactIdentities`` (type, name, value, ...),
``name`` required on create and update, ``mergeToContactId``, DELETE answering 204, the list
filters (``contactIdentityValueSearch``, ``contactIdentityValue``, ``contactKeywords``,
``contactIdentityType``, ``contactIdentityName``, ``include=contactIdentity``) and the list
envelope ``{contacts, nextPage, previousPage, total}``. Paging, sorting, soft deletion and the
merge behaviour are inferred and configurable here.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from connectors.comm100.api import (
    IDENTITY_KEYS,
    IDENTITY_TYPES,
    MAX_PAGE_SIZE,
    PROFILE_KEYS,
    SORT_KEYS,
    ZERO_GUID,
    error_body,
    parse_time,
)

JSON = dict[str, Any]
# A list of contacts; an alias because Comm100State.list (the list endpoint) shadows the builtin in its body.
Rows = list[JSON]
_TYPES_BY_LOWER = {t.lower(): t for t in IDENTITY_TYPES}


class Comm100Error(Exception):
    """A rejected request: ``status`` and a message (inferred body: ``{code, message, errors}``)."""

    def __init__(self, status: int, message: str, errors: list[JSON] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors or []

    def body(self) -> JSON:
        return error_body(self.status, self.message, self.errors)


def validation(field: str, message: str) -> Comm100Error:
    return Comm100Error(400, message, [{"field": field, "message": message}])


def not_found(contact_id: str) -> Comm100Error:
    return Comm100Error(404, f"Contact {contact_id} not found.")


@dataclass(frozen=True)
class ListQuery:
    """The parameters of ``GET /global/contacts``."""

    page_index: int = 1
    page_size: int = 20
    sort_by: str = "createTime"
    sort_order: str = "asc"
    include_deleted: bool = False
    include_identities: bool = False
    identity_value_search: str | None = None
    identity_value: str | None = None
    identity_type: str | None = None
    identity_name: str | None = None
    keywords: str | None = None


class Comm100State:
    """All contacts of one Comm100 site.

    ``contacts`` holds live contacts and ``deleted`` the deleted (``isDeleted: true``) and
    merged-away (non-zero ``mergeToContactId``) ones, both keyed by id (the emulator framework's
    dicts). Stored records always carry ``contactIdentities``; responses include them only when
    asked (``include=contactIdentity``).

    Options (inferred unless noted):
      * ``utc_suffix``: timestamps end in ``Z``; False writes them without a time zone (seen in
        the wild, and the reason the engine never trusts Comm100 timestamps for echo checks).
      * ``soft_delete``: DELETE hides a contact (kept for ``isIncludeDeleted=true`` lists with
        ``isDeleted: true``); False removes it for good.
      * ``put_replaces``: a PUT clears profile keys absent from its body (False: they are kept).
      * ``unique_identities``: an identity (type, value) may belong to one live contact only.
      * ``merge_via_put``: a PUT setting a non-zero ``mergeToContactId`` merges the contact into
        that one (the field is documented as writable; its effect is not).
      * ``honor_client_times``: ``createTime``/``lastUpdatedTime`` in a body are stored as sent
        (False: the server stamps them).
      * ``ignore_undocumented``: POST/PUT store only the documented body keys (``name``,
        ``firstName``, ``lastName``, identities); phone, company, address... are silently
        ignored (variant ``comm100.undocumented_fields=ignored``).
      * ``extend_identities``: identities in a PUT are added to the contact's, never removed
        (variant ``comm100.put_identities=extend``).
    """

    def __init__(
        self,
        now: Callable[[], datetime],
        contacts: dict[str, JSON] | None = None,
        deleted: dict[str, JSON] | None = None,
        *,
        utc_suffix: bool = True,
        soft_delete: bool = True,
        put_replaces: bool = False,
        unique_identities: bool = True,
        merge_via_put: bool = True,
        honor_client_times: bool = False,
        ignore_undocumented: bool = False,
        extend_identities: bool = False,
    ) -> None:
        self._now = now
        self.ignore_undocumented = ignore_undocumented
        self.extend_identities = extend_identities
        self.utc_suffix = utc_suffix
        self.soft_delete = soft_delete
        self.put_replaces = put_replaces
        self.unique_identities = unique_identities
        self.merge_via_put = merge_via_put
        self.honor_client_times = honor_client_times
        self.contacts: dict[str, JSON] = {} if contacts is None else contacts
        self.deleted: dict[str, JSON] = {} if deleted is None else deleted
        self._order: dict[str, int] = {}  # insertion order: the tie-breaker of every sort
        self._by_value: dict[str, set[str]] = {}  # lower-cased identity value -> live contact ids
        self._version = 0  # bumped on every change; keys the sorted-list cache
        self._sorted: dict[tuple[str, bool, bool], tuple[int, list[JSON]]] = {}

    # ----------------------------------------------------------------- time

    def stamp(self, value: datetime | None = None) -> str:
        """Comm100's spelling: ``2021-04-16T10:05:38.7593288Z`` (7 fractional digits)."""
        value = (value or self._now()).astimezone(UTC)
        text = value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond:06d}0"
        return text + ("Z" if self.utc_suffix else "")

    @staticmethod
    def parse(value: str) -> datetime:
        """A Comm100 timestamp (with or without zone, any fraction) as aware UTC."""
        return parse_time(value)

    def touch(self, contact: JSON) -> None:
        contact["lastUpdatedTime"] = self.stamp()
        self._version += 1

    # ----------------------------------------------------------------- reads

    def list(self, q: ListQuery) -> Rows:
        """Every stored contact matching ``q``, sorted as asked (the caller pages)."""
        if q.page_index < 1:
            raise validation("pageIndex", "pageIndex must be 1 or greater.")
        if not 1 <= q.page_size <= MAX_PAGE_SIZE:
            raise validation("pageSize", f"pageSize must be between 1 and {MAX_PAGE_SIZE}.")
        if q.sort_by not in SORT_KEYS:
            raise validation("sortBy", f"sortBy must be one of {', '.join(SORT_KEYS)}.")
        if q.sort_order not in ("asc", "desc"):
            raise validation("sortOrder", "sortOrder must be asc or desc.")
        if q.identity_value is not None:
            # Exact identity value: start from the index instead of scanning every contact.
            ids = self._by_value.get(q.identity_value.lower(), set())
            rows = [self.contacts[i] for i in ids if i in self.contacts]
            if q.include_deleted:
                rows += list(self.deleted.values())
            rows.sort(key=self._sort_key(q.sort_by))
        else:
            rows = self._sorted_rows(q.sort_by, q.include_deleted, q.sort_order == "desc")
        if q.identity_value is not None and q.sort_order == "desc":
            rows = rows[::-1]
        if q.keywords or q.identity_value_search or q.identity_value or q.identity_type or q.identity_name:
            rows = [c for c in rows if self._matches(c, q)]
        return rows

    def _sort_key(self, sort_by: str) -> Callable[[JSON], tuple[Any, int]]:
        def key(c: JSON) -> tuple[Any, int]:
            value = c.get(sort_by)
            if sort_by == "name":
                return (value or "").lower(), self._order.get(c["id"], 0)
            return parse_time(value) if value else _EPOCH, self._order.get(c["id"], 0)

        return key

    def _sorted_rows(self, sort_by: str, include_deleted: bool, descending: bool = False) -> Rows:
        """Every contact sorted (ascending order reversed when ``descending``), cached until the
        next change: a page of a scan is a slice, not a sort or a copy. Read it, never change it."""
        cached = self._sorted.get((sort_by, include_deleted, descending))
        if cached is not None and cached[0] == self._version:
            return cached[1]
        if descending:
            rows = self._sorted_rows(sort_by, include_deleted)[::-1]
        else:
            rows = list(self.contacts.values())
            if include_deleted:
                rows += list(self.deleted.values())
            rows.sort(key=self._sort_key(sort_by))
        self._sorted[(sort_by, include_deleted, descending)] = (self._version, rows)
        return rows

    def get(self, contact_id: str, include_identities: bool = False) -> JSON:
        contact = self.contacts.get(contact_id)
        if contact is None:
            # A merged-away contact stays readable by id so a client can follow
            # mergeToContactId (inferred); a deleted one is gone.
            contact = self.deleted.get(contact_id)
            if contact is None or contact.get("isDeleted"):
                raise not_found(contact_id)
        return self.render(contact, include_identities)

    @staticmethod
    def render(contact: JSON, include_identities: bool) -> JSON:
        return copy.deepcopy(Comm100State.view(contact, include_identities))

    @staticmethod
    def view(contact: JSON, include_identities: bool) -> JSON:
        """:meth:`render` without the copy: shares the stored values, so only for a response
        encoded at once (a list page), never for one kept or changed."""
        out = {k: v for k, v in contact.items() if k != "contactIdentities"}
        if include_identities:
            out["contactIdentities"] = contact.get("contactIdentities") or []
        return out

    @staticmethod
    def _matches(contact: JSON, q: ListQuery) -> bool:
        if q.keywords:
            needle = q.keywords.lower()
            if not any(needle in str(contact.get(k) or "").lower() for k in ("name", "company", "alias")):
                return False
        if not (q.identity_value_search or q.identity_value or q.identity_type or q.identity_name):
            return True
        for ident in contact.get("contactIdentities") or []:
            value = str(ident.get("value") or "")
            if q.identity_value_search and q.identity_value_search.lower() not in value.lower():
                continue
            if q.identity_value and q.identity_value.lower() != value.lower():
                continue
            if q.identity_type and q.identity_type.lower() != str(ident.get("contactIdentityType") or "").lower():
                continue
            if q.identity_name and q.identity_name.lower() != str(ident.get("name") or "").lower():
                continue
            return True
        return False

    # ----------------------------------------------------------------- writes

    def create(self, body: Any) -> JSON:
        body = self._check_body(body)
        contact_id = str(uuid.uuid4())
        identities = self._identities(contact_id, body.get("contactIdentities") or [], [])
        now = self.stamp()
        contact: JSON = {"id": contact_id, **dict.fromkeys(PROFILE_KEYS)}
        contact.update({k: body[k] for k in self._writable_keys() if k in body})
        contact["createTime"] = body["createTime"] if self.honor_client_times and body.get("createTime") else now
        contact["lastUpdatedTime"] = (
            body["lastUpdatedTime"] if self.honor_client_times and body.get("lastUpdatedTime") else now
        )
        contact["mergeToContactId"] = ZERO_GUID
        contact["contactIdentities"] = identities
        self._store(contact)
        return self.render(contact, include_identities=False)

    def update(self, contact_id: str, body: Any) -> JSON:
        contact = self._live(contact_id)
        body = self._check_body(body)
        target = body.get("mergeToContactId")
        if self.merge_via_put and target and target != ZERO_GUID:
            if str(target) not in self.contacts:
                raise validation("mergeToContactId", f"Contact {target} does not exist.")
            self.merge(str(target), contact_id)
            return self.render(self.deleted[contact_id], include_identities=False)
        identities = None
        if "contactIdentities" in body:
            # Inferred: a PUT carrying identities replaces the set (or, extending, adds to it);
            # identities matching an existing (type, value) keep their ids.
            sent = list(body["contactIdentities"] or [])
            if self.extend_identities:
                sent = [*contact["contactIdentities"], *sent]
            identities = self._identities(contact_id, sent, contact["contactIdentities"])
        elif self.put_replaces:
            identities = []
        for key in self._writable_keys():
            if key in body:
                contact[key] = body[key]
            elif self.put_replaces:
                contact[key] = None
        if identities is not None:
            self._unindex(contact)
            contact["contactIdentities"] = identities
            self._index(contact)
        contact["lastUpdatedTime"] = (
            body["lastUpdatedTime"] if self.honor_client_times and body.get("lastUpdatedTime") else self.stamp()
        )
        self._version += 1
        return self.render(contact, include_identities=False)

    def delete(self, contact_id: str) -> None:
        contact = self._live(contact_id)
        self._unindex(contact)
        del self.contacts[contact_id]
        if self.soft_delete:
            contact["isDeleted"] = True
            contact["lastUpdatedTime"] = self.stamp()
            self.deleted[contact_id] = contact
        self._version += 1

    def merge(self, survivor_id: str, loser_id: str) -> JSON:
        """Merge ``loser_id`` into ``survivor_id`` (as an agent does in the console): the
        survivor gains the loser's identities and its empty profile values; the loser keeps its
        data, points at the survivor through ``mergeToContactId`` and is hidden from lists."""
        if survivor_id == loser_id:
            raise validation("mergeToContactId", "A contact cannot be merged into itself.")
        survivor = self._live(survivor_id)
        loser = self._live(loser_id)
        self._unindex(loser)
        have = {_ident_key(i) for i in survivor["contactIdentities"]}
        for ident in loser["contactIdentities"]:
            if _ident_key(ident) not in have:
                moved = copy.deepcopy(ident)
                moved["id"] = str(uuid.uuid4())
                moved["contactId"] = survivor_id
                survivor["contactIdentities"].append(moved)
        self._index(survivor)
        for key in PROFILE_KEYS:
            if survivor.get(key) in (None, "") and loser.get(key) not in (None, ""):
                survivor[key] = loser[key]
        now = self.stamp()
        survivor["lastUpdatedTime"] = now
        loser["mergeToContactId"] = survivor_id
        loser["lastUpdatedTime"] = now
        self.deleted[loser_id] = self.contacts.pop(loser_id)
        self._version += 1
        return self.render(survivor, include_identities=True)

    # ----------------------------------------------------------------- test helpers

    def seed(self, record: Mapping[str, Any]) -> JSON:
        """Insert a contact as given (raw payload shape), without API validation. A record
        with a non-zero ``mergeToContactId`` or ``isDeleted`` is stored as merged/deleted."""
        contact_id = str(record.get("id") or uuid.uuid4())
        now = self.stamp()
        contact: JSON = {"id": contact_id, **dict.fromkeys(PROFILE_KEYS)}
        contact.update({k: copy.deepcopy(v) for k, v in record.items() if k != "contactIdentities"})
        contact.setdefault("createTime", now)
        contact.setdefault("lastUpdatedTime", contact["createTime"])
        contact["mergeToContactId"] = record.get("mergeToContactId") or ZERO_GUID
        contact["contactIdentities"] = [
            {
                "id": ident.get("id") or str(uuid.uuid4()),
                "contactId": contact_id,
                **{k: ident.get(k) for k in IDENTITY_KEYS},
            }
            for ident in record.get("contactIdentities") or []
        ]
        self._order.setdefault(contact_id, len(self._order))
        if contact.get("isDeleted") or contact["mergeToContactId"] != ZERO_GUID:
            self.deleted[contact_id] = contact
        else:
            self.contacts[contact_id] = contact
            self._index(contact)
        self._version += 1
        return contact  # the stored record itself (no copy: seeding is bulk work)

    def apply_edit(self, contact: JSON, changes: Mapping[str, Any]) -> None:
        """An agent's edit in the console: profile keys and/or a full identity list (no
        uniqueness check: the console is not the API)."""
        for key, value in changes.items():
            if key == "contactIdentities":
                identities = self._identities(contact["id"], value, contact["contactIdentities"], check_unique=False)
                self._unindex(contact)
                contact["contactIdentities"] = identities
                self._index(contact)
            elif key not in ("id", "mergeToContactId", "createTime", "isDeleted"):
                contact[key] = copy.deepcopy(value)
        self._version += 1

    # ----------------------------------------------------------------- internals

    def _writable_keys(self) -> tuple[str, ...]:
        if self.ignore_undocumented:
            return DOCUMENTED_WRITE_KEYS
        return PROFILE_KEYS

    def _store(self, contact: JSON) -> None:
        self.contacts[contact["id"]] = contact
        self._order.setdefault(contact["id"], len(self._order))
        self._index(contact)
        self._version += 1

    def _index(self, contact: JSON) -> None:
        for ident in contact.get("contactIdentities") or []:
            self._by_value.setdefault(str(ident.get("value") or "").lower(), set()).add(contact["id"])

    def _unindex(self, contact: JSON) -> None:
        for ident in contact.get("contactIdentities") or []:
            ids = self._by_value.get(str(ident.get("value") or "").lower())
            if ids is not None:
                ids.discard(contact["id"])

    def _live(self, contact_id: str) -> JSON:
        contact = self.contacts.get(contact_id)
        if contact is None:
            raise not_found(contact_id)
        return contact

    @staticmethod
    def _check_body(body: Any) -> JSON:
        if not isinstance(body, Mapping):
            raise Comm100Error(400, "The request body must be a JSON object.")
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            raise validation("name", "The name field is required.")
        for key in PROFILE_KEYS:
            if body.get(key) is not None and not isinstance(body[key], str):
                raise validation(key, f"The {key} field must be a string.")
        idents = body.get("contactIdentities")
        if idents is not None and not isinstance(idents, list):
            raise validation("contactIdentities", "contactIdentities must be an array.")
        return dict(body)

    def _identities(self, contact_id: str, raw: Iterable[Any], existing: Rows, check_unique: bool = True) -> Rows:
        by_key = {_ident_key(i): i for i in existing}
        out: Rows = []
        seen: set[tuple[str, str]] = set()
        for item in raw:
            if not isinstance(item, Mapping):
                raise validation("contactIdentities", "Each contact identity must be an object.")
            kind = str(item.get("contactIdentityType") or "")
            if kind.lower() not in _TYPES_BY_LOWER:
                raise validation("contactIdentityType", f"Invalid contactIdentityType {kind!r}.")
            value = item.get("value")
            if not isinstance(value, str) or not value.strip():
                raise validation("value", "The contact identity value is required.")
            key = (kind.lower(), value.lower())
            if key in seen:
                continue
            seen.add(key)
            if check_unique and self.unique_identities and self._owned_elsewhere(key, contact_id):
                raise Comm100Error(
                    400,
                    f"The contact identity {kind} {value} is already used by another contact.",
                    [{"field": "contactIdentities", "message": "duplicate contact identity"}],
                )
            old = by_key.get(key)
            ident: JSON = {"id": old["id"] if old else str(uuid.uuid4()), "contactId": contact_id}
            ident.update({k: item.get(k, old.get(k) if old else None) for k in IDENTITY_KEYS})
            out.append(ident)
        return out

    def _owned_elsewhere(self, key: tuple[str, str], contact_id: str) -> bool:
        for cid in self._by_value.get(key[1], ()):
            if cid == contact_id or cid not in self.contacts:
                continue
            if any(_ident_key(i) == key for i in self.contacts[cid]["contactIdentities"]):
                return True
        return False


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: The profile keys POST/PUT document (seed 004 lines 84-92, 113-121).
DOCUMENTED_WRITE_KEYS = ("name", "firstName", "lastName")


def _ident_key(ident: Mapping[str, Any]) -> tuple[str, str]:
    return str(ident.get("contactIdentityType") or "").lower(), str(ident.get("value") or "").lower()
