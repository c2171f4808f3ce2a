"""Apply: carry a Plan out through the durable outbox (DESIGN.md, "Apply, exactly once in effect").

``queue_plan`` commits a plan's intents; ``apply_outbox`` sends them, every connection
concurrently, and records each result with its snapshot and link in one transaction.
"""

from __future__ import annotations

from collections.abc import Mapping

from connectors.base import Capabilities
from sync.apply.executor import ApplyReport, Backoff, ConnectionReport, Target, apply_outbox
from sync.apply.intents import intent_for, intents_for, lookup_keys
from sync.plan import OpKind, Plan

OP_ORDER = {OpKind.MERGE: 0, OpKind.TAG: 1, OpKind.CREATE: 2, OpKind.UPDATE: 3, OpKind.DELETE: 4, OpKind.EXCLUDE: 5}
from sync.store.outbox import EnqueueResult, OutboxStore


def queue_plan(
    outbox: OutboxStore,
    plan: Plan,
    capabilities: Mapping[str, Capabilities] | None = None,
    *,
    run_id: int | None = None,
) -> EnqueueResult:
    """Commit every op of ``plan`` to the outbox (the intent, before any call). Per person and
    connection a merge goes first (Acquire refuses an update that gives the survivor an email
    the loser still holds), then tags on merged-away records, then create/update (whose
    ``confirms`` is the person's snapshot after the plan, so it is the last to set it), then
    delete."""
    ops = sorted(plan.ops, key=lambda op: OP_ORDER.get(op.kind, 9))  # stable: plan order otherwise
    return outbox.enqueue(intents_for(ops, dict(capabilities or {})), run_id=run_id)


__all__ = [
    "ApplyReport",
    "Backoff",
    "ConnectionReport",
    "Target",
    "apply_outbox",
    "intent_for",
    "intents_for",
    "lookup_keys",
    "queue_plan",
]
