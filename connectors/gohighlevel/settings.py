"""What a GoHighLevel connection is configured with: its options and credentials."""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, SecretStr, field_validator

from connectors.base import ConnectorCredentials, ConnectorOptions, optional_id
from connectors.gohighlevel.api import DEFAULT_OVERLAP_SECONDS, DEFAULT_VERSION, MAX_PAGE_LIMIT, SDK_VERSION

_LOCATION = "the GoHighLevel location (sub-account) id"
_VERSION = f"an API version date such as {DEFAULT_VERSION}, or {SDK_VERSION}"


class GoHighLevelOptions(ConnectorOptions):
    """``location_id`` (required); ``version`` (the ``Version`` header, default 2021-07-28;
    2021-04-15 also accepted); ``page_size`` (search ``pageLimit``, default and maximum 500);
    ``overlap_seconds`` (how far back an incremental search re-reads, default 10 s: GoHighLevel
    documents "a few seconds" of search delay); ``custom_field_ids`` (the location's custom
    field key -> id, so written items carry the id the spec requires)."""

    location_id: str = Field(description=_LOCATION)
    version: str = Field(default=DEFAULT_VERSION, description=_VERSION)
    page_size: int = Field(default=MAX_PAGE_LIMIT, ge=1, description="a page size of at least 1")
    overlap_seconds: float = Field(default=DEFAULT_OVERLAP_SECONDS, ge=0, description="a number of seconds")
    custom_field_ids: dict[str, str] = Field(default_factory=dict, description="a mapping of custom field key to id")

    @field_validator("location_id", mode="before")
    @classmethod
    def _location(cls, value: Any) -> Any:
        return optional_id(value, _LOCATION)

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, value: Any) -> Any:
        if not isinstance(value, str) or not (value == SDK_VERSION or re.fullmatch(r"\d{4}-\d{2}-\d{2}", value)):
            raise ValueError(_VERSION)
        return value

    @field_validator("custom_field_ids", mode="after")
    @classmethod
    def _custom_ids(cls, value: dict[str, str]) -> dict[str, str]:
        # key -> id. An id written as the key (the pair reversed) would make that id a field key
        # on every other platform: refused at load time.
        for key, fid in value.items():
            if looks_like_field_id(key) and not looks_like_field_id(fid):
                raise ValueError(
                    f"a mapping of custom field key to id; {key!r} looks like a field id used as a key "
                    f"(write {fid}: {key})"
                )
        return value


def looks_like_field_id(text: str) -> bool:
    """Whether ``text`` looks like a GoHighLevel id (20 letters and digits, mixed case), not a
    key a person would choose."""
    return bool(re.fullmatch(r"[A-Za-z0-9]{20}", text) and re.search(r"[A-Z]", text) and re.search(r"[a-z]", text))


class GoHighLevelCredentials(ConnectorCredentials):
    """``token``: a Private Integration or OAuth access token (``Authorization: Bearer``)."""

    token: SecretStr = Field(description="a GoHighLevel access token")


def custom_field_warnings(where: str, options: Any, mapping_overrides: Any, conflict_fields: Any) -> list[str]:
    """Config-level checks of a GoHighLevel connection's custom fields (``config check``): a raw
    field id used where a key belongs would be written as a field *named* after that id on every
    other platform (issue 15). ``custom_field_ids`` reversed is refused by the options model."""
    out: list[str] = []
    fields = (mapping_overrides or {}).get("fields") if isinstance(mapping_overrides, dict) else None
    entry = fields.get("custom.*") if isinstance(fields, dict) else None
    ids = entry.get("ids") if isinstance(entry, dict) else None
    for fid, key in (ids or {}).items() if isinstance(ids, dict) else ():
        if looks_like_field_id(str(key)):
            out.append(
                f"{where}.mapping_overrides.fields.custom.*.ids.{fid}: the key {key!r} looks like a GoHighLevel "
                "field id; ids map a field id to the key it is known by elsewhere (id: key)"
            )
    names = [*(fields or {})] if isinstance(fields, dict) else []
    names += [*(conflict_fields or {})] if isinstance(conflict_fields, dict) else []
    for name in names:
        key = str(name).removeprefix("custom.")
        if str(name).startswith("custom.") and looks_like_field_id(key):
            out.append(
                f"{where}: custom.{key} looks like a GoHighLevel field id used as a key; name the field by its "
                "key (fieldKey without 'contact.') or name: ids are discovered from the location"
            )
    return out
