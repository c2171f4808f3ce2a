"""Reconciliation: per person, a three-way merge of every field against the snapshots, and the
Plan of writes that follows (pure code; ``sync/plan`` is the glue to the store).

    plan = reconcile(views, connections, ReconcilePolicy(...))
"""

from __future__ import annotations

from sync.reconcile.fields import same
from sync.reconcile.merge import PersonPlan, reconcile, reconcile_person
from sync.reconcile.policy import (
    NEWEST,
    PRIORITY,
    UNION,
    ConflictPolicy,
    DeletePolicy,
    FieldRule,
    MergePolicy,
    ReconcilePolicy,
)
from sync.reconcile.view import ConnectionInfo, PersonView, RecordState, Side, covers

__all__ = [
    "NEWEST",
    "PRIORITY",
    "UNION",
    "ConflictPolicy",
    "ConnectionInfo",
    "DeletePolicy",
    "FieldRule",
    "MergePolicy",
    "PersonPlan",
    "PersonView",
    "RecordState",
    "ReconcilePolicy",
    "Side",
    "covers",
    "reconcile",
    "reconcile_person",
    "same",
]
