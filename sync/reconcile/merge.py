"""Reconcile: per person, decide every field three-way and plan the writes (pure).

``reconcile_person(view, connections, policy) -> PersonPlan`` and ``reconcile(views, ...) ->
Plan``. Nothing here does I/O: the store builds the views, the planner renders payloads
through the mappings, apply carries the plan out.

Echo suppression is by value: a side whose current value equals its snapshot did not change,
and a side already holding the decided value (as its platform would hold it) gets no write —
so a value we wrote and read back is never a change, and a quiet cycle plans nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from connectors.base import PullMode
from sync.canonical import CUSTOM_PREFIX, FieldDict, FieldValue, is_empty, members
from sync.plan import ConflictDecision, OpKind, Plan, PlanOp, new_op
from sync.reconcile.fields import Change, candidates, decide, same
from sync.reconcile.policy import ReconcilePolicy
from sync.reconcile.view import ALL_CUSTOM, ConnectionInfo, PersonView, RecordState, Side, covers


@dataclass
class PersonPlan:
    """Reconcile's decision for one person."""

    person_id: int
    ops: list[PlanOp] = field(default_factory=list)
    conflicts: list[ConflictDecision] = field(default_factory=list)
    golden: FieldDict = field(default_factory=dict)
    # connection -> snapshot confirmed by reading (changed since the stored one).
    snapshots: dict[str, FieldDict] = field(default_factory=dict)


def reconcile(
    views: Iterable[PersonView],
    connections: Mapping[str, ConnectionInfo],
    policy: ReconcilePolicy | None = None,
) -> Plan:
    """Reconcile every person and gather the result into one :class:`Plan`."""
    policy = policy or ReconcilePolicy()
    plan = Plan()
    for view in views:
        result = reconcile_person(view, connections, policy)
        plan.ops.extend(result.ops)
        plan.conflicts.extend(result.conflicts)
        plan.golden[view.person_id] = result.golden
        for conn, snap in result.snapshots.items():
            plan.snapshots[(view.person_id, conn)] = snap
    return plan


def reconcile_person(
    view: PersonView,
    connections: Mapping[str, ConnectionInfo],
    policy: ReconcilePolicy,
) -> PersonPlan:
    """Decide one person: field values, then per connection create / update / delete / merge /
    tag / exclude. Sides on connections not in ``connections`` are ignored."""
    out = PersonPlan(view.person_id, golden=dict(view.golden))
    sides = {name: view.sides.get(name) or _empty_side(name) for name in sorted(connections)}
    live = {n: s for n, s in sides.items() if s.record is not None and not s.record.deleted}
    gone = sorted(n for n, s in sides.items() if s.record is not None and s.record.deleted)
    if not live:
        return out

    if gone and policy.deletes.mode == "propagate":
        _propagate_delete(view, connections, live, gone, out)
        return out

    if not gone and len(live) == 1 and not view.golden and not view.merged:
        ((name, only),) = live.items()
        if only.snapshot is None and not only.others:
            _first_sight(view.person_id, connections, sides, name, only, out)
            return out

    holds = {n: _holds(connections[n], s) for n, s in live.items()}
    golden, erased = _decide_fields(view, connections, live, holds, policy, out)
    if gone and policy.deletes.mode == "tag":
        golden["tags"] = frozenset(members(golden.get("tags"))) | {policy.deletes.tag}
    out.golden = golden

    for name, side in live.items():
        unique = connections[name].capabilities.unique_keys and not _others_removed(view, connections[name], policy)
        wanted = _unblocked(golden, _blocked(view, side, unique), holds[name])
        confirmed = _plan_side(view.person_id, connections[name], side, holds[name], wanted, erased, policy, out)
        if side.others:
            _plan_others(view, connections[name], side, confirmed, policy, out)
    # Deleted somewhere but kept (``ignore``/``tag``): the person still belongs on every
    # platform it has not reached yet (a create that failed before the delete, a connection
    # that joined later); where it was deleted its side holds the deleted record, not None,
    # so it is never re-created there.
    for name, side in sides.items():
        if side.record is None:
            _plan_create(view.person_id, connections[name], _unblocked(golden, view.withheld, {}), out)
    return out


