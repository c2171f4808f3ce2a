"""GoHighLevel (LeadConnector API v2): the connector and its emulator."""

from __future__ import annotations

from connectors.gohighlevel.client import GoHighLevelConnector
from connectors.gohighlevel.emulator import GoHighLevelEmulator

CONNECTOR = GoHighLevelConnector
EMULATOR = GoHighLevelEmulator

__all__ = ["CONNECTOR", "EMULATOR", "GoHighLevelConnector", "GoHighLevelEmulator"]
