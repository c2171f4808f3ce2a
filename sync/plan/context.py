"""What planning reads from the configuration: the match and reconcile policies, and how
reconcile sees each connection (its mapping's fields narrowed by its capabilities)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from connectors.base import Capabilities
from sync.mapping import FieldMapping
from sync.match import MatchPolicy
from sync.reconcile import ConflictPolicy, ConnectionInfo, DeletePolicy, FieldRule, MergePolicy, ReconcilePolicy

if TYPE_CHECKING:
    from sync.config import Config


def match_policy(config: Config, capabilities: Mapping[str, Capabilities] | None = None) -> MatchPolicy:
    """``MatchPolicy`` from ``config.matching`` (keys with strength). A vanished record is
    inferred merged only on connections that can merge natively (``capabilities``)."""
    infer = None
    if capabilities is not None:
        infer = frozenset(n for n, c in capabilities.items() if c.can_merge)
    return MatchPolicy(keys={k.kind: k.strength for k in config.matching.keys}, infer_merges=infer)


_DUPLICATES = {"link_oldest": "link", "flag": "link", "merge_native": "merge"}


def reconcile_policy(config: Config) -> ReconcilePolicy:
    """``ReconcilePolicy`` from ``config.conflicts`` / ``.deletes`` / ``.merges`` /
    ``.matching.duplicates``. Sets (tags, identities) merge by ``union`` unless a field says
    otherwise, as the configuration documents."""
    c = config.conflicts
    overrides = {name: FieldRule(rule=rule) for name, rule in c.fields.items()}
    for name in ("tags", "identities"):
        overrides.setdefault(name, FieldRule(rule=c.field_policy(name)))
    return ReconcilePolicy(
        conflicts=ConflictPolicy(
            rule=c.policy, priority=tuple(c.priority), overrides=overrides, empty_erases=c.empty_erases
        ),
        deletes=DeletePolicy(mode=config.deletes.policy, tag=config.deletes.tag),
        merges=MergePolicy(fallback=config.merges.fallback, tag=config.merges.tag),
        duplicates=_DUPLICATES.get(config.matching.duplicates, "link"),
    )


def update_fields(mapping: FieldMapping) -> frozenset[str]:
    """Canonical fields an update can change: writable fields whose raw keys the platform
    accepts on update (DM Champ: never the phone), plus endpoint fields (GoHighLevel tags)."""
    allowed = mapping.updatable_keys
    out: set[str] = set(mapping.endpoint_fields)
    for lens in mapping.lenses:
        if not getattr(lens, "writable", False):
            continue
        tops = {p.split(".", 1)[0] for p in lens.paths}
        if allowed is None or tops <= set(allowed):
            out.update(lens.fields)
    return frozenset(out)


def connection_info(name: str, mapping: FieldMapping, capabilities: Capabilities) -> ConnectionInfo:
    """How reconcile sees one connection: its mapping's fields narrowed by its capabilities."""
    create = frozenset(mapping.writable) if capabilities.can_create else frozenset()
    update = update_fields(mapping) if capabilities.can_update else frozenset()
    # Fields write verification found the platform does not hold: read, never written.
    create -= capabilities.unwritable_fields
    update -= capabilities.unwritable_fields
    return ConnectionInfo(
        name, frozenset(mapping.readable), create, update, capabilities, shape=mapping.fit, confirm_from_payload=True
    )


@dataclass
class PlanContext:
    """What a plan was built from, for rendering payloads (raw record by connection and id)."""

    mappings: Mapping[str, FieldMapping]
    payloads: dict[tuple[str, str], dict[str, Any]]
