"""One thread for the store's blocking calls during a cycle.

The event loop must keep every connection's calls going while results are committed, so store
work runs off the loop — but on ONE thread: SQLite lets one writer in at a time, and several
threads of one process queueing on its lock (busy-timeout sleeps) would idle every connection.
On PostgreSQL one thread is also plenty: a chunk of results is a handful of statements.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

T = TypeVar("T")


class StoreThread:
    """Run blocking store calls, one at a time, on a dedicated thread: ``await io(fn, *args)``."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="contactsync-store")

    async def __call__(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, partial(fn, *args, **kwargs))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
