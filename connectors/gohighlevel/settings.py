"""What a GoHighLevel connection is configured with: its options and credentials."""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, SecretStr, field_validator

from connectors.base import ConnectorCredentials, ConnectorOptions, optional_id
from connectors.gohighlevel.api import DEFAULT_OVERLAP_SECONDS, DEFAULT_VERSION, MAX_PAGE_LIMIT

_LOCATION = "the GoHighLevel location (sub-account) id"
_VERSION = f"an API version date such as {DEFAULT_VERSION}"


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
        if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            raise ValueError(_VERSION)
        return value


class GoHighLevelCredentials(ConnectorCredentials):
    """``token``: a Private Integration or OAuth access token (``Authorization: Bearer``)."""

    token: SecretStr = Field(description="a GoHighLevel access token")
