"""``contactsync deletes list|approve|reject``: the deletes the mass-delete circuit breaker
holds (``store.held``). Approving marks the records deleted, so the next cycle carries the
deletes out under ``deletes.policy``; rejecting drops them and nothing is deleted."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from rich.console import Console

from sync.commands.common import check_connection, open_store
from sync.config import Config


def _check(config: Config, connections: Sequence[str] | None) -> None:
    for name in connections or ():
        check_connection(config, name)


def list_held(
    config: Config,
    *,
    connections: Sequence[str] | None = None,
    as_json: bool = False,
    console: Console | None = None,
    detail: int = 20,
) -> dict[str, Any]:
    """Print the held deletes per connection with their reasons."""
    _check(config, connections)
    console = console or Console()
    store = open_store(config)
    try:
        counts = store.held.counts()
        reasons = store.held.reasons()
        data: dict[str, dict[str, Any]] = {
            name: {
                "held": n,
                "reasons": reasons.get(name, []),
                "remote_ids": [h.remote_id for h in store.held.rows(name, limit=detail)],
            }
            for name, n in sorted(counts.items())
            if connections is None or name in connections
        }
    finally:
        store.close()
    if as_json:
        console.print_json(json.dumps(data))
        return data
    if not data:
        console.print("no held deletes")
    for name, d in data.items():
        console.print(f"{name}: {d['held']} deletes held", highlight=False)
        for reason in d["reasons"]:
            console.print(f"  reason: {reason}", highlight=False)
    return data


def approve(
    config: Config, *, connections: Sequence[str] | None = None, console: Console | None = None
) -> dict[str, int]:
    """Believe the held deletes (of ``connections``; all when None)."""
    _check(config, connections)
    console = console or Console()
    store = open_store(config)
    try:
        done = store.held.approve(connections)
    finally:
        store.close()
    if not done:
        console.print("no held deletes")
    for name, n in sorted(done.items()):
        console.print(
            f"{name}: {n} records marked deleted; the next cycle applies deletes.policy ({config.deletes.policy})",
            highlight=False,
        )
    return done


def reject(
    config: Config, *, connections: Sequence[str] | None = None, console: Console | None = None
) -> dict[str, int]:
    """Drop the held deletes (of ``connections``; all when None): nothing is deleted."""
    _check(config, connections)
    console = console or Console()
    store = open_store(config)
    try:
        dropped = store.held.reject(connections)
    finally:
        store.close()
    if not dropped:
        console.print("no held deletes")
    for name, n in sorted(dropped.items()):
        console.print(f"{name}: {n} held deletes dropped; nothing deleted", highlight=False)
    return dropped
