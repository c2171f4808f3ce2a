"""Hypothesis strategies: canonical values each platform can hold, and raw payloads in each
platform's shape (with the messy formatting real data has: national phone formats, email case
and whitespace, invalid values, double spaces in names)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from sync.canonical import CUSTOM_PREFIX, FieldDict, field_kind
from sync.mapping import FieldMapping

WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyzÀÉÖßñçAZQ'-", min_size=1, max_size=10).filter(
    lambda s: s.strip() == s and s[0] not in "'-"
)
TEXT = st.lists(WORD, min_size=1, max_size=3).map(" ".join)
EMAIL = st.from_regex(r"[a-z][a-z0-9]{0,7}(\.[a-z0-9]{1,5})?@[a-z]{2,8}\.(com|org|io|co\.uk)", fullmatch=True)
# US numbers with valid area/exchange codes, and UK mobiles: E.164 and national forms.
_US = st.tuples(st.integers(201, 989), st.integers(200, 999), st.integers(0, 9999))
_UK = st.integers(7_000_000_000, 7_999_999_999)
PHONE = st.one_of(
    _US.map(lambda t: f"+1{t[0]}{t[1]}{t[2]:04d}"),
    _UK.map(lambda n: f"+44{n}"),
)
RAW_PHONE = st.one_of(
    _US.flatmap(
        lambda t: st.sampled_from(
            [
                f"+1{t[0]}{t[1]}{t[2]:04d}",
                f"+1 {t[0]} {t[1]} {t[2]:04d}",
                f"({t[0]}) {t[1]}-{t[2]:04d}",
                f"{t[0]}.{t[1]}.{t[2]:04d}",
                f" {t[0]}-{t[1]}-{t[2]:04d} ",
                f"001 {t[0]} {t[1]} {t[2]:04d}",
            ]
        )
    ),
    _UK.map(lambda n: f"+44 {str(n)[:4]} {str(n)[4:]}"),
)
RAW_EMAIL = EMAIL.flatmap(lambda e: st.sampled_from([e, e.upper(), f" {e} ", e.capitalize()]))
INVALID = st.sampled_from(["not-an-email", "bad@", "12", "call me", "@@"])
TAG = st.text(alphabet="abcdefghijklmnopqrstuvwxyz:-_ ", min_size=1, max_size=10).filter(lambda s: s.strip() == s)
CUSTOM_KEY = st.from_regex(r"x_[a-z]{1,6}", fullmatch=True)
IDENTITY = st.one_of(
    st.integers(1, 10**9).map(lambda n: f"facebook:{n}"),
    st.from_regex(r"[a-z][a-z0-9_]{0,9}", fullmatch=True).map(lambda s: f"instagram:{s}"),
    st.from_regex(r"[a-z][a-z0-9_]{0,9}", fullmatch=True).map(lambda s: f"twitter:{s}"),
    st.from_regex(r"[A-Z]{1,3}-[0-9]{1,5}", fullmatch=True).map(lambda s: f"externalid:{s}"),
    st.from_regex(r"[A-Za-z0-9]{4,12}", fullmatch=True).map(lambda s: f"ssoid:{s}"),
    PHONE.map(lambda p: f"whatsapp:{p}"),
)


def _value(name: str) -> st.SearchStrategy[Any]:
    if name == "emails":
        return st.lists(EMAIL, min_size=1, max_size=3, unique=True).map(tuple)
    if name == "phones":
        return st.lists(PHONE, min_size=1, max_size=3, unique=True).map(tuple)
    if name == "tags":
        return st.frozensets(TAG, min_size=1, max_size=4)
    if name == "identities":
        return st.frozensets(IDENTITY, min_size=1, max_size=3)
    if field_kind(name) == "bool":
        return st.booleans()
    if name == "first_name":
        return st.one_of(WORD, TEXT)
    return TEXT


@st.composite
def canonical(draw: st.DrawFn, mapping: FieldMapping) -> FieldDict:
    """A field dict over the mapping's two-way fields, trimmed to what the platform can hold:
    values a lens cannot hold are dropped, fields may be None (clear) or absent (leave)."""
    names = sorted(mapping.readable & mapping.writable)
    out: FieldDict = {}
    for name in names:
        if name == "custom.*":
            for key, value in draw(st.dictionaries(CUSTOM_KEY, st.one_of(TEXT, st.none()), max_size=3)).items():
                out[CUSTOM_PREFIX + key] = value
            continue
        choice = draw(st.sampled_from(["value", "value", "none", "absent"]))
        if choice == "value":
            out[name] = draw(_value(name))
        elif choice == "none":
            out[name] = None
    for lens in mapping.lenses:
        mine = {k: v for k, v in out.items() if lens.owns(k)}
        if mine and not lens.holds(mine, mapping.default_region):
            for key in mine:
                out.pop(key)
    assert mapping.holds(out)
    return out


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    # Raw payloads both omit keys and carry nulls; keep some of each.
    return {k: v for k, v in d.items() if not (v is None and hash(k) % 2)}


@st.composite
def raw_acquire(draw: st.DrawFn) -> dict[str, Any]:
    name = draw(_maybe(st.one_of(TEXT, st.lists(WORD, min_size=2, max_size=3).map("  ".join))))
    fields: dict[str, Any] = {
        "name": name,
        "email": draw(_maybe(st.one_of(RAW_EMAIL, INVALID))),
        "phone": draw(_maybe(st.one_of(RAW_PHONE, INVALID))),
        "city": draw(_maybe(TEXT)),
        "state": draw(_maybe(TEXT)),
        "countryId": draw(_maybe(st.integers(1, 250))),
    }
    if draw(st.booleans()):
        fields["otherEmails"] = draw(st.lists(st.one_of(RAW_EMAIL, INVALID), max_size=3))
    if draw(st.booleans()):
        fields["otherPhones"] = draw(st.lists(RAW_PHONE, max_size=2))
    fields.update(draw(st.dictionaries(CUSTOM_KEY, st.one_of(TEXT, st.integers(0, 99), st.just("")), max_size=3)))
    return {
        "id": draw(st.integers(1, 10**6)),
        "archive": "no",
        "companyId": None,
        "dateCreated": "2020-09-09T10:01:36.000Z",
        "dateUpdated": draw(st.sampled_from([None, "2021-01-02T03:04:05.000Z"])),
        "fields": _drop_none(fields),
        "tags": [{"id": i, "name": t} for i, t in enumerate(draw(st.lists(TAG, max_size=3, unique=True)))],
    }


@st.composite
def raw_dmchamp(draw: st.DrawFn) -> dict[str, Any]:
    return _drop_none(
        {
            "phoneNumber": draw(RAW_PHONE),
            "firstName": draw(_maybe(WORD)),
            "lastName": draw(_maybe(TEXT)),
            "email": draw(_maybe(RAW_EMAIL)),
            "externalId": draw(_maybe(st.from_regex(r"[A-Z]{1,3}-[0-9]{1,5}", fullmatch=True))),
            "instagramId": draw(_maybe(st.from_regex(r"@?[A-Za-z][A-Za-z0-9_]{0,9}", fullmatch=True))),
            "is_bot_active": draw(st.booleans()),
            "do_not_disturb": draw(st.booleans()),
        }
    )


@st.composite
def raw_gohighlevel(draw: st.DrawFn) -> dict[str, Any]:
    custom_ids = draw(st.lists(st.from_regex(r"[A-Za-z0-9]{20}", fullmatch=True), max_size=3, unique=True))
    return _drop_none(
        {
            "id": draw(st.from_regex(r"[A-Za-z0-9]{20}", fullmatch=True)),
            "locationId": "ve9EPM428h8vShlRW1KT",
            "firstName": draw(_maybe(TEXT)),
            "lastName": draw(_maybe(TEXT)),
            "email": draw(_maybe(RAW_EMAIL)),
            "phone": draw(_maybe(st.one_of(RAW_PHONE, INVALID))),
            "companyName": draw(_maybe(TEXT)),
            "address1": draw(_maybe(TEXT)),
            "city": draw(_maybe(TEXT)),
            "state": draw(_maybe(TEXT)),
            "postalCode": draw(_maybe(st.from_regex(r"[0-9]{5}", fullmatch=True))),
            "country": draw(_maybe(st.sampled_from(["US", "GB", "DE"]))),
            "website": draw(_maybe(st.just("https://example.com"))),
            "timezone": draw(_maybe(st.just("America/Chicago"))),
            "dnd": draw(_maybe(st.booleans())),
            "tags": draw(st.lists(TAG, max_size=3, unique=True)),
            "customFields": [{"id": i, "value": draw(st.one_of(TEXT, st.just("")))} for i in custom_ids],
            "dateAdded": "2021-07-02T05:18:26.704Z",
            "dateUpdated": "2021-07-02T05:18:26.704Z",
        }
    )


_C100_TYPES = ["Email", "SMS", "facebook", "Twitter", "twitter", "externalID", "SSOID", "whatsApp", "visitor", "line"]


@st.composite
def raw_comm100(draw: st.DrawFn) -> dict[str, Any]:
    contact_id = "6f1d4c1e-2b7a-4c1e-9a51-0d1f2e3c4b5a"
    identities = []
    for i in range(draw(st.integers(0, 5))):
        kind = draw(st.sampled_from(_C100_TYPES))
        if kind == "Email":
            value = draw(st.one_of(RAW_EMAIL, INVALID))
        elif kind in ("SMS", "whatsApp"):
            value = draw(RAW_PHONE)
        elif kind in ("Twitter", "twitter"):
            value = draw(st.from_regex(r"@?[A-Za-z][A-Za-z0-9_]{0,8}", fullmatch=True))
        else:
            value = draw(st.from_regex(r"[A-Za-z0-9-]{1,10}", fullmatch=True))
        identities.append(
            {"id": f"id-{i}", "contactId": contact_id, "contactIdentityType": kind, "name": "", "value": value}
        )
    return {
        "id": contact_id,
        "name": draw(TEXT),
        "firstName": draw(_maybe(TEXT)),
        "lastName": draw(_maybe(TEXT)),
        "alias": draw(_maybe(WORD)),
        "title": None,
        "company": draw(_maybe(TEXT)),
        "phone": draw(_maybe(st.one_of(RAW_PHONE, INVALID))),
        "mailingAddress": draw(_maybe(TEXT)),
        "city": draw(_maybe(TEXT)),
        "stateOrProvince": draw(_maybe(TEXT)),
        "countryOrRegion": draw(_maybe(TEXT)),
        "postalOrZipCode": draw(_maybe(st.from_regex(r"[0-9]{5}", fullmatch=True))),
        "createTime": "2024-01-01T00:00:00Z",
        "lastUpdatedTime": "2024-01-02T00:00:00Z",
        "mergeToContactId": "00000000-0000-0000-0000-000000000000",
        "contactIdentities": identities,
    }


RAW: dict[str, Any] = {
    "acquire": raw_acquire(),
    "dmchamp": raw_dmchamp(),
    "gohighlevel": raw_gohighlevel(),
    "comm100": raw_comm100(),
}
