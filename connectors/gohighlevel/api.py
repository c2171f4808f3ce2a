"""Facts about GoHighLevel's contact API (LeadConnector v2) that the client and the emulator
share: paths, versions, limits, raw payload types and field sets, after the official OpenAPI
spec (``apps/contacts.json`` of GoHighLevel/highlevel-api-docs).

The spec's schemas list no required fields and no nullable strings: a string field is a
string or absent. These TypedDicts document the shapes; the code handles plain dicts.
"""

from __future__ import annotations

from typing import Any, TypedDict

from connectors.base import RateLimit

DATED_VERSIONS: tuple[str, ...] = ("2021-07-28", "2021-04-15")  # spec, seed page
SDK_VERSION = "v3"  # what the official PyPI SDK 3.x sends on every call
API_VERSIONS: tuple[str, ...] = (*DATED_VERSIONS, SDK_VERSION)
DEFAULT_VERSION = "2021-07-28"
BASE_URL = "https://services.leadconnectorhq.com"

# --------------------------------------------------------------------------- paths
SEARCH = "/contacts/search"  # POST: filters, sort, pageLimit, searchAfter
DUPLICATE = "/contacts/search/duplicate"  # GET ?locationId=&number=|email=
UPSERT = "/contacts/upsert"
CREATE = "/contacts/"  # the trailing slash is the spec's
CONTACT = "/contacts/{contactId}"
CONTACT_TAGS = "/contacts/{contactId}/tags"  # POST|DELETE {tags: [...]}
# GET -> {customFields: [{id, name, fieldKey: "contact.<key>", dataType, model, ...}]} (the
# official SDK's locations service; not in the contacts spec).
CUSTOM_FIELDS = "/locations/{locationId}/customFields"


def custom_fields_path(location_id: str) -> str:
    return CUSTOM_FIELDS.format(locationId=location_id)


def contact_path(contact_id: str) -> str:
    return CONTACT.format(contactId=contact_id)


def tags_path(contact_id: str) -> str:
    return CONTACT_TAGS.format(contactId=contact_id)


# --------------------------------------------------------------------------- limits
RATE_LIMIT = RateLimit(100, 10.0)  # documented burst: 100 requests per 10 s per location
DAILY_LIMIT = 200_000  # documented: per app per location
MAX_PAGE_LIMIT = 500  # search pageLimit maximum
MAX_STANDARD_RESULTS = 10_000  # page + pageLimit reach this far; beyond it searchAfter
#: Search is eventually consistent ("a few seconds", documented as possible): how far back an
#: incremental pull re-reads by default.
DEFAULT_OVERLAP_SECONDS = 10.0


class CustomFieldValue(TypedDict, total=False):
    """``customFields`` item as read back: ``{"id", "value"}``."""

    id: str
    value: Any


class Contact(TypedDict, total=False):
    """The contact object (GetContectByIdSchema; search results add ``searchAfter``)."""

    id: str
    locationId: str
    firstName: str
    lastName: str
    name: str
    email: str
    phone: str
    companyName: str
    address1: str
    city: str
    state: str
    postalCode: str
    country: str
    website: str
    timezone: str
    dnd: bool
    type: str
    source: str
    tags: list[str]
    customFields: list[CustomFieldValue]
    dateAdded: str
    dateUpdated: str


# Body keys of CreateContactDto / UpsertContactDto (both also take locationId).
CREATE_FIELDS: frozenset[str] = frozenset(
    {
        "firstName",
        "lastName",
        "name",
        "email",
        "gender",
        "phone",
        "address1",
        "city",
        "state",
        "postalCode",
        "website",
        "timezone",
        "dnd",
        "dndSettings",
        "inboundDndSettings",
        "tags",
        "customFields",
        "source",
        "dateOfBirth",
        "country",
        "companyName",
        "assignedTo",
    }
)
UPSERT_FIELDS: frozenset[str] = CREATE_FIELDS | {"createNewIfDuplicateAllowed"}
# Body keys of UpdateContactDto. The spec omits companyName here; GoHighLevel accepts it on
# update in practice (inferred), so the connector sends it and the emulator's strictness is an
# option.
UPDATE_FIELDS_SPEC: frozenset[str] = frozenset(
    {
        "firstName",
        "lastName",
        "name",
        "email",
        "phone",
        "address1",
        "city",
        "state",
        "postalCode",
        "website",
        "timezone",
        "dnd",
        "dndSettings",
        "inboundDndSettings",
        "tags",
        "customFields",
        "source",
        "dateOfBirth",
        "country",
        "assignedTo",
    }
)
UPDATE_FIELDS: frozenset[str] = UPDATE_FIELDS_SPEC | {"companyName"}
# Keys of a read contact that are never written back.
READ_ONLY_FIELDS: frozenset[str] = frozenset(
    {
        "id",
        "locationId",
        "dateAdded",
        "dateUpdated",
        "searchAfter",
        "type",
        "emailLowerCase",
        "firstNameLowerCase",
        "lastNameLowerCase",
        "fullNameLowerCase",
        "lastActivity",
        "deleted",
        "attributions",
        "followers",
        "businessId",
    }
)


# --------------------------------------------------------------------------- webhooks
# Contact events of a marketplace app's webhooks (docs: webhook/ContactCreate ... ), delivered
# as a flat contact payload plus ``type``, ``locationId``, ``id``, ``timestamp``, ``webhookId``.
CONTACT_EVENTS: tuple[str, ...] = (
    "ContactCreate",
    "ContactUpdate",
    "ContactDelete",
    "ContactDndUpdate",
    "ContactTagUpdate",
)
SIGNATURE_HEADER = "x-ghl-signature"  # Ed25519 over the raw body, base64
LEGACY_SIGNATURE_HEADER = "x-wh-signature"  # RSA-SHA256 (PKCS#1 v1.5) over the raw body, base64
#: GoHighLevel retries a delivery only when answered 429, up to this many times (~10 min apart).
WEBHOOK_MAX_RETRIES = 6
WEBHOOK_RETRY_INTERVAL_S = 600.0
