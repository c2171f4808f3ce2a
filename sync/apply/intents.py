"""Turning a Plan's ops into outbox intents (pure: no I/O).

One :class:`~sync.plan.PlanOp` becomes one outbox row. Where a platform changes tags through
their own endpoints (GoHighLevel: tags are never sent on update), the tag change is carried in
the same row as ``add_tags``/``remove_tags`` so the snapshot moves only when every part of the
op is confirmed; all parts are idempotent, so a retried row is safe.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from connectors.base import Capabilities
from sync.canonical import FieldDict, fields_to_json
from sync.plan import OpKind, PlanOp
from sync.store.outbox import Intent

# The raw key a tags-via-endpoint platform would read tags from; never sent on update there.
TAGS_RAW_KEY = "tags"


def lookup_keys(fields: FieldDict) -> dict[str, str]:
    """The keys an in-flight create is settled by: primary email and phone (normalized values,
    as the canonical view holds them), and the first channel identity."""
    keys: dict[str, str] = {}
    emails = fields.get("emails") or ()
    phones = fields.get("phones") or ()
    if emails:
        keys["email"] = str(emails[0])  # type: ignore[index]
    if phones:
        keys["phone"] = str(phones[0])  # type: ignore[index]
    for token in sorted(fields.get("identities") or ()):  # type: ignore[arg-type]
        kind, _, value = str(token).partition(":")
        keys.setdefault(f"identity:{kind}", value)
    return keys


def _tags(value: Any) -> frozenset[str]:
    return frozenset(value or ())


def intent_for(op: PlanOp, capabilities: Capabilities | None = None) -> Intent:
    """The outbox intent of one plan op."""
    body: dict[str, Any] = dict(op.payload or {})
    envelope: dict[str, Any] = {"body": body}
    confirms = fields_to_json(op.confirms)
    tags_endpoint = bool(capabilities and capabilities.tags_via_endpoint)
    if op.kind is OpKind.EXCLUDE:
        return Intent(op.connection, op.person_id, "exclude", op.remote_id, {}, confirms, op.reason)
    if op.kind is OpKind.CREATE:
        envelope["keys"] = lookup_keys({**op.confirms, **op.fields})
    elif op.kind in (OpKind.UPDATE, OpKind.TAG) and tags_endpoint:
        body.pop(TAGS_RAW_KEY, None)
        if "tags" in op.fields:
            new, old = _tags(op.fields.get("tags")), _tags(op.before.get("tags"))
            if new - old:
                envelope["add_tags"] = sorted(new - old)
            if old - new:
                envelope["remove_tags"] = sorted(old - new)
    if op.kind is OpKind.MERGE:
        envelope["loser_ids"] = list(op.loser_ids)
    # What the target held of the fields written when this was planned: a row still unsent
    # after a later pull is sent only while the record still holds it (sync.apply.executor).
    base = fields_to_json(op.before) if op.kind in (OpKind.UPDATE, OpKind.TAG) and op.before else None
    return Intent(op.connection, op.person_id, op.kind.value, op.remote_id, envelope, confirms, op.reason, base)


def intents_for(ops: Iterable[PlanOp], capabilities: dict[str, Capabilities] | None = None) -> list[Intent]:
    """Intents for many ops; ``capabilities`` per connection name."""
    caps = capabilities or {}
    return [intent_for(op, caps.get(op.connection)) for op in ops]
