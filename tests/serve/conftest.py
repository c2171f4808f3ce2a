from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connectors.gohighlevel.webhooks import emulator_public_keys
from tests.e2e.world import World


def webhook_world(db_url: str, tmp_path: Path, *, deletes: str = "ignore", **settings: Any) -> World:
    """The four emulators and an engine, with the GoHighLevel receiver keyed to the emulator's
    test key pair."""
    hooks = {**emulator_public_keys(), **settings}
    return World(db_url, tmp_path, extra={"webhooks": {"gohighlevel": hooks}, "deletes": {"policy": deletes}})


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[World]:
    w = webhook_world(db_url, tmp_path)
    yield w
    w.close()