# Connection -> ``Side(connection)``: the side of a person not there (frozen, so shared).
_EMPTY_SIDES: dict[str, Side] = {}


def _empty_side(name: str) -> Side:
    side = _EMPTY_SIDES.get(name)
    if side is None:
        side = Side(name)
        if len(_EMPTY_SIDES) < 1024:
            _EMPTY_SIDES[name] = side
    return side


# Canonical list fields holding identity keys: a value here is someone's email or phone.
_KEY_FIELDS = ("emails", "phones")


def _others_removed(view: PersonView, info: ConnectionInfo, policy: ReconcilePolicy) -> bool:
    """Whether this plan removes a merge's losers on this connection (native merge, or the
    delete fallback where deleting is possible; see :func:`_plan_others`). Their keys then do
    not block the survivor's: the applier sends the loser's merge or delete before the survivor's
    update (sync/apply), so the merge converges in one cycle even where a key value may sit on
    one contact only (Comm100, "identity already used")."""
    if not view.merged:
        return False
    caps = info.capabilities
    if caps.can_merge:
        return True
    fallback = policy.merges.fallback
    if fallback == "delete" and view.merge_inferred and policy.deletes.mode != "propagate":
        return False
    return fallback == "delete" and caps.can_delete


def _blocked(view: PersonView, side: Side, unique_keys: bool) -> frozenset[tuple[str, str]]:
    """Key values not to be added to this side's record: those a suspected merge contests, and,
    on a platform that refuses one key on two contacts (``unique_keys``: Comm100, "identity
    already used"), those of a record merged away that another live record of this connection
    still holds (the merge's loser there, kept by the fallback). Plain duplicates are left as
    they were (flagged for review)."""
    if not unique_keys or not side.others or not view.absorbed:
        return view.withheld
    held = {(f, v) for other in side.others for f in _KEY_FIELDS for v in members((other.current or {}).get(f))}
    return view.withheld | (held & view.absorbed)


def _unblocked(golden: FieldDict, blocked: frozenset[tuple[str, str]], holds: FieldDict) -> FieldDict:
    """``golden`` without the ``blocked`` key values the side does not already hold (what it
    holds is kept: withholding never removes a value from a platform)."""
    if not blocked:
        return golden
    out = golden
    for name in _KEY_FIELDS:
        values = members(golden.get(name))
        if not any((name, v) in blocked for v in values):
            continue
        have = set(members(holds.get(name)))
        keep = tuple(v for v in values if (name, v) not in blocked or v in have)
        out = dict(out)
        if keep:
            out[name] = keep
        else:
            out.pop(name, None)
    return out


def _first_sight(
    person_id: int,
    connections: Mapping[str, ConnectionInfo],
    sides: Mapping[str, Side],
    name: str,
    side: Side,
    out: PersonPlan,
) -> None:
    """A new person on one connection only (most of a backfill): what the general path decides
    for it, without the per-field merge. Every value it holds is a one-sided change, so the
    golden record is what it holds (in field order, as ``_decide_fields`` builds it); its
    snapshot is confirmed by reading; it needs no update; and it is created everywhere else."""
    info = connections[name]
    holds = _holds(info, side)
    golden = {k: holds[k] for k in sorted(holds)}
    out.golden = golden
    if holds:
        out.snapshots[info.name] = holds
    for other_name, other in sides.items():
        if other.record is None:
            _plan_create(person_id, connections[other_name], golden, out)


