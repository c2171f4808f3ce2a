"""Shared fixtures of the fault tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from e2e.world import World  # tests/ is on sys.path (rootdir-relative packages)


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[World]:
    """The four emulators over real HTTP, a store and a CycleRunner, closed after the test."""
    w = World(db_url, tmp_path)
    yield w
    w.close()
