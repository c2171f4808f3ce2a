"""The Plan: reconcile's output, a plain value that can be printed (``contactsync plan``) and
applied (``sync/apply``). Sum types for actions, conflicts as data (Unison ``recon.mli``).

Field values are canonical (see ``sync/canonical.py``); ``payload`` is the same change rendered
through the connection's mapping into that platform's JSON, filled in when the plan is built.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sync.canonical import FieldDict, FieldValue, fields_to_json, to_json_value


class OpKind(str, enum.Enum):
    CREATE = "create"  # person has no record on this connection yet
    UPDATE = "update"  # only the changed fields
    DELETE = "delete"  # delete policy "propagate"
    MERGE = "merge"  # native merge: remote_id survives, loser_ids fold into it
    TAG = "tag"  # delete/merge fallback "tag": mark the record instead of deleting it
    EXCLUDE = "exclude"  # cannot go there; reason says why (e.g. DM Champ needs a phone)


@dataclass(frozen=True)
class PlanOp:
    """One intended remote write (or a recorded exclusion)."""

    connection: str
    person_id: int
    kind: OpKind
    remote_id: str | None = None  # target of update/delete/tag; survivor of a merge
    fields: FieldDict = field(default_factory=dict)  # canonical values to set
    # The canonical values the (person, connection) snapshot becomes once this op is confirmed.
    confirms: FieldDict = field(default_factory=dict)
    # The values before the change (for printing field diffs); absent on create.
    before: FieldDict = field(default_factory=dict)
    loser_ids: tuple[str, ...] = ()
    reason: str = ""
    payload: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "connection": self.connection,
            "person_id": self.person_id,
            "op": self.kind.value,
            "remote_id": self.remote_id,
            "fields": fields_to_json(self.fields),
            "before": fields_to_json(self.before),
            "loser_ids": list(self.loser_ids),
            "reason": self.reason,
            "payload": self.payload,
        }


def new_op(
    connection: str,
    person_id: int,
    kind: OpKind,
    fields: FieldDict,
    confirms: FieldDict,
    remote_id: str | None = None,
) -> PlanOp:
    """``PlanOp(connection, person_id, kind, remote_id, fields=..., confirms=...)`` without the
    frozen dataclass's per-field ``__setattr__`` calls: a backfill plans a million creates."""
    op = object.__new__(PlanOp)
    op.__dict__.update(
        connection=connection,
        person_id=person_id,
        kind=kind,
        remote_id=remote_id,
        fields=fields,
        confirms=confirms,
        before={},
        loser_ids=(),
        reason="",
        payload=None,
    )
    return op


@dataclass(frozen=True)
class Candidate:
    """One competing value in a conflict."""

    connection: str
    value: FieldValue
    updated_at: datetime | None


@dataclass(frozen=True)
class ConflictDecision:
    """A real conflict: different changes on several sides, and how the policy settled it."""

    person_id: int
    field: str
    candidates: tuple[Candidate, ...]
    decision: FieldValue
    rule: str  # e.g. "newest", "priority:ghl>acquire", "union", "review"
    needs_review: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "person_id": self.person_id,
            "field": self.field,
            "candidates": [
                {
                    "connection": c.connection,
                    "value": to_json_value(c.value),
                    "updated_at": c.updated_at.isoformat() if c.updated_at else None,
                }
                for c in self.candidates
            ],
            "decision": to_json_value(self.decision),
            "rule": self.rule,
            "needs_review": self.needs_review,
        }


# Ops per (connection, op kind value): what a counted plan keeps of its ops.
OpCounts = Counter[tuple[str, str]]


@dataclass
class Plan:
    """Everything one reconcile decided. Writes nothing; ``sync/apply`` carries it out.

    A plan has one of two shapes, told by :attr:`keeps_ops`:

    * *kept* (``Plan()``; reconcile, ``contactsync plan``, a cycle without an outbox): ``ops``
      holds every op, ``golden`` and ``snapshots`` every golden record and read-confirmed
      snapshot;
    * *counted* (:meth:`counted`; a plan whose slices were queued to the outbox as they were
      planned): ``ops``, ``golden`` and ``snapshots`` stay empty and ``untracked`` counts the ops
      per (connection, op kind), so a backfill's million rendered payloads never sit in memory
      at once.

    Either way :meth:`summary`, :meth:`is_empty`, ``conflicts`` and ``persons`` describe the
    whole plan."""

    ops: list[PlanOp] = field(default_factory=list)
    conflicts: list[ConflictDecision] = field(default_factory=list)
    # The golden record per person after this plan.
    golden: dict[int, FieldDict] = field(default_factory=dict)
    # (person, connection) -> snapshot confirmed by reading alone (a change pulled from that
    # connection, no write needed there); stored when the plan is committed, so the same change
    # is not seen again. Snapshots after writes are each op's ``confirms``.
    snapshots: dict[tuple[int, str], FieldDict] = field(default_factory=dict)
    # Ops counted but not held (a counted plan's ops).
    untracked: OpCounts = field(default_factory=Counter)
    # Persons reconciled (``golden`` is empty when the golden records were not kept).
    persons: int = 0
    # False: a counted plan (see the class docstring).
    keeps_ops: bool = True

    @classmethod
    def counted(cls) -> Plan:
        """An empty plan of the counted shape: its ops are counted, not held."""
        return cls(keeps_ops=False)

    def is_empty(self) -> bool:
        if any(n for (_, kind), n in self.untracked.items() if kind != OpKind.EXCLUDE.value):
            return False
        return not any(op.kind is not OpKind.EXCLUDE for op in self.ops)

    def count(self, ops: Iterable[PlanOp]) -> None:
        """Count ``ops`` into :attr:`untracked` instead of holding them (a counted plan)."""
        tally = self.untracked
        for op in ops:
            tally[(op.connection, op.kind.value)] += 1

    def by_connection(self) -> dict[str, list[PlanOp]]:
        """The held ops per connection (none on a counted plan)."""
        out: dict[str, list[PlanOp]] = {}
        for op in self.ops:
            out.setdefault(op.connection, []).append(op)
        return out

    def summary(self) -> dict[str, dict[str, int]]:
        """Counts per connection and op kind."""
        out: dict[str, Counter[str]] = {}
        for op in self.ops:
            out.setdefault(op.connection, Counter())[op.kind.value] += 1
        for (conn, kind), n in self.untracked.items():
            out.setdefault(conn, Counter())[kind] += n
        return {conn: dict(sorted(c.items())) for conn, c in sorted(out.items())}

    def to_json(self) -> dict[str, Any]:
        return {
            "summary": self.summary(),
            "ops": [op.to_json() for op in self.ops],
            "conflicts": [c.to_json() for c in self.conflicts],
        }