def _holds(info: ConnectionInfo, side: Side) -> FieldDict:
    """What the side holds now, on the fields it reads or writes: the pulled values for the
    readable ones; the snapshot for write-only fields and for platforms that cannot be read
    (DM Champ: its current state is unknown, so the snapshot stands for it)."""
    assert side.record is not None
    snap = side.snapshot or {}
    current = side.record.current
    if current is None or (info.capabilities.pull_mode is PullMode.LOOKUP_ONLY and side.snapshot is not None):
        current = snap
    out: FieldDict = {}
    readable = info.readable
    for name, value in current.items():
        if (name in readable or covers(readable, name)) and (value or not is_empty(value)):
            out[name] = value
    if snap:
        writable = _writable(info)
        for name, value in snap.items():
            if not (name in readable or covers(readable, name)) and covers(writable, name):
                if value or not is_empty(value):
                    out[name] = value
    return out


# ConnectionInfo -> its update and create fields together (a handful of connections).
_WRITABLE: dict[int, tuple[ConnectionInfo, frozenset[str]]] = {}


def _writable(info: ConnectionInfo) -> frozenset[str]:
    """``info.update_fields | info.create_fields``, built once per connection info."""
    hit = _WRITABLE.get(id(info))
    if hit is None or hit[0] is not info:
        if len(_WRITABLE) >= 256:
            _WRITABLE.clear()
        hit = (info, info.update_fields | info.create_fields)
        _WRITABLE[id(info)] = hit
    return hit[1]


def _decide_fields(
    view: PersonView,
    connections: Mapping[str, ConnectionInfo],
    live: Mapping[str, Side],
    holds: Mapping[str, FieldDict],
    policy: ReconcilePolicy,
    out: PersonPlan,
) -> tuple[FieldDict, set[str]]:
    """The new golden record, and the fields a side erased (only where erasing is allowed)."""
    names: set[str] = set(view.golden)
    for n in live:
        names.update(holds[n])
        names.update(live[n].snapshot or ())
    golden: FieldDict = {}
    erased: set[str] = set()
    rules = policy.conflicts.for_field
    view_golden = view.golden
    # Per live side, what the loop below reads of it (looked up once, not once per field).
    looks = [(n, side, connections[n].readable, holds[n], side.snapshot) for n, side in live.items()]
    for name in sorted(names):
        rule = None  # looked up only when needed (most fields did not move)
        g = view_golden.get(name)
        custom = name.startswith(CUSTOM_PREFIX)
        changes: list[Change] = []
        for n, side, readable, held, snapshot in looks:
            if name not in readable and not (custom and ALL_CUSTOM in readable):
                continue  # (``covers``, inlined)
            now = held.get(name)
            base = snapshot.get(name) if snapshot is not None else g
            if (now == base and now is not None) or same(now, base):
                # Unchanged, but the golden record lacks what this side holds (a person folded
                # into another brings values the survivor's golden record never had): adopt it.
                if is_empty(g) and not is_empty(now):
                    assert side.record is not None
                    changes.append(Change(n, now, base, side.record.updated_at))
                continue
            # A value cleared is a change only where erasing is allowed, and never for a
            # side seen for the first time (a missing field there is not a deletion).
            if is_empty(now):
                if side.snapshot is None:
                    continue
                rule = rule or rules(name)
                if not rule.empty_erases:
                    continue
            assert side.record is not None
            changes.append(Change(n, now, base, side.record.updated_at))

        if not changes:  # the common case: nothing moved, the golden value stands
            if g or not is_empty(g):
                golden[name] = g
            continue

        def holds_as(conn: str, value: FieldValue, _name: str = name) -> FieldValue:
            info = connections[conn]
            if is_empty(value) or not covers(info.create_fields | info.update_fields, _name):
                return value
            return info.shaped({_name: value}).get(_name)

        rival = _golden_rival(name, g, changes, live, holds, connections, holds_as)
        if rival is not None:
            changes.append(rival)
        first = changes[0].value
        if not is_empty(first) and all(c.value == first for c in changes[1:]):
            # One side moved, or every side moved to the same value: it wins (what ``decide``
            # gives when all changes agree), no conflict.
            golden[name] = first
            continue

        outcome = decide(name, g, changes, rule or rules(name), holds_as)
        if outcome.rule is not None:
            review = outcome.needs_review or _stranded(name, outcome.value, changes, connections, holds_as)
            out.conflicts.append(
                ConflictDecision(view.person_id, name, candidates(changes), outcome.value, outcome.rule, review)
            )
        if outcome.erased:
            erased.add(name)
        if not is_empty(outcome.value):
            golden[name] = outcome.value
    return golden, erased


