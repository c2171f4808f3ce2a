"""What a Comm100 connection is configured with: its options and credentials."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from connectors.base import ConnectorCredentials, ConnectorOptions, SettingsProblem, optional_id
from connectors.comm100.api import MAX_PAGE_SIZE

_SITE = "the Comm100 site id (needed with agent_email + api_key)"


class Comm100Options(ConnectorOptions):
    """``site_id`` (sent as ``?siteId=``; required with Basic auth); ``page_size`` (default
    100, at most 100); ``overlap_seconds`` (re-read window of the sorted scan, default 30);
    ``read_back`` (default false; true re-reads a written contact, one GET per write, so the
    returned record carries its identities and server stamps); ``merge_via`` (``endpoint`` for
    ``POST /contact/contacts/{id}:merge`` or ``put`` for a PUT of ``mergeToContactId``: both
    inferred, so native merge is off unless chosen)."""

    site_id: str | None = Field(default=None, description="the Comm100 site id")
    page_size: int = Field(default=MAX_PAGE_SIZE, ge=1, description="a page size of at least 1")
    overlap_seconds: float = Field(default=30.0, ge=0, description="a number of seconds")
    read_back: bool = Field(default=False, description="true or false")
    merge_via: Literal["endpoint", "put"] | None = Field(default=None, description="endpoint or put")

    @field_validator("site_id", mode="before")
    @classmethod
    def _site(cls, value: Any) -> Any:
        return None if value in (None, "") else optional_id(value, "the Comm100 site id")


class Comm100Credentials(ConnectorCredentials):
    """``token`` (OAuth2 bearer), or ``agent_email`` + ``api_key`` (HTTP Basic, with option
    ``site_id``)."""

    token: SecretStr | None = None
    agent_email: SecretStr | None = None
    api_key: SecretStr | None = None

    @model_validator(mode="after")
    def _one_way_in(self) -> Comm100Credentials:
        if self.token is None and (self.agent_email is None or self.api_key is None):
            raise ValueError("token, or agent_email and api_key")
        return self

    @property
    def uses_token(self) -> bool:
        return self.token is not None

    def check_options(self, options: ConnectorOptions) -> None:
        if not self.uses_token and not getattr(options, "site_id", None):
            raise SettingsProblem("options.site_id", _SITE, "nothing")
