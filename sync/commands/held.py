"""``contactsync held list|release|reject``: creates held for review.

A create whose response was lost (or that a crash left in flight) is found again by the
person's email or phone, or by the marker the platform stores (GoHighLevel ``source``). A
person with neither — a chat identity only, on a platform that cannot be searched by it — is
not created a second time on a guess: the row is *held* with the reason. A human looks at the
platform and either releases it (the contact is not there: send the create) or rejects it (it
is there, or not wanted: nothing is sent)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from rich.console import Console

from sync.commands.common import check_connection, open_store
from sync.config import Config
from sync.store import Store


def _check(config: Config, connections: Sequence[str] | None) -> None:
    for name in connections or ():
        check_connection(config, name)


def list_held(
    config: Config,
    *,
    connections: Sequence[str] | None = None,
    as_json: bool = False,
    console: Console | None = None,
    detail: int = 200,
) -> list[dict[str, Any]]:
    """Print the held creates with their reasons."""
    _check(config, connections)
    console = console or Console()
    store = open_store(config)
    try:
        rows = store.outbox.held(connections, limit=detail)
    finally:
        store.close()
    data = [
        {
            "id": i.id,
            "connection": i.connection,
            "op": i.op,
            "person": i.person_id,
            "fields": i.fields,
            "reason": i.last_error,
            "held_since": str(i.updated_at),
        }
        for i in rows
    ]
    if as_json:
        console.print_json(json.dumps(data, default=str))
        return data
    if not data:
        console.print("no held creates")
    for d in data:
        console.print(f"#{d['id']} {d['connection']} {d['op']} person {d['person']}: {d['reason']}", highlight=False)
    return data


def _report(console: Console, done: dict[str, int], what: str) -> None:
    if not done:
        console.print("no held creates")
    for name, n in sorted(done.items()):
        console.print(f"{name}: {n} held creates {what}", highlight=False)


def _settle(
    config: Config,
    connections: Sequence[str] | None,
    ids: Sequence[int] | None,
    console: Console | None,
    act: Callable[[Store], dict[str, int]],
    what: str,
) -> dict[str, int]:
    _check(config, connections)
    console = console or Console()
    store = open_store(config)
    try:
        done = act(store)
    finally:
        store.close()
    _report(console, done, what)
    return done


def release(
    config: Config,
    *,
    connections: Sequence[str] | None = None,
    ids: Sequence[int] | None = None,
    console: Console | None = None,
) -> dict[str, int]:
    """The contact is not on the platform: the next cycle sends the held creates."""
    return _settle(
        config,
        connections,
        ids,
        console,
        lambda store: store.outbox.release_held(connections, ids),
        "released: the next cycle sends them",
    )


def reject(
    config: Config,
    *,
    connections: Sequence[str] | None = None,
    ids: Sequence[int] | None = None,
    console: Console | None = None,
) -> dict[str, int]:
    """The contact is there (or not wanted): the held creates are dropped, nothing is sent."""
    return _settle(
        config,
        connections,
        ids,
        console,
        lambda store: store.outbox.reject_held(connections, ids),
        "dropped: nothing sent",
    )
