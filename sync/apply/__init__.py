"""Apply: carry a Plan out through the durable outbox (DESIGN.md, "Apply, exactly once in effect").

``queue_plan`` commits a plan's intents; ``apply_outbox`` sends them, every connection
concurrently, and records each result with its snapshot and link in one transaction.
"""

from __future__ import annotations

from collections.abc import Mapping

from connectors.base import Capabilities
from sync.apply.executor import ApplyReport, Backoff, ConnectionReport, Target, apply_outbox
from sync.apply.intents import intent_for, intents_for, lookup_keys
from sync.plan import Plan
from sync.store.outbox import EnqueueResult, OutboxStore


def queue_plan(
    outbox: OutboxStore,
    plan: Plan,
    capabilities: Mapping[str, Capabilities] | None = None,
    *,
    run_id: int | None = None,
) -> EnqueueResult:
    """Commit every op of ``plan`` to the outbox (the intent, before any call)."""
    return outbox.enqueue(intents_for(plan.ops, dict(capabilities or {})), run_id=run_id)


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
