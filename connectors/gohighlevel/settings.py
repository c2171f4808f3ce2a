"""What a GoHighLevel connection is configured with: its options and credentials."""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, SecretStr, field_validator, model_validator

from connectors.base import ConnectorCredentials, ConnectorOptions, SettingsProblem, optional_id
from connectors.gohighlevel.api import DEFAULT_OVERLAP_SECONDS, DEFAULT_VERSION, MAX_PAGE_LIMIT, SDK_VERSION

_LOCATION = "the GoHighLevel location (sub-account) id"
_VERSION = f"an API version date such as {DEFAULT_VERSION}, or {SDK_VERSION}"


class GoHighLevelOptions(ConnectorOptions):
    """``location_id`` (required); ``version`` (the ``Version`` header, default 2021-07-28;
    2021-04-15 also accepted); ``page_size`` (search ``pageLimit``, default and maximum 500);
    ``overlap_seconds`` (how far back an incremental search re-reads, default 10 s: GoHighLevel
    documents "a few seconds" of search delay); ``custom_field_ids`` (the location's custom
    field key -> id, so written items carry the id the spec requires)."""

    #: Required, except on an agency (``oauth.user_type: Company``) connection, which only
    #: derives location tokens and lists installed locations (see the credentials' check).
    location_id: str | None = Field(default=None, description=_LOCATION)
    #: OAuth mode: refresh the access token when it has less than this many seconds left.
    refresh_margin_s: float = Field(default=300.0, ge=0, description="a number of seconds")
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


OAUTH_KEYS = ("client_id", "client_secret", "user_type", "company_id", "app_id", "agency")


class GoHighLevelCredentials(ConnectorCredentials):
    """Either ``token`` (a Private Integration token, ``Authorization: Bearer``) or OAuth
    marketplace mode: ``oauth: {client_id, client_secret, user_type, company_id, app_id,
    agency}`` in the YAML, which the config loader flattens to ``oauth.client_id`` and so on.
    In OAuth mode the tokens themselves live in the store (``contactsync connections
    authorize``); ``agency`` names a Company connection whose token derives this location's."""

    token: SecretStr | None = Field(default=None, description="a GoHighLevel access token")

    def oauth(self) -> dict[str, str]:
        """The ``oauth.*`` values, unwrapped (empty: token mode)."""
        extra = self.model_extra or {}
        out = {}
        for key in OAUTH_KEYS:
            value = extra.get(f"oauth.{key}")
            if value is not None:
                out[key] = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
        return out

    def check_options(self, options: ConnectorOptions) -> None:
        if getattr(options, "location_id", None) is None and self.oauth().get("user_type") != "Company":
            raise SettingsProblem("options.location_id", _LOCATION, "nothing")

    @model_validator(mode="after")
    def _token_or_oauth(self) -> GoHighLevelCredentials:
        extra = self.model_extra or {}
        unknown = sorted(k for k in extra if k.startswith("oauth.") and k[6:] not in OAUTH_KEYS)
        if unknown:
            raise ValueError(f"oauth keys among {', '.join(OAUTH_KEYS)} (unknown: {', '.join(unknown)})")
        oauth = self.oauth()
        if self.token is not None and oauth:
            raise ValueError("either token or oauth, not both")
        if self.token is None and not oauth:
            raise ValueError("token (a Private Integration token) or oauth: {client_id, client_secret}")
        if oauth and not oauth.get("agency") and not (oauth.get("client_id") and oauth.get("client_secret")):
            raise ValueError("oauth.client_id and oauth.client_secret")
        if oauth.get("user_type", "Location") not in ("Company", "Location"):
            raise ValueError("oauth.user_type Company or Location")
        return self


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
