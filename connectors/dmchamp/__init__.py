"""DM Champ (dmchamp.com): a lookup-only, write-mostly target keyed by phone number.

``CONNECTOR`` is :class:`~connectors.dmchamp.client.DmChampConnector`, ``EMULATOR``
:class:`~connectors.dmchamp.emulator.DmChampEmulator`; the raw payload is the body we created or
updated (DM Champ has no read API).
"""

from __future__ import annotations

from connectors.dmchamp.client import DmChampConnector
from connectors.dmchamp.emulator import DmChampEmulator

CONNECTOR = DmChampConnector
EMULATOR = DmChampEmulator

__all__ = ["CONNECTOR", "EMULATOR", "DmChampConnector", "DmChampEmulator"]
