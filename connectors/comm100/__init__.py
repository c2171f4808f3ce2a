"""Comm100 (API v4): contacts scanned newest-first, with identities, merges seen via
``mergeToContactId``.

``CONNECTOR`` is :class:`~connectors.comm100.client.Comm100Connector`, ``EMULATOR``
:class:`~connectors.comm100.emulator.Comm100Emulator`; the raw payload is the contact of
``GET /global/contacts?include=contactIdentity``.

``OPTIONS`` and ``CREDENTIALS`` are the connection's settings models (``settings.py``). Names are
resolved on first use, so reading the settings models (config validation) does not import the
HTTP client or the emulator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from connectors.comm100.settings import Comm100Credentials, Comm100Options
from connectors.lazy import lazy_exports

if TYPE_CHECKING:
    from connectors.comm100.client import Comm100Connector
    from connectors.comm100.client import Comm100Connector as CONNECTOR
    from connectors.comm100.emulator import Comm100Emulator
    from connectors.comm100.emulator import Comm100Emulator as EMULATOR

OPTIONS = Comm100Options
CREDENTIALS = Comm100Credentials

__getattr__ = lazy_exports(
    __name__,
    {
        "CONNECTOR": "client:Comm100Connector",
        "Comm100Connector": "client:Comm100Connector",
        "EMULATOR": "emulator:Comm100Emulator",
        "Comm100Emulator": "emulator:Comm100Emulator",
    },
)

__all__ = [
    "CONNECTOR",
    "CREDENTIALS",
    "EMULATOR",
    "OPTIONS",
    "Comm100Connector",
    "Comm100Credentials",
    "Comm100Emulator",
    "Comm100Options",
]
