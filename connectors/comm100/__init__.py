"""Comm100 (API v4): contacts scanned newest-first, with identities, merges seen via
``mergeToContactId``.

``CONNECTOR`` is :class:`~connectors.comm100.client.Comm100Connector`, ``EMULATOR``
:class:`~connectors.comm100.emulator.Comm100Emulator`; the raw payload is the contact of
``GET /global/contacts?include=contactIdentity``.
"""

from __future__ import annotations

from connectors.comm100.client import Comm100Connector
from connectors.comm100.emulator import Comm100Emulator

CONNECTOR = Comm100Connector
EMULATOR = Comm100Emulator

__all__ = ["CONNECTOR", "EMULATOR", "Comm100Connector", "Comm100Emulator"]
