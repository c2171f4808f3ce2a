"""Acquire (acquire.io): CRM contacts scanned in full, written through ``fields``, merged natively.

``CONNECTOR`` is :class:`~connectors.acquire.client.AcquireConnector`, ``EMULATOR``
:class:`~connectors.acquire.emulator.AcquireEmulator`; the raw payload is one list item of
``GET /crm/objects/contact?relations=fields,tags``.

``OPTIONS`` and ``CREDENTIALS`` are the connection's settings models (``settings.py``). Names are
resolved on first use, so reading the settings models (config validation) does not import the
HTTP client or the emulator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from connectors.acquire.settings import AcquireCredentials, AcquireOptions

if TYPE_CHECKING:
    from connectors.acquire.client import AcquireConnector
    from connectors.acquire.emulator import AcquireEmulator

OPTIONS = AcquireOptions
CREDENTIALS = AcquireCredentials


def __getattr__(name: str) -> Any:
    if name in ("CONNECTOR", "AcquireConnector"):
        from connectors.acquire.client import AcquireConnector

        return AcquireConnector
    if name in ("EMULATOR", "AcquireEmulator"):
        from connectors.acquire.emulator import AcquireEmulator

        return AcquireEmulator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
