"""Facts about Comm100's API v4 contacts that the client and the emulator share.

Documented: the ``/global/contacts`` paths, GUID ids, the flat contact model and its identity
types, ``name`` required on every write, the list envelope ``{contacts, nextPage,
previousPage, total}`` and the rate limit (300 calls per 5 minutes per IP). Inferred (see
PLATFORMS.md): paging and sorting parameters, the page-size maximum, the zero GUID of an unmerged
contact and the merge endpoint of the newer API family.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from connectors.base import RateLimit

JSON = dict[str, Any]

# --------------------------------------------------------------------------- paths
CONTACTS = "/global/contacts"
CONTACT = "/global/contacts/{contact_id}"
MERGE = "/contact/contacts/{contact_id}:merge"  # inferred (newer API family), body {contactId}


def contact_path(contact_id: str) -> str:
    return CONTACT.format(contact_id=contact_id)


def merge_path(survivor_id: str) -> str:
    return MERGE.format(contact_id=survivor_id)


RATE_LIMIT = RateLimit(300, 300.0)  # documented: 300 calls per 5 minutes per IP

# --------------------------------------------------------------------------- payloads
ZERO_GUID = "00000000-0000-0000-0000-000000000000"
IDENTITY_TYPES = (
    "visitor",
    "Email",
    "SMS",
    "facebook",
    "twitter",
    "wechat",
    "SSOID",
    "externalID",
    "whatsApp",
    "instagram",
    "telegram",
    "line",
    "SecureMessaging",
)
PROFILE_KEYS = (
    "name",
    "description",
    "firstName",
    "lastName",
    "alias",
    "title",
    "company",
    "fax",
    "phone",
    "mailingAddress",
    "city",
    "stateOrProvince",
    "countryOrRegion",
    "postalOrZipCode",
)
IDENTITY_KEYS = ("contactIdentityType", "name", "value", "avatarUrl", "infoUrl", "screenName", "originalContactPageUrl")
SORT_KEYS = ("lastUpdatedTime", "createTime", "name")
MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20  # inferred
#: Keys the server owns: never sent in a create/update body.
SERVER_KEYS = frozenset({"id", "createTime", "lastUpdatedTime", "mergeToContactId", "isDeleted"})
#: Identity types (lower case) that carry a phone number.
PHONE_IDENTITY_TYPES = frozenset({"sms", "whatsapp"})


def error_body(status: int, message: str, errors: list[JSON] | None = None) -> JSON:
    """An error response body (inferred shape: ``{code, message, errors}``)."""
    body: JSON = {"code": status, "message": message}
    if errors:
        body["errors"] = errors
    return body


def parse_time(value: str) -> datetime:
    """A Comm100 timestamp (with or without a zone, any number of fraction digits) as aware
    UTC; a value without a zone is taken as UTC."""
    text = value.strip().replace("Z", "+00:00")
    head, sep, rest = text.partition(".")
    if sep:
        digits = ""
        for ch in rest:
            if not ch.isdigit():
                break
            digits += ch
        zone = rest[len(digits) :]
        text = f"{head}.{digits[:6].ljust(6, '0')}{zone}"
    parsed = datetime.fromisoformat(text)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
