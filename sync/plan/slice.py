"""Planning one slice of persons: load their views from the store, reconcile, render each
op's payload through its connection's mapping, and store the plan state (uncommitted)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sync.canonical import FieldDict, is_empty, members
from sync.mapping import FieldMapping
from sync.plan.context import PlanContext
from sync.plan.model import OpKind, Plan, PlanOp
from sync.reconcile import ConnectionInfo, PersonView, ReconcilePolicy, RecordState, Side, covers, reconcile, same
from sync.store import UnitOfWork
from sync.store.persons import PersonRows, RecordRow


@dataclass(frozen=True)
class MatchNotes:
    """What this run's match says about persons beyond their records: those joined by an
    *inferred* platform merge (no signal such as ``mergeToContactId``), and per person the keys
    (kind, value) contested by a suspected merge, not to be carried to its other platforms."""

    inferred_merges: frozenset[int] = frozenset()
    withheld: Mapping[int, frozenset[tuple[str, str]]] = field(default_factory=dict)


_NO_NOTES = MatchNotes()
_T = TypeVar("_T")
# Key kinds -> the canonical list field holding them.
_KEY_FIELDS = {"email": "emails", "phone": "phones"}


def plan_slice(
    tx: UnitOfWork,
    person_ids: Sequence[int],
    infos: Mapping[str, ConnectionInfo],
    mappings: Mapping[str, FieldMapping],
    policy: ReconcilePolicy,
    *,
    merged_persons: set[int] | frozenset[int] = frozenset(),
    primaries: Mapping[tuple[int, str], str] | None = None,
    notes: MatchNotes | None = None,
    run_id: int | None = None,
    queue: Callable[[UnitOfWork, Plan], None] | None = None,
    save: bool = True,
    release_read: bool = False,
    skip: frozenset[str] | set[str] = frozenset(),
) -> Plan:
    """Plan one slice of persons in the unit of work ``tx``: load their views, reconcile, render the
    payloads and (``save``) store the plan state and queue the intents — uncommitted.
    ``release_read`` commits right after loading, so on SQLite the write lock is not held
    while the slice is computed (another writer — the push, another worker — goes on).
    ``skip``: connections whose pull failed this cycle: their ops and read-confirmed snapshots
    are dropped and the persons they concerned are marked dirty again after saving."""
    people = tx.persons.load_person_views(person_ids)
    if release_read:
        tx.commit()
    ctx = PlanContext(mappings, {})
    views = [person_view(p, infos, mappings, ctx, merged_persons, primaries, notes) for p in people]
    decided = reconcile(views, infos, policy)
    unplanned = _drop_skipped(decided, skip) if skip else set()
    part = render_payloads(decided, ctx)
    if save:
        existing = [(p.person_id, c) for p in people for c in p.snapshots]
        # Optimistic: a person whose version moved while this slice was computed (a manual
        # resolution) is not saved and stays dirty; none of its ops is queued.
        versions = {p.person_id: p.version for p in people}
        rejected = tx.persons.save_plan_state(part, run_id=run_id, existing=existing, versions=versions)
        if rejected:
            _drop_persons(part, rejected)
        if queue is not None:
            queue(tx, part)
        if unplanned:
            # Planned for the other connections, not yet for the skipped ones: a later cycle
            # whose pull of them succeeds plans these persons again.
            tx.replan.mark_dirty(sorted(unplanned))
    return part


def _drop_skipped(plan: Plan, skip: frozenset[str] | set[str]) -> set[int]:
    """Drop the ops and read-confirmed snapshots of connections in ``skip``; return the persons
    they concerned."""
    persons = {op.person_id for op in plan.ops if op.connection in skip}
    persons.update(p for (p, c) in plan.snapshots if c in skip)
    if persons:
        plan.ops = [op for op in plan.ops if op.connection not in skip]
        plan.snapshots = {k: v for k, v in plan.snapshots.items() if k[1] not in skip}
    return persons


def _drop_persons(part: Plan, persons: set[int]) -> None:
    """Leave out of ``part`` everything it planned for ``persons`` (to be planned again)."""
    part.ops = [op for op in part.ops if op.person_id not in persons]
    part.golden = {p: g for p, g in part.golden.items() if p not in persons}
    part.snapshots = {k: v for k, v in part.snapshots.items() if k[0] not in persons}
    part.conflicts = [c for c in part.conflicts if c.person_id not in persons]


def person_view(
    person: PersonRows,
    infos: Mapping[str, ConnectionInfo],
    mappings: Mapping[str, FieldMapping],
    ctx: PlanContext,
    merged_persons: set[int] | frozenset[int] = frozenset(),
    primaries: Mapping[tuple[int, str], str] | None = None,
    notes: MatchNotes | None = None,
) -> PersonView:
    """The reconcile view of a stored person: per connection the primary record, further live
    records, and the snapshot. Records merged away are not sides at all.

    With several live records on one connection, the primary is the one the snapshot belongs
    to — the record whose values agree with the snapshot on the most fields — then the one
    the match preferred, then the oldest; with none live, a deleted one (so a delete is seen).
    Choosing by the snapshot keeps the primary stable across runs (the snapshot is per person
    and connection, so pairing it with another record would fake changes)."""
    by_conn: dict[str, list[RecordRow]] = {}
    for rec in person.records:
        if rec.connection in infos and not rec.merged_into:
            by_conn.setdefault(rec.connection, []).append(rec)
    sides: dict[str, Side] = {}
    for conn, recs in by_conn.items():
        snapshot = person.snapshots.get(conn)
        if len(recs) == 1:  # the common case: nothing to choose between
            rec = recs[0]
            ctx.payloads[(conn, rec.remote_id)] = rec.payload
            current = mappings[conn].read(rec.payload).fields
            state = _new(
                RecordState, remote_id=rec.remote_id, current=current, updated_at=rec.updated_at, deleted=rec.deleted
            )
            sides[conn] = _new(Side, connection=conn, record=state, snapshot=snapshot, others=())
            continue
        preferred = (primaries or {}).get((person.person_id, conn))
        states: list[tuple[tuple[int, bool, int], RecordState]] = []
        for rec in recs:
            if rec.deleted and any(not r.deleted for r in recs):
                continue
            ctx.payloads[(conn, rec.remote_id)] = rec.payload
            current = mappings[conn].read(rec.payload).fields
            agree = _agreement(current, snapshot) if snapshot is not None and len(recs) > 1 else 0
            order = (-agree, rec.remote_id != preferred, rec.id)
            states.append((order, RecordState(rec.remote_id, current, rec.updated_at, rec.deleted)))
        states.sort(key=lambda item: item[0])
        chosen = [state for _, state in states]
        if chosen[0].deleted:
            chosen = chosen[:1]
        sides[conn] = Side(conn, chosen[0], snapshot, tuple(chosen[1:]))
    notes = notes or _NO_NOTES
    pid = person.person_id
    withheld = frozenset((_KEY_FIELDS[k], v) for k, v in notes.withheld.get(pid, ()) if k in _KEY_FIELDS)
    return _new(
        PersonView,
        person_id=pid,
        golden=person.golden,
        sides=sides,
        merged=pid in merged_persons,
        merge_inferred=pid in notes.inferred_merges,
        absorbed=_absorbed(person, mappings),
        withheld=withheld,
    )


def _new(cls: type[_T], **values: Any) -> _T:
    """``cls(**values)`` for a frozen dataclass given every field, without its per-field
    ``object.__setattr__`` calls (a backfill builds millions of views and states)."""
    obj = object.__new__(cls)
    obj.__dict__.update(values)
    return obj


def _absorbed(person: PersonRows, mappings: Mapping[str, FieldMapping]) -> frozenset[tuple[str, str]]:
    """The email and phone keys of the person's records merged away on their platform."""
    out: set[tuple[str, str]] = set()
    for rec in person.records:
        if rec.merged_into and rec.connection in mappings:
            fields = mappings[rec.connection].read(rec.payload).fields
            out.update((f, v) for f in _KEY_FIELDS.values() for v in members(fields.get(f)))
    return frozenset(out)


