"""Printing a Plan: for machines (JSON) and for people (summary, per-person field diffs,
exclusions and conflicts)."""

from __future__ import annotations

import json
from typing import Any

from sync.canonical import to_json_value
from sync.plan.model import Plan, PlanOp


def render_json(plan: Plan) -> dict[str, Any]:
    """The plan for machines: summary counts per connection, ops, conflicts."""
    return plan.to_json()


def render_text(plan: Plan, *, limit: int = 200) -> str:
    """The plan for people: summary counts per connection, then per person the field diffs of
    each op (before -> after), exclusions with their reasons, and the conflicts."""
    if not plan.ops and not plan.conflicts:
        return "nothing to do"
    lines = ["summary:"]
    for conn, counts in plan.summary().items():
        lines.append(f"  {conn}: " + ", ".join(f"{kind} {n}" for kind, n in counts.items()))
    by_person: dict[int, list[PlanOp]] = {}
    for op in plan.ops:
        by_person.setdefault(op.person_id, []).append(op)
    shown = 0
    for person_id in sorted(by_person):
        if shown >= limit:
            lines.append(f"... {len(by_person) - shown} more persons")
            break
        shown += 1
        lines.append(f"person {person_id}:")
        for op in by_person[person_id]:
            target = f" {op.remote_id}" if op.remote_id else ""
            head = f"  {op.connection}: {op.kind.value}{target}"
            if op.loser_ids:
                head += f" <- {', '.join(op.loser_ids)}"
            if op.reason:
                head += f" ({op.reason})"
            lines.append(head)
            for name in sorted(op.fields):
                after = json.dumps(to_json_value(op.fields[name]), ensure_ascii=False)
                if name in op.before:
                    before = json.dumps(to_json_value(op.before[name]), ensure_ascii=False)
                    lines.append(f"      {name}: {before} -> {after}")
                else:
                    lines.append(f"      {name}: {after}")
    if plan.conflicts:
        lines.append("conflicts:")
        for c in plan.conflicts[:limit]:
            values = ", ".join(
                f"{x.connection}={json.dumps(to_json_value(x.value), ensure_ascii=False)}" for x in c.candidates
            )
            review = " (needs review)" if c.needs_review else ""
            decided = json.dumps(to_json_value(c.decision), ensure_ascii=False)
            lines.append(f"  person {c.person_id} {c.field}: {values} -> {decided} by {c.rule}{review}")
    return "\n".join(lines)
