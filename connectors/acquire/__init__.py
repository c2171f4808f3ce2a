"""Acquire (acquire.io): CRM contacts scanned in full, written through ``fields``, merged natively.

``CONNECTOR`` is :class:`~connectors.acquire.client.AcquireConnector`, ``EMULATOR``
:class:`~connectors.acquire.emulator.AcquireEmulator`; the raw payload is one list item of
``GET /crm/objects/contact?relations=fields,tags``.

``OPTIONS`` and ``CREDENTIALS`` are the connection's settings models (``settings.py``). Names are
resolved on first use, so reading the settings models (config validation) does not import the
HTTP client or the emulator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from connectors.acquire.settings import AcquireCredentials, AcquireOptions
from connectors.lazy import lazy_exports

if TYPE_CHECKING:
    from connectors.acquire.client import AcquireConnector
    from connectors.acquire.client import AcquireConnector as CONNECTOR
    from connectors.acquire.emulator import AcquireEmulator
    from connectors.acquire.emulator import AcquireEmulator as EMULATOR

OPTIONS = AcquireOptions
CREDENTIALS = AcquireCredentials

__getattr__ = lazy_exports(
    __name__,
    {
        "CONNECTOR": "client:AcquireConnector",
        "AcquireConnector": "client:AcquireConnector",
        "EMULATOR": "emulator:AcquireEmulator",
        "AcquireEmulator": "emulator:AcquireEmulator",
    },
)

__all__ = [
    "CONNECTOR",
    "CREDENTIALS",
    "EMULATOR",
    "OPTIONS",
    "AcquireConnector",
    "AcquireCredentials",
    "AcquireEmulator",
    "AcquireOptions",
]