def _agreement(current: FieldDict, snapshot: FieldDict) -> int:
    """How many fields a record's values share with a snapshot."""
    return sum(1 for k in set(current) | set(snapshot) if same(current.get(k), snapshot.get(k)))


def render_payloads(plan: Plan, ctx: PlanContext) -> Plan:
    """Each create/update/tag op with its platform payload (through the mapping). An update
    whose payload comes out empty and that changes no endpoint field is dropped — its values
    are already held there — and its snapshot is confirmed instead."""
    ops: list[PlanOp] = []
    passive = (OpKind.DELETE, OpKind.MERGE, OpKind.EXCLUDE)
    for op in plan.ops:
        mapping = ctx.mappings.get(op.connection)
        if mapping is None or op.kind in passive:
            ops.append(op)
            continue
        if op.kind is OpKind.CREATE:
            # The payload, and what the platform will read back of it (the mapping's fit).
            body, back = mapping.create(op.fields)
            writable = mapping.writable
            confirms = {k: v for k, v in back.items() if (k in writable or covers(writable, k)) and not is_empty(v)}
            if confirms == op.fields:
                confirms = op.fields  # one dict, not two equal ones (a backfill holds millions)
            ops.append(_with(op, payload=body, confirms=confirms))
            continue
        base = ctx.payloads.get((op.connection, op.remote_id or ""), {})
        payload = mapping.changes(op.fields, base)
        endpoint = set(op.fields) & set(mapping.endpoint_fields)
        if not payload and not endpoint:
            if op.kind is OpKind.UPDATE:
                plan.snapshots[(op.person_id, op.connection)] = dict(op.confirms)
            continue
        ops.append(_with(op, payload=payload))
    plan.ops = ops
    return plan


def _with(op: PlanOp, **changes: Any) -> PlanOp:
    """``dataclasses.replace`` for a PlanOp without its per-call field introspection (a
    backfill renders millions): a copy of the instance dict with ``changes`` set."""
    new = object.__new__(PlanOp)
    new.__dict__.update(op.__dict__)
    new.__dict__.update(changes)
    return new
