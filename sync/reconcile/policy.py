"""Reconcile policies as small frozen dataclasses (pure code does not depend on the pydantic
config; ``sync/plan/context.py`` builds these from it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from sync.canonical import CUSTOM_PREFIX

NEWEST = "newest"
PRIORITY = "priority"
UNION = "union"
CONFLICT_RULES = (NEWEST, PRIORITY, UNION)


@dataclass(frozen=True)
class FieldRule:
    """A per-field override of the conflict policy; None keeps the default."""

    rule: str | None = None
    priority: tuple[str, ...] | None = None
    empty_erases: bool | None = None


@dataclass(frozen=True)
class ResolvedRule:
    """The rule that applies to one field."""

    rule: str
    priority: tuple[str, ...]
    empty_erases: bool


@dataclass(frozen=True)
class ConflictPolicy:
    """How different changes to one field are settled.

    ``rule``: ``newest`` (latest remote updated-at wins), ``priority`` (first connection in
    ``priority``), ``union`` (sets merge element-wise; lists keep every value, in priority
    order; a scalar falls back to ``newest``). ``overrides`` are keyed by field name or by
    ``custom.*``. ``empty_erases``: whether clearing a field on one platform clears it
    everywhere (default: an empty value never erases).
    """

    rule: str = NEWEST
    priority: tuple[str, ...] = ()
    overrides: Mapping[str, FieldRule] = field(default_factory=dict)
    empty_erases: bool = False

    def for_field(self, name: str) -> ResolvedRule:
        """The rule, priority list and erase setting for ``name``."""
        override = self.overrides.get(name)
        if override is None and name.startswith(CUSTOM_PREFIX):
            override = self.overrides.get(CUSTOM_PREFIX + "*")
        if override is None:
            return ResolvedRule(self.rule, self.priority, self.empty_erases)
        return ResolvedRule(
            override.rule or self.rule,
            override.priority if override.priority is not None else self.priority,
            override.empty_erases if override.empty_erases is not None else self.empty_erases,
        )


@dataclass(frozen=True)
class DeletePolicy:
    """What a believed delete on one connection does elsewhere: ``ignore`` (the default: the
    person stays on the other platforms and is not re-created where it was deleted),
    ``propagate`` (delete it everywhere) or ``tag`` (add ``tag`` to the other records)."""

    mode: str = "ignore"
    tag: str = "deleted"


@dataclass(frozen=True)
class MergePolicy:
    """How a merge seen on one platform is carried to a platform that cannot merge natively:
    keep the survivor and ``delete``, ``tag`` (with ``tag``) or ``leave`` the loser."""

    fallback: str = "leave"
    tag: str = "merged"


@dataclass(frozen=True)
class ReconcilePolicy:
    """Everything reconcile needs to decide. ``duplicates``: ``link`` (keep the primary, flag
    the rest for review) or ``merge`` (merge natively where the platform can, else link)."""

    conflicts: ConflictPolicy = field(default_factory=ConflictPolicy)
    deletes: DeletePolicy = field(default_factory=DeletePolicy)
    merges: MergePolicy = field(default_factory=MergePolicy)
    duplicates: str = "link"
