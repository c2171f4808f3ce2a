"""Helpers shared by test modules (imported as ``helpers``: the suite's root is on ``sys.path``)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import httpx

from connectors.base import Connector, Page
from connectors.emulation import Emulator

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one coroutine to completion (the tests are synchronous shells around async code)."""
    return asyncio.run(coro)


async def pull_all(connector: Connector, cursor: Any = None) -> list[Page]:
    """Every page of one pull from ``cursor``."""
    return [page async for page in connector.pull(cursor)]


async def request(emulator: Emulator, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One HTTP request straight to ``emulator`` (no connector in between): the tests of its
    wire format. ``kwargs`` go to ``httpx.AsyncClient.request`` (headers, params, json)."""
    async with httpx.AsyncClient(transport=emulator.transport(), base_url=emulator.base_url) as client:
        return await client.request(method, path, **kwargs)
