"""The canonical contact: the one shape every platform's record is read into and written from.

Two views of the same data:

* :class:`Contact`, a pydantic model, for code and for people (config, printing, tests);
* a *field dict* (``dict[str, FieldValue]``), flat and hashable, for the engine. Reconcile,
  snapshots and plans work on field dicts because a three-way merge is per field, and a flat
  dict with plain values is trivially JSON-able and comparable.

Field names of the flat view (``FIELD_NAMES`` plus the open families ``custom.<key>``):

    first_name, last_name, emails, phones, company, address.line, address.city,
    address.state, address.postal_code, address.country, website, timezone, tags,
    do_not_disturb, identities, custom.<key>

Value types: ``str`` for scalars, ``bool`` for do_not_disturb, ``tuple[str, ...]`` for the
ordered lists (emails, phones; the first is primary), ``frozenset[str]`` for tags, and
``frozenset[str]`` of ``"<type>:<value>"`` for identities. ``None`` means "no value".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from pydantic import BaseModel, ConfigDict, Field

FieldValue = str | bool | tuple[str, ...] | frozenset[str] | None
FieldDict = dict[str, FieldValue]

SCALAR_FIELDS: tuple[str, ...] = (
    "first_name",
    "last_name",
    "company",
    "address.line",
    "address.city",
    "address.state",
    "address.postal_code",
    "address.country",
    "website",
    "timezone",
)
LIST_FIELDS: tuple[str, ...] = ("emails", "phones")
SET_FIELDS: tuple[str, ...] = ("tags", "identities")
BOOL_FIELDS: tuple[str, ...] = ("do_not_disturb",)
FIELD_NAMES: tuple[str, ...] = SCALAR_FIELDS + LIST_FIELDS + SET_FIELDS + BOOL_FIELDS
CUSTOM_PREFIX = "custom."


def is_known_field(name: str) -> bool:
    """True for a canonical field name, including ``custom.<key>``."""
    return name in FIELD_NAMES or (name.startswith(CUSTOM_PREFIX) and len(name) > len(CUSTOM_PREFIX))


def field_kind(name: str) -> str:
    """``scalar``, ``list``, ``set`` or ``bool``: how values of the field compare and merge."""
    if name in LIST_FIELDS:
        return "list"
    if name in SET_FIELDS:
        return "set"
    if name in BOOL_FIELDS:
        return "bool"
    return "scalar"


def is_empty(value: FieldValue) -> bool:
    """An absent value: None, "", or an empty collection (False is a value, not empty)."""
    if value:  # a non-empty string or collection, True: most values (one truth test)
        return False
    return value is None or value == "" or (isinstance(value, (tuple, frozenset)) and len(value) == 0)


def members(value: FieldValue) -> tuple[str, ...] | frozenset[str]:
    """The items of a list or set field's value, none for an absent one: ``value or ()``, typed
    for those fields (a caller that knows the field's kind knows the value is a collection)."""
    return cast("tuple[str, ...] | frozenset[str]", value or ())


def coerce_value(name: str, value: Any) -> FieldValue:
    """Bring a JSON-ish value (lists from a snapshot, say) into the field's canonical type."""
    if value is None:
        return None
    kind = field_kind(name)
    if kind == "list":
        return tuple(str(v) for v in value)
    if kind == "set":
        return frozenset(str(v) for v in value)
    if kind == "bool":
        return bool(value)
    return str(value)


def to_json_value(value: FieldValue) -> Any:
    """The JSON form of a field value: sets become sorted lists, tuples lists."""
    if isinstance(value, frozenset):
        return sorted(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def fields_to_json(fields: Mapping[str, FieldValue]) -> dict[str, Any]:
    """A field dict as plain JSON (for snapshots, plans and the outbox)."""
    # (a string is its own JSON form: most values, without the call)
    return {k: v if type(v) is str else to_json_value(v) for k, v in sorted(fields.items())}


# Fields whose values are not plain strings (``field_kind`` other than ``scalar``).
_NOT_SCALAR = frozenset(LIST_FIELDS + SET_FIELDS + BOOL_FIELDS)


def fields_from_json(data: Mapping[str, Any]) -> FieldDict:
    """Inverse of :func:`fields_to_json`."""
    out: FieldDict = {}
    for k, v in data.items():
        # A string of a scalar field is its own canonical value (``coerce_value``: ``str(v)``).
        out[k] = v if type(v) is str and k not in _NOT_SCALAR else coerce_value(k, v)
    return out


class Address(BaseModel):
    """A postal address; every part optional."""

    model_config = ConfigDict(frozen=True)

    line: str | None = None
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None
    country: str | None = None


class Identity(BaseModel):
    """A channel identity such as a Facebook id or an external id: (type, value)."""

    model_config = ConfigDict(frozen=True)

    type: str
    value: str

    def token(self) -> str:
        return f"{self.type}:{self.value}"

    @classmethod
    def from_token(cls, token: str) -> Identity:
        kind, _, value = token.partition(":")
        return cls(type=kind, value=value)


class Contact(BaseModel):
    """The canonical contact (DESIGN.md, "The canonical contact")."""

    model_config = ConfigDict(frozen=True)

    first_name: str | None = None
    last_name: str | None = None
    emails: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()
    company: str | None = None
    address: Address = Field(default_factory=Address)
    website: str | None = None
    timezone: str | None = None
    tags: frozenset[str] = frozenset()
    do_not_disturb: bool | None = None
    custom_fields: dict[str, str] = Field(default_factory=dict)
    identities: frozenset[Identity] = frozenset()

    def to_fields(self) -> FieldDict:
        """The flat field dict; empty values are left out."""
        out: FieldDict = {
            "first_name": self.first_name,
            "last_name": self.last_name,
            "emails": self.emails,
            "phones": self.phones,
            "company": self.company,
            "address.line": self.address.line,
            "address.city": self.address.city,
            "address.state": self.address.state,
            "address.postal_code": self.address.postal_code,
            "address.country": self.address.country,
            "website": self.website,
            "timezone": self.timezone,
            "tags": self.tags,
            "do_not_disturb": self.do_not_disturb,
            "identities": frozenset(i.token() for i in self.identities),
        }
        for key, value in self.custom_fields.items():
            out[CUSTOM_PREFIX + key] = value
        return {k: v for k, v in out.items() if not is_empty(v)}

    @classmethod
    def from_fields(cls, fields: Mapping[str, FieldValue]) -> Contact:
        """Build a contact from a (possibly partial) field dict."""
        f = {k: coerce_value(k, v) for k, v in fields.items()}
        custom = {
            k[len(CUSTOM_PREFIX) :]: str(v) for k, v in f.items() if k.startswith(CUSTOM_PREFIX) and v is not None
        }
        return cls(
            first_name=f.get("first_name"),  # type: ignore[arg-type]
            last_name=f.get("last_name"),  # type: ignore[arg-type]
            emails=f.get("emails") or (),  # type: ignore[arg-type]
            phones=f.get("phones") or (),  # type: ignore[arg-type]
            company=f.get("company"),  # type: ignore[arg-type]
            address=Address(
                line=f.get("address.line"),  # type: ignore[arg-type]
                city=f.get("address.city"),  # type: ignore[arg-type]
                state=f.get("address.state"),  # type: ignore[arg-type]
                postal_code=f.get("address.postal_code"),  # type: ignore[arg-type]
                country=f.get("address.country"),  # type: ignore[arg-type]
            ),
            website=f.get("website"),  # type: ignore[arg-type]
            timezone=f.get("timezone"),  # type: ignore[arg-type]
            tags=f.get("tags") or frozenset(),  # type: ignore[arg-type]
            do_not_disturb=f.get("do_not_disturb"),  # type: ignore[arg-type]
            custom_fields=custom,
            identities=frozenset(Identity.from_token(t) for t in (f.get("identities") or ())),  # type: ignore[union-attr]
        )


def same_json_value(a: Any, b: Any) -> bool:
    """Canonical JSON values equal (empties alike, lists as sets of their items' text)."""
    empty: tuple[Any, ...] = (None, "", [], {})
    if a in empty or b in empty:
        return a in empty and b in empty
    if isinstance(a, list) and isinstance(b, list):
        return sorted(map(repr, a)) == sorted(map(repr, b))
    return bool(a == b)


def deep_merge_json(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` on top, nested objects merged key by key (a raw payload with a
    partial write's body applied)."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge_json(out[key], value)
        else:
            out[key] = value
    return out
