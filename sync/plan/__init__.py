"""The Plan: what a cycle will do, as a plain value (:mod:`sync.plan.model`), built from the
store (:mod:`sync.plan.build`, :mod:`sync.plan.slice`, :mod:`sync.plan.pool`) and printed
(:mod:`sync.plan.render`).

Only the value is re-exported here: reconcile produces Plans and must not pull in the store."""

from sync.plan.model import Candidate, ConflictDecision, OpKind, Plan, PlanOp, new_op

__all__ = ["Candidate", "ConflictDecision", "OpKind", "Plan", "PlanOp", "new_op"]