def _stranded(
    name: str,
    value: FieldValue,
    changes: list[Change],
    connections: Mapping[str, ConnectionInfo],
    holds_as: Callable[[str, FieldValue], FieldValue],
) -> bool:
    """Whether a conflict's decided ``value`` can never reach a competing side: one holding
    another value in a field its platform cannot update (GoHighLevel's company is set on
    create only). No write will ever make the sides agree, so the conflict is left for a
    person (``needs_review``) instead of passing for settled while they disagree for good."""
    for c in changes:
        if same(c.value, value) or same(c.value, holds_as(c.connection, value)):
            continue
        if _kept_in(c.value, value):
            # A union that kept this side's items: the side lacks only what the others added,
            # the documented limit of a field it cannot update (Acquire's tags), not a decision
            # against it — nothing a person could settle.
            continue
        info = connections[c.connection]
        update = info.update_fields
        if not info.capabilities.can_update or not (name in update or covers(update, name)):
            return True
    return False


def _kept_in(side: FieldValue, decided: FieldValue) -> bool:
    """Whether a list or set field's ``decided`` value holds every item of ``side``'s."""
    if not isinstance(side, (tuple, frozenset)) or not isinstance(decided, (tuple, frozenset)):
        return False
    return set(members(side)) <= set(members(decided))


def _golden_rival(
    name: str,
    g: FieldValue,
    changes: list[Change],
    live: Mapping[str, Side],
    holds: Mapping[str, FieldDict],
    connections: Mapping[str, ConnectionInfo],
    holds_as: Callable[[str, FieldValue], FieldValue],
) -> Change | None:
    """The golden value as a rival of the changes of sides that never confirmed it.

    A side whose snapshot is not the golden value (a write of it there was found stale and
    superseded: an outside edit a short listing or a lagging search hid) and that now shows
    another value changed from an older base than the golden one: both moved from that base,
    which is a conflict, not a lone change -- the edit seen late must not simply win over a
    newer one decided meanwhile. The rival is the golden value, held by the other sides; its
    time is the earliest of theirs (when it appeared: the sides we wrote it to are later).
    None in the ordinary case (the side had the golden value), or when no other side holds it."""
    if is_empty(g):
        return None
    late = [
        c
        for c in changes
        if not is_empty(c.value)
        and live[c.connection].snapshot is not None
        and not same(c.base, holds_as(c.connection, g))
        and not same(c.value, holds_as(c.connection, g))
    ]
    if not late or any(same(c.value, holds_as(c.connection, g)) for c in changes):
        return None
    moved = {c.connection for c in changes}
    holders: list[tuple[str, Side]] = [
        (m, other)
        for m, other in live.items()
        if m not in moved
        and other.record is not None
        and covers(connections[m].readable, name)
        and same(holds[m].get(name), holds_as(m, g))
    ]
    if not holders:
        return None
    timed = [(other.record.updated_at, m) for m, other in holders if other.record and other.record.updated_at]
    conn = min(timed)[1] if timed else holders[0][0]
    when = min(timed)[0] if timed else None
    snap = live[conn].snapshot
    return Change(conn, g, snap.get(name) if snap is not None else None, when)


