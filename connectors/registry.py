"""Which platforms exist and where their connector and emulator live.

Each platform package ``connectors/<platform>/`` exposes ``CONNECTOR`` (a :class:`Connector`
subclass taking ``(settings: ConnectionSettings, transport: httpx.AsyncBaseTransport | None)``)
and ``EMULATOR`` (its emulator class). Imports are lazy so the CLI starts fast.
"""

from __future__ import annotations

import importlib
from typing import Any

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
