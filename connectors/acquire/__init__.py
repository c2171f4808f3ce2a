"""Acquire (acquire.io): CRM contacts scanned in full, written through ``fields``, merged natively.

``CONNECTOR`` is :class:`~connectors.acquire.client.AcquireConnector`, ``EMULATOR``
:class:`~connectors.acquire.emulator.AcquireEmulator`; the raw payload is one list item of
``GET /crm/objects/contact?relations=fields,tags``.
"""

from __future__ import annotations

from connectors.acquire.client import AcquireConnector
from connectors.acquire.emulator import AcquireEmulator

CONNECTOR = AcquireConnector
EMULATOR = AcquireEmulator

__all__ = ["CONNECTOR", "EMULATOR", "AcquireConnector", "AcquireEmulator"]
