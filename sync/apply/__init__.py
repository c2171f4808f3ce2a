"""Apply: carry a Plan out through the durable outbox (DESIGN.md, "Apply, exactly once in effect").

``PlanQueue`` commits a plan's intents inside the planning transaction; ``apply_outbox`` sends
them, every connection concurrently, and records each result with its snapshot and link in one
transaction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from connectors.base import Capabilities
from sync.apply.executor import ApplyReport, Backoff, ConnectionReport, PlanFeed, Target, apply_outbox
from sync.apply.intents import Intent, intent_for, intents_for, lookup_keys
from sync.plan import OpKind, Plan
from sync.store import UnitOfWork
from sync.store.outbox import EnqueueResult

OP_ORDER = {OpKind.MERGE: 0, OpKind.TAG: 1, OpKind.CREATE: 2, OpKind.UPDATE: 3, OpKind.DELETE: 4, OpKind.EXCLUDE: 5}


def _ordered_intents(plan: Plan, capabilities: Mapping[str, Capabilities] | None) -> list[Intent]:
    ops = sorted(plan.ops, key=lambda op: OP_ORDER.get(op.kind, 9))  # stable: plan order otherwise
    return intents_for(ops, dict(capabilities or {}))


class PlanQueue:
    """Queues each planned slice's intents inside the planning transaction (pass it as
    ``build_plan(..., queue=...)``). The golden records, the cleared dirty flags and the
    intents then commit together: a crash leaves either all of them or none, never a person
    marked clean whose edit is in no intent. Slices hold whole persons, so sorting by
    :data:`OP_ORDER` per slice keeps each person's order of operations."""

    def __init__(self, capabilities: Mapping[str, Capabilities] | None = None, *, run_id: int | None = None) -> None:
        self.capabilities = capabilities
        self.run_id = run_id
        self.result = EnqueueResult()

    def __call__(self, tx: UnitOfWork, part: Plan) -> None:
        # Every person of the slice is re-planned whole: their older unsent rows are superseded.
        tx.outbox.enqueue_into(
            _ordered_intents(part, self.capabilities), run_id=self.run_id, into=self.result, persons=part.golden
        )

    def portable(self) -> QueueSpec:
        """What a planning worker process needs to queue on its own store handle."""
        return QueueSpec(dict(self.capabilities) if self.capabilities is not None else None, self.run_id)

    def absorb(self, counts: EnqueueResult) -> None:
        """Add what a worker's queue did for one slice to :attr:`result`."""
        for f in fields(counts):
            name = f.name
            setattr(self.result, name, getattr(self.result, name) + getattr(counts, name))


@dataclass(frozen=True)
class QueueSpec:
    """A :class:`PlanQueue` to rebuild in a planning worker (``sync.plan.pool``)."""

    capabilities: dict[str, Capabilities] | None
    run_id: int | None

    def open(self, store: Any) -> PlanQueue:
        """A queue for planning in a unit of work of ``store`` (it writes through ``tx.outbox``)."""
        return PlanQueue(self.capabilities, run_id=self.run_id)


__all__ = [
    "ApplyReport",
    "Backoff",
    "ConnectionReport",
    "PlanFeed",
    "PlanQueue",
    "QueueSpec",
    "Target",
    "apply_outbox",
    "intent_for",
    "intents_for",
    "lookup_keys",
]
