"""``contactsync conflicts``: list recorded conflicts and resolve one by hand.

Resolving sets the person's golden value for that field (a candidate's value, or one given)
and marks the person dirty; the next cycle carries it to every connection."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console

from sync.commands.common import CommandError, open_store
from sync.commands.tables import Column, ago, fit_table
from sync.config import Config
from sync.fieldvalues import FieldValueError, parse_field_value
from sync.store.status import ConflictRow


def conflict_json(r: ConflictRow) -> dict[str, Any]:
    """One conflict as plain JSON (``conflicts --json``)."""
    return {
        "id": r.id,
        "person": r.person_id,
        "field": r.field,
        "candidates": r.candidates,
        "decision": r.decision,
        "rule": r.rule,
        "needs_review": r.needs_review,
        "resolved_at": str(r.resolved_at) if r.resolved_at else None,
        "resolved_by": r.resolved_by,
        "created_at": str(r.created_at),
    }


def list_conflicts(
    config: Config, *, show_all: bool = False, console: Console | None = None, as_json: bool = False
) -> list[ConflictRow]:
    """Print conflicts: the ones needing review, or every one with ``show_all``."""
    console = console or Console()
    store = open_store(config)
    try:
        rows = store.status.conflicts(open_only=not show_all)
    finally:
        store.close()
    if as_json:
        console.print_json(json.dumps([conflict_json(r) for r in rows], default=str))
        return rows
    if not rows:
        console.print("no conflicts" + ("" if show_all else " need review"))
        return rows
    columns = [
        Column("id", keep=True, justify="right"),
        Column("person", keep=True, justify="right"),
        Column("field", wrap=True, keep=True, min_wrap=8),
        Column("candidates", wrap=True, keep=True, min_wrap=16),
        Column("decision", wrap=True, keep=True, min_wrap=8),
        Column("rule", wrap=True, rank=1, min_wrap=6),
        Column("state", wrap=True, rank=0, min_wrap=8),
    ]
    table_rows = []
    for r in rows:
        cands = "\n".join(
            f"{c.get('connection')}: {json.dumps(c.get('value'))}"
            + (f" ({ago(c.get('updated_at'))})" if c.get("updated_at") else "")
            for c in r.candidates
        )
        state = f"resolved by {r.resolved_by}" if r.resolved_at else ("needs review" if r.needs_review else "decided")
        table_rows.append([str(r.id), str(r.person_id), r.field, cands, json.dumps(r.decision), r.rule, state])
    console.print(fit_table(columns, table_rows, console=console))
    return rows


def resolve(
    config: Config,
    conflict_id: int,
    *,
    use: str | None = None,
    value: str | None = None,
    by: str = "cli",
    console: Console | None = None,
) -> ConflictRow:
    """Resolve a conflict with a candidate's value (``use`` = its connection) or a typed value
    (JSON or plain text), validated against the field's type (``sync.fieldvalues``, as the web
    page does)."""
    console = console or Console()
    if (use is None) == (value is None):
        raise CommandError("give exactly one of --use CONNECTION or --value JSON", 2)
    store = open_store(config)
    try:
        queries = store.status
        row = next((r for r in queries.conflicts(limit=100_000) if r.id == conflict_id), None)
        if row is None:
            raise CommandError(f"no conflict #{conflict_id}", 2)
        chosen: Any
        if use is not None:
            match = [c for c in row.candidates if c.get("connection") == use]
            if not match:
                known = ", ".join(str(c.get("connection")) for c in row.candidates)
                raise CommandError(f"conflict #{conflict_id} has no candidate from {use!r} (candidates: {known})", 2)
            chosen = match[0].get("value")
        else:
            try:
                chosen = parse_field_value(row.field, value or "null", region=config.default_phone_region)
            except FieldValueError as exc:
                raise CommandError(f"conflict #{conflict_id}: {exc}", 2) from None
        done = queries.resolve_conflict(conflict_id, chosen, by)
    finally:
        store.close()
    console.print(
        f"conflict #{done.id} resolved: person {done.person_id} {done.field} = {json.dumps(done.decision)}; "
        "the next cycle carries it everywhere"
    )
    return done
