"""Three-way merge of one field across the sides of a person (pure).

Each side's current value is compared with its base — the snapshot (the value last confirmed
on that connection), or the golden value when the side was never synced. A side whose value
moved is a *change*; one change wins; equal changes agree; different changes are a conflict
the policy settles, and the decision is returned as data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from sync.canonical import FieldValue, field_kind, is_empty, members
from sync.plan import Candidate
from sync.reconcile.policy import NEWEST, PRIORITY, UNION, ResolvedRule

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def same(a: FieldValue, b: FieldValue) -> bool:
    """Value equality where None, "" and empty collections are all "no value"."""
    if a:  # not empty (see ``is_empty``): plain equality
        return a == b
    if is_empty(a):
        return is_empty(b)
    return a == b


class Change(NamedTuple):
    """One side's new value of a field (a named tuple: reconcile makes one per moved field
    and side, hundreds of thousands in a backfill)."""

    connection: str
    value: FieldValue
    base: FieldValue
    updated_at: datetime | None


@dataclass(frozen=True)
class FieldOutcome:
    """The decided value, and the rule string when it was a real conflict (else None)."""

    value: FieldValue
    rule: str | None = None
    erased: bool = False
    # The rule could not really tell (equal or unknown update times, no listed connection):
    # the value was picked by a tie-break, so a person should look at it.
    needs_review: bool = False


def rank(connection: str, priority: tuple[str, ...]) -> tuple[int, str]:
    """Sort key of a connection under a priority list (listed ones first, then by name)."""
    try:
        return (priority.index(connection), connection)
    except ValueError:
        return (len(priority), connection)


def decide(
    name: str,
    golden: FieldValue,
    changes: list[Change],
    rule: ResolvedRule,
    holds_as: Callable[[str, FieldValue], FieldValue],
) -> FieldOutcome:
    """Settle field ``name`` given the sides' changes.

    ``holds_as(connection, value)`` is the value that connection would hold if sent ``value``
    (the mapping's round trip): when every change is what its platform would hold of one of
    them (a platform keeping one email of two, say), they agree and that fuller value wins.
    """
    if not changes:
        return FieldOutcome(golden)
    erased = all(is_empty(c.value) for c in changes)
    for candidate in changes:
        if all(
            same(candidate.value, c.value) or same(holds_as(c.connection, candidate.value), c.value) for c in changes
        ):
            return FieldOutcome(candidate.value, erased=erased and not is_empty(golden))
    kind = field_kind(name)
    if rule.rule == UNION and kind in ("set", "list"):
        return FieldOutcome(_union(kind, golden, changes, rule.priority), UNION)
    if rule.rule == PRIORITY:
        best = min(changes, key=lambda c: rank(c.connection, rule.priority))
        unlisted = best.connection not in rule.priority  # decided by connection name only
        return FieldOutcome(best.value, f"{PRIORITY}:{'>'.join(rule.priority)}", needs_review=unlisted)
    # newest (also the fallback of union on a scalar): latest remote updated-at, ties by priority.
    best = min(
        changes,
        key=lambda c: (-(c.updated_at or _EPOCH).timestamp(), rank(c.connection, rule.priority)),
    )
    tied = best.updated_at is None or any(
        c is not best and c.updated_at == best.updated_at and not same(c.value, best.value) for c in changes
    )
    return FieldOutcome(best.value, NEWEST, needs_review=tied)


def _union(kind: str, golden: FieldValue, changes: list[Change], priority: tuple[str, ...]) -> FieldValue:
    """Element-wise three-way merge: every side's additions are kept, every side's removals
    applied. Lists keep the order of the highest-priority side first."""
    ordered = sorted(changes, key=lambda c: rank(c.connection, priority))
    added: list[str] = []
    removed: set[str] = set()
    for c in ordered:
        now = list(members(c.value))
        base = set(members(c.base))
        added.extend(v for v in now if v not in base)
        removed |= base - set(now)
    if kind == "set":
        return frozenset((set(members(golden)) | set(added)) - removed)
    out: list[str] = []
    for c in ordered:
        for v in members(c.value):
            if v not in out and v not in removed:
                out.append(v)
    for v in members(golden):
        if v not in out and v not in removed:
            out.append(v)
    return tuple(out)


def candidates(changes: list[Change]) -> tuple[Candidate, ...]:
    """The competing values of a conflict, in connection order."""
    return tuple(Candidate(c.connection, c.value, c.updated_at) for c in sorted(changes, key=lambda c: c.connection))