def _plan_side(
    person_id: int,
    info: ConnectionInfo,
    side: Side,
    holds: FieldDict,
    golden: FieldDict,
    erased: set[str],
    policy: ReconcilePolicy,
    out: PersonPlan,
) -> FieldDict:
    """Update (only the changed fields) or nothing; and the snapshot confirmed by reading,
    which is returned."""
    assert side.record is not None
    tracked = info.tracked
    confirmed = {k: v for k, v in holds.items() if k in tracked or covers(tracked, k)}
    if not _same_dict(confirmed, side.snapshot or {}):
        out.snapshots[info.name] = confirmed

    update = info.update_fields
    wanted = {k: v for k, v in golden.items() if k in update or covers(update, k)}
    changes: FieldDict = {}
    before: FieldDict = {}
    names = set(wanted)
    names.update(k for k in holds if k in update or covers(update, k))
    for name in sorted(names):
        want = wanted.get(name)
        have = holds.get(name)
        if want and want == have:
            continue  # the common case: held as wanted (``same``)
        if is_empty(want):
            if is_empty(have) or name not in erased:
                continue
            changes[name] = None
        elif same(want, have):
            continue
        else:
            changes[name] = want
        before[name] = have
    if not changes:
        return confirmed
    # Only now the lens round trip (costly): a value the platform would hold differently
    # (one email of two) and already holds so is no change.
    shaped = info.shaped(wanted) if wanted else {}
    for name in [n for n, v in changes.items() if v is not None]:
        if same(shaped.get(name, changes[name]), holds.get(name)):
            del changes[name]
            del before[name]
    if not changes:
        return confirmed
    after = dict(confirmed)
    for name, value in changes.items():
        held = shaped.get(name, value) if value is not None else None
        if is_empty(held):
            after.pop(name, None)
        else:
            after[name] = held
    delete_tag = policy.deletes.tag if policy.deletes.mode == "tag" else None
    if delete_tag and "tags" in changes and delete_tag not in members(holds.get("tags")):
        # Marking a record deleted elsewhere is its own op kind, so apply and people see it.
        tags = changes.pop("tags")
        out.ops.append(
            PlanOp(
                info.name,
                person_id,
                OpKind.TAG,
                side.record.remote_id,
                fields={"tags": tags},
                confirms=dict(after),
                before={"tags": before.pop("tags")},
                reason=f"deleted elsewhere: tagged {delete_tag!r}",
            )
        )
        if not changes:
            return confirmed
    if not info.capabilities.can_update:
        out.ops.append(
            PlanOp(
                info.name,
                person_id,
                OpKind.EXCLUDE,
                side.record.remote_id,
                fields=changes,
                before=before,
                reason=f"{info.name} cannot update contacts",
            )
        )
        return confirmed
    out.ops.append(
        PlanOp(
            info.name, person_id, OpKind.UPDATE, side.record.remote_id, fields=changes, confirms=after, before=before
        )
    )
    return confirmed


def _plan_create(person_id: int, info: ConnectionInfo, golden: FieldDict, out: PersonPlan) -> None:
    """Create the person where it is missing, or say why it cannot go there."""
    allowed = info.create_fields
    fields = {k: v for k, v in golden.items() if (k in allowed or covers(allowed, k)) and not is_empty(v)}
    if not info.capabilities.can_create:
        out.ops.append(
            PlanOp(info.name, person_id, OpKind.EXCLUDE, fields=fields, reason=f"{info.name} cannot create contacts")
        )
        return
    missing = [f for f in info.capabilities.required_for_create if is_empty(golden.get(f))]
    if missing:
        out.ops.append(
            PlanOp(
                info.name, person_id, OpKind.EXCLUDE, fields=fields, reason=f"{info.name} needs {', '.join(missing)}"
            )
        )
        return
    if not fields:
        return
    if info.confirm_from_payload:
        confirms = dict(fields)  # the planner reads them back from the rendered payload
    else:
        confirms = {k: v for k, v in info.shaped(fields).items() if not is_empty(v)}
    out.ops.append(new_op(info.name, person_id, OpKind.CREATE, fields, confirms))


