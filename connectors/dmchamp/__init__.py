"""DM Champ (dmchamp.com): a lookup-only, write-mostly target keyed by phone number.

``CONNECTOR`` is :class:`~connectors.dmchamp.client.DmChampConnector`, ``EMULATOR``
:class:`~connectors.dmchamp.emulator.DmChampEmulator`; the raw payload is the body we created or
updated (DM Champ has no read API).

``OPTIONS`` and ``CREDENTIALS`` are the connection's settings models (``settings.py``). Names are
resolved on first use, so reading the settings models (config validation) does not import the
HTTP client or the emulator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from connectors.dmchamp.settings import DmChampCredentials, DmChampOptions

if TYPE_CHECKING:
    from connectors.dmchamp.client import DmChampConnector
    from connectors.dmchamp.emulator import DmChampEmulator

OPTIONS = DmChampOptions
CREDENTIALS = DmChampCredentials


def __getattr__(name: str) -> Any:
    if name in ("CONNECTOR", "DmChampConnector"):
        from connectors.dmchamp.client import DmChampConnector

        return DmChampConnector
    if name in ("EMULATOR", "DmChampEmulator"):
        from connectors.dmchamp.emulator import DmChampEmulator

        return DmChampEmulator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
