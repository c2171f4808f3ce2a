"""DM Champ (dmchamp.com): a lookup-only, write-mostly target keyed by phone number.

``CONNECTOR`` is :class:`~connectors.dmchamp.client.DmChampConnector`, ``EMULATOR``
:class:`~connectors.dmchamp.emulator.DmChampEmulator`; the raw payload is the body we created or
updated (DM Champ has no read API).

``OPTIONS`` and ``CREDENTIALS`` are the connection's settings models (``settings.py``). Names are
resolved on first use, so reading the settings models (config validation) does not import the
HTTP client or the emulator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from connectors.dmchamp.settings import DmChampCredentials, DmChampOptions
from connectors.lazy import lazy_exports

if TYPE_CHECKING:
    from connectors.dmchamp.client import DmChampConnector
    from connectors.dmchamp.client import DmChampConnector as CONNECTOR
    from connectors.dmchamp.emulator import DmChampEmulator
    from connectors.dmchamp.emulator import DmChampEmulator as EMULATOR

OPTIONS = DmChampOptions
CREDENTIALS = DmChampCredentials

__getattr__ = lazy_exports(
    __name__,
    {
        "CONNECTOR": "client:DmChampConnector",
        "DmChampConnector": "client:DmChampConnector",
        "EMULATOR": "emulator:DmChampEmulator",
        "DmChampEmulator": "emulator:DmChampEmulator",
    },
)

__all__ = [
    "CONNECTOR",
    "CREDENTIALS",
    "EMULATOR",
    "OPTIONS",
    "DmChampConnector",
    "DmChampCredentials",
    "DmChampEmulator",
    "DmChampOptions",
]