def _propagate_delete(
    view: PersonView,
    connections: Mapping[str, ConnectionInfo],
    live: Mapping[str, Side],
    gone: list[str],
    out: PersonPlan,
) -> None:
    """Delete policy ``propagate``: the person goes everywhere it still is."""
    reason = f"deleted on {', '.join(gone)}"
    for name, side in live.items():
        info = connections[name]
        records = [r for r in (side.record, *side.others) if r is not None]
        for record in records:
            kind = OpKind.DELETE if info.capabilities.can_delete else OpKind.EXCLUDE
            why = reason if kind is OpKind.DELETE else f"{reason}; {name} cannot delete contacts"
            out.ops.append(PlanOp(name, view.person_id, kind, record.remote_id, reason=why))


def _plan_others(
    view: PersonView, info: ConnectionInfo, side: Side, confirmed: FieldDict, policy: ReconcilePolicy, out: PersonPlan
) -> None:
    """Further live records of one connection in this person: a merge seen on another
    platform (carried here natively or by the fallback) or duplicates (policy ``link``: leave
    them, they are flagged for review; ``merge``: merge natively where possible)."""
    assert side.record is not None
    losers = tuple(r.remote_id for r in side.others)
    caps = info.capabilities
    if view.merged:
        if caps.can_merge:
            out.ops.append(
                PlanOp(
                    info.name,
                    view.person_id,
                    OpKind.MERGE,
                    side.record.remote_id,
                    loser_ids=losers,
                    reason="merged on another platform",
                )
            )
            return
        fallback = policy.merges.fallback
        if fallback == "delete" and view.merge_inferred and policy.deletes.mode != "propagate":
            # Inferred, not signalled: the loser's contacts are never deleted unless deletes
            # propagate; they are tagged instead, for a human to see.
            fallback = "tag"
        for record in side.others:
            if fallback == "delete":
                kind = OpKind.DELETE if caps.can_delete else OpKind.EXCLUDE
                why = f"merged into {side.record.remote_id}"
                if kind is OpKind.EXCLUDE:
                    why += f"; {info.name} cannot delete contacts"
                out.ops.append(PlanOp(info.name, view.person_id, kind, record.remote_id, reason=why))
            elif fallback == "tag":
                why = f"merged into {side.record.remote_id}"
                _tag_record(view.person_id, info, record, policy.merges.tag, why, confirmed, out)
        return
    if policy.duplicates == "merge" and caps.can_merge:
        out.ops.append(
            PlanOp(
                info.name,
                view.person_id,
                OpKind.MERGE,
                side.record.remote_id,
                loser_ids=losers,
                reason="duplicates on this platform",
            )
        )


def _tag_record(
    person_id: int,
    info: ConnectionInfo,
    record: RecordState,
    tag: str,
    reason: str,
    confirmed: FieldDict,
    out: PersonPlan,
) -> None:
    """Add ``tag`` to one record's tags (once: a record already tagged gets nothing). The
    snapshot belongs to the primary record, so the op confirms what is confirmed already."""
    tags = frozenset(members((record.current or {}).get("tags")))
    if tag in tags:
        return
    if not covers(info.update_fields, "tags"):
        out.ops.append(
            PlanOp(
                info.name,
                person_id,
                OpKind.EXCLUDE,
                record.remote_id,
                reason=f"{reason}; {info.name} cannot tag contacts",
            )
        )
        return
    new = tags | {tag}
    out.ops.append(
        PlanOp(
            info.name,
            person_id,
            OpKind.TAG,
            record.remote_id,
            fields={"tags": new},
            confirms=dict(confirmed),
            before={"tags": tags},
            reason=reason,
        )
    )


def _same_dict(a: FieldDict, b: FieldDict) -> bool:
    if a == b:
        # Equal dicts: every key holds an equal value on both sides, and ``same`` of two
        # equal canonical values is true (empty or not).
        return True
    keys = set(a) | set(b)
    return all(same(a.get(k), b.get(k)) for k in keys)
