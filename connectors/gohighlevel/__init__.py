"""GoHighLevel (LeadConnector API v2): a change feed through search, tags by endpoint, upsert.

``CONNECTOR`` is :class:`~connectors.gohighlevel.client.GoHighLevelConnector`, ``EMULATOR``
:class:`~connectors.gohighlevel.emulator.GoHighLevelEmulator`; the raw payload is the contact of
``POST /contacts/search``.

``OPTIONS`` and ``CREDENTIALS`` are the connection's settings models (``settings.py``). Names are
resolved on first use, so reading the settings models (config validation) does not import the
HTTP client or the emulator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from connectors.gohighlevel.settings import GoHighLevelCredentials, GoHighLevelOptions
from connectors.lazy import lazy_exports

if TYPE_CHECKING:
    from connectors.gohighlevel.client import GoHighLevelConnector
    from connectors.gohighlevel.client import GoHighLevelConnector as CONNECTOR
    from connectors.gohighlevel.emulator import GoHighLevelEmulator
    from connectors.gohighlevel.emulator import GoHighLevelEmulator as EMULATOR

OPTIONS = GoHighLevelOptions
CREDENTIALS = GoHighLevelCredentials

__getattr__ = lazy_exports(
    __name__,
    {
        "CONNECTOR": "client:GoHighLevelConnector",
        "GoHighLevelConnector": "client:GoHighLevelConnector",
        "EMULATOR": "emulator:GoHighLevelEmulator",
        "GoHighLevelEmulator": "emulator:GoHighLevelEmulator",
    },
)

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
