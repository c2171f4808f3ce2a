"""GoHighLevel (LeadConnector API v2): a change feed through search, tags by endpoint, upsert.

``CONNECTOR`` is :class:`~connectors.gohighlevel.client.GoHighLevelConnector`, ``EMULATOR``
:class:`~connectors.gohighlevel.emulator.GoHighLevelEmulator`; the raw payload is the contact of
``POST /contacts/search``.

``OPTIONS`` and ``CREDENTIALS`` are the connection's settings models (``settings.py``). Names are
resolved on first use, so reading the settings models (config validation) does not import the
HTTP client or the emulator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from connectors.gohighlevel.settings import GoHighLevelCredentials, GoHighLevelOptions

if TYPE_CHECKING:
    from connectors.gohighlevel.client import GoHighLevelConnector
    from connectors.gohighlevel.emulator import GoHighLevelEmulator

OPTIONS = GoHighLevelOptions
CREDENTIALS = GoHighLevelCredentials


def __getattr__(name: str) -> Any:
    if name in ("CONNECTOR", "GoHighLevelConnector"):
        from connectors.gohighlevel.client import GoHighLevelConnector

        return GoHighLevelConnector
    if name in ("EMULATOR", "GoHighLevelEmulator"):
        from connectors.gohighlevel.emulator import GoHighLevelEmulator

        return GoHighLevelEmulator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CONNECTOR",
    "CREDENTIALS",
    "EMULATOR",
    "OPTIONS",
    "GoHighLevelConnector",
    "GoHighLevelCredentials",
    "GoHighLevelEmulator",
    "GoHighLevelOptions",
]
