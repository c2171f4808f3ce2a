"""What a DM Champ connection is configured with: its options and credentials."""

from __future__ import annotations

from typing import Any

from pydantic import Field, SecretStr, field_validator

from connectors.base import ConnectorCredentials, ConnectorOptions, optional_id


class DmChampOptions(ConnectorOptions):
    """``list_id``: every contact this connector creates or adopts is put in that contact list
    (``listId`` on create). DM Champ has no list endpoint, so ``page_size`` is unused."""

    list_id: str | None = Field(default=None, description="a DM Champ contact list id")

    @field_validator("list_id", mode="before")
    @classmethod
    def _list_id(cls, value: Any) -> Any:
        # An empty value means no list, as before.
        return optional_id(value, "a DM Champ contact list id") if value not in (None, "") else None


class DmChampCredentials(ConnectorCredentials):
    """``api_key``, sent as the ``apiKey`` query parameter (redacted from logs and errors)."""

    api_key: SecretStr = Field(description="an API key for dmchamp")
