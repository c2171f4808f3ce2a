"""What an Acquire connection is configured with: its options and credentials."""

from __future__ import annotations

from pydantic import Field, SecretStr

from connectors.acquire.api import MAX_LIMIT
from connectors.base import ConnectorCredentials, ConnectorOptions


class AcquireOptions(ConnectorOptions):
    """``page_size``: contacts per list request (default and most the emulator accepts: 100;
    Acquire documents no maximum). ``read_ahead_pages``: pages requested ahead of the one being
    staged (default 1; Acquire documents no rate limit; 0 turns it off)."""

    page_size: int = Field(default=MAX_LIMIT, ge=1, description="a page size of at least 1")
    read_ahead_pages: int = Field(default=1, description="a number of pages (0 turns read-ahead off)")


class AcquireCredentials(ConnectorCredentials):
    """``api_key``, sent as ``Authorization: Bearer``."""

    api_key: SecretStr = Field(description="an API key for acquire")
