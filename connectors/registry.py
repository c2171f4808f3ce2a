"""Which platforms exist and where their connector, emulator and settings models live.

Each platform package ``connectors/<platform>/`` exposes ``CONNECTOR`` (a :class:`Connector`
subclass taking ``(settings: ConnectionSettings, transport: httpx.AsyncBaseTransport | None)``),
``EMULATOR`` (its emulator class), and ``OPTIONS`` / ``CREDENTIALS`` (the pydantic models of a
connection's ``options`` and ``credentials``, also ``CONNECTOR.options_model`` /
``CONNECTOR.credentials_model``). Imports are lazy so the CLI starts fast: the settings models
load without the HTTP client or the emulator.
"""

from __future__ import annotations

import importlib
from typing import Any

from connectors.base import ConnectorCredentials, ConnectorOptions

PLATFORMS: tuple[str, ...] = ("acquire", "dmchamp", "gohighlevel", "comm100")


def platform_module(platform: str) -> Any:
    if platform not in PLATFORMS:
        raise KeyError(f"unknown platform {platform!r}; known: {', '.join(PLATFORMS)}")
    return importlib.import_module(f"connectors.{platform}")


def connector_class(platform: str) -> Any:
    """The connector class of a platform."""
    return platform_module(platform).CONNECTOR


def emulator_class(platform: str) -> Any:
    """The emulator class of a platform."""
    return platform_module(platform).EMULATOR


def options_model(platform: str) -> type[ConnectorOptions]:
    """The model of a connection's ``options`` on ``platform``."""
    model: type[ConnectorOptions] = platform_module(platform).OPTIONS
    return model


def credentials_model(platform: str) -> type[ConnectorCredentials]:
    """The model of a connection's ``credentials`` on ``platform``."""
    model: type[ConnectorCredentials] = platform_module(platform).CREDENTIALS
    return model
