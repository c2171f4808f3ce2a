"""Facts about Acquire's CRM contact API that the client and the emulator share.

Documented (acquire.io API pages, see /work/shared/PLATFORMS.md): the paths, ``fields`` as the
only writable part of a contact, the typed error names (a missing record is a 400
``ERROR_RECORD_NOT_FOUND``, not a 404) and the timestamp spelling. Marked *inferred* where the
docs are silent. Both sides import these names, so a wrong fact fails a test instead of passing
on both sides of it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

JSON = dict[str, Any]

# --------------------------------------------------------------------------- paths
CONTACTS = "/crm/objects/contact"
CONTACT = "/crm/objects/contact/{contact_id}"
MERGE = "/crm/contact/merge/{primary_id}"  # body {"sourceIds": [...]}


def contact_path(contact_id: str | int) -> str:
    return CONTACT.format(contact_id=contact_id)


def merge_path(primary_id: str | int) -> str:
    return MERGE.format(primary_id=primary_id)


# --------------------------------------------------------------------------- payloads
#: The relations a pull asks for: a raw record is one list item with both.
RELATIONS = ("fields", "tags")
#: Top-level keys a write may carry as shorthands for the same keys of ``fields``.
FIELD_SHORTHANDS = ("name", "email", "phone")
#: Top-level keys of a read contact that are never written (only ``fields`` is writable).
READ_ONLY_KEYS = frozenset({"id", "archive", "companyId", "dateCreated", "dateUpdated", "tags"})
#: Keys of ``fields`` that hold lists (the extra details a merge appends to).
LIST_FIELD_KEYS = ("otherEmails", "otherPhones")

# --------------------------------------------------------------------------- paging
MAX_LIMIT = 100  # inferred: the docs give no maximum; larger limits are refused, not clamped
DEFAULT_LIMIT = 20  # inferred
FIRST_PAGE = 1  # inferred: pages are 1-based (page 0 is the first page too)

# --------------------------------------------------------------------------- errors
ERROR_INVALID_INPUT = "ERROR_INVALID_INPUT"
ERROR_RECORD_NOT_FOUND = "ERROR_RECORD_NOT_FOUND"
ERROR_DUPLICATE_RECORD_FOUND = "ERROR_DUPLICATE_RECORD_FOUND"
ERROR_UNAUTHORIZED = "ERROR_UNAUTHORIZED"


def error_body(error_type: str, message: str, status: int) -> JSON:
    """An error response body. Inferred shape: the docs give the status codes and type names,
    not the JSON layout."""
    return {"error": {"type": error_type, "message": message, "status": status}}


def error_type(body: Any) -> str | None:
    """The error ``type`` of an error body (a bare string ``error`` is accepted too)."""
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        value = err.get("type")
        return value if isinstance(value, str) else None
    return err if isinstance(err, str) else None


# --------------------------------------------------------------------------- time


def format_time(value: datetime) -> str:
    """Acquire's timestamp spelling: ``2020-09-09T10:01:36.000Z``."""
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def parse_time(value: Any) -> datetime | None:
    """Acquire's ``2020-09-09T10:01:36.000Z`` (or null) as an aware UTC datetime."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
