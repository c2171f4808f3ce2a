"""The glue from the staging store to a Plan: match the dirty records, reconcile the dirty
persons, render each op's payload through its connection's mapping — and print plans.

    build_plan(store, config, names, capabilities, run_id=..., commit=True) -> Plan
    render_text(plan) -> str          render_json(plan) -> dict

Everything runs in one store transaction: with ``commit=False`` (``contactsync plan``, a dry
run) it is rolled back, so nothing is written anywhere, not even locally.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from connectors.base import Capabilities
from sync.canonical import FieldDict, is_empty, to_json_value
from sync.match import MatchInput, MatchPolicy, MatchResult, match_records
from sync.plan import OpKind, Plan, PlanOp
from sync.reconcile import (
    ConflictPolicy,
    ConnectionInfo,
    DeletePolicy,
    FieldRule,
    MergePolicy,
    PersonView,
    RecordState,
    ReconcilePolicy,
    Side,
    covers,
    reconcile,
    same,
)
from sync.store import Store
from sync.store.replan import mark_all_persons_dirty_in
from sync.store.persons import (
    MatchRows,
    PersonRows,
    RecordRow,
    ReviewRow,
    dirty_person_ids,
    load_match_input,
    load_person_views,
    save_match,
    save_plan_state,
)


class Mapping_(Protocol):
    """What planning needs of a ``sync.mapping.FieldMapping``."""

    readable: frozenset[str]
    writable: frozenset[str]
    updatable_keys: frozenset[str] | None
    endpoint_fields: frozenset[str]
    lenses: Any

    def read(self, raw: dict[str, Any]) -> Any: ...
    def write(self, fields: Mapping[str, Any], base: dict[str, Any] | None = None) -> dict[str, Any]: ...
    def create(self, fields: Mapping[str, Any]) -> tuple[dict[str, Any], FieldDict]: ...
    def changes(self, fields: Mapping[str, Any], base: dict[str, Any]) -> dict[str, Any]: ...
    def fit(self, fields: Mapping[str, Any]) -> FieldDict: ...


# -- policies from the configuration ----------------------------------------------------------


def match_policy(config: Any, capabilities: Mapping[str, Capabilities] | None = None) -> MatchPolicy:
    """``MatchPolicy`` from ``config.matching`` (keys with strength). A vanished record is
    inferred merged only on connections that can merge natively (``capabilities``)."""
    infer = None
    if capabilities is not None:
        infer = frozenset(n for n, c in capabilities.items() if c.can_merge)
    return MatchPolicy(keys={k.kind: k.strength for k in config.matching.keys}, infer_merges=infer)


_DUPLICATES = {"link_oldest": "link", "flag": "link", "merge_native": "merge"}


def reconcile_policy(config: Any) -> ReconcilePolicy:
    """``ReconcilePolicy`` from ``config.conflicts`` / ``.deletes`` / ``.merges`` /
    ``.matching.duplicates``. Sets (tags, identities) merge by ``union`` unless a field says
    otherwise, as the configuration documents."""
    c = config.conflicts
    overrides = {name: FieldRule(rule=rule) for name, rule in c.fields.items()}
    for name in ("tags", "identities"):
        overrides.setdefault(name, FieldRule(rule=c.field_policy(name)))
    return ReconcilePolicy(
        conflicts=ConflictPolicy(rule=c.policy, priority=tuple(c.priority), overrides=overrides, empty_erases=c.empty_erases),
        deletes=DeletePolicy(mode=config.deletes.policy, tag=config.deletes.tag),
        merges=MergePolicy(fallback=config.merges.fallback, tag=config.merges.tag),
        duplicates=_DUPLICATES.get(config.matching.duplicates, "link"),
    )


def update_fields(mapping: Mapping_) -> frozenset[str]:
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


def connection_info(name: str, mapping: Mapping_, capabilities: Capabilities) -> ConnectionInfo:
    """How reconcile sees one connection: its mapping's fields narrowed by its capabilities."""
    create = frozenset(mapping.writable) if capabilities.can_create else frozenset()
    update = update_fields(mapping) if capabilities.can_update else frozenset()
    return ConnectionInfo(
        name, frozenset(mapping.readable), create, update, capabilities, shape=mapping.fit, confirm_from_payload=True
    )


# -- building a plan --------------------------------------------------------------------------


@dataclass
class PlanContext:
    """What a plan was built from, for rendering payloads (raw record by connection and id)."""

    mappings: Mapping[str, Mapping_]
    payloads: dict[tuple[str, str], dict[str, Any]]


def build_plan(
    store: Store,
    config: Any,
    names: Sequence[str],
    capabilities: Mapping[str, Capabilities],
    *,
    run_id: int | None = None,
    commit: bool = True,
    chunk_size: int = 20_000,
    queue: Callable[[Any, Plan], None] | None = None,
    replan: bool = False,
    keep_ops: bool | None = None,
    on_commit: Callable[[], None] | None = None,
    workers: int | None = None,
    parallel_from: int | None = None,
) -> Plan:
    """Match the store's dirty records, reconcile its dirty persons over connections ``names``
    and return the Plan with payloads rendered. ``commit`` stores the match, the golden records,
    read-confirmed snapshots and conflicts; without it the transaction is rolled back.

    ``queue(session, slice)`` is called for each planned slice inside the same transaction
    (the outbox's :class:`sync.apply.PlanQueue`): a caller that will carry the plan out must
    pass it, or a crash between this commit and a later enqueue would lose the edits whose
    persons this commit marks clean.

    ``replan`` reconciles every live person, not only the dirty ones (a connection joined the
    profile, or the user asked for it after changing mappings or policies).

    ``keep_ops`` (default: only when no ``queue`` is given) makes the returned Plan hold every
    op, golden record and read-confirmed snapshot. Without it the slices are dropped once
    stored and queued, and the Plan keeps their counts (``summary()``), the conflicts and the
    number of persons: a backfill's millions of rendered payloads never sit in memory at once.

    ``on_commit`` (with ``commit``) streams: the match and then each slice commit on their own
    and ``on_commit()`` is called after each slice's commit, so a push can send the first
    slices while later ones are planned. Each slice still commits its golden records, cleared
    dirty flags and intents together; a crash leaves the later slices' persons dirty, to be
    planned again. Slices grow from a small first one (the push starts early), and on SQLite
    the write lock is released while a slice is computed (the push records its results
    meanwhile).

    ``workers`` (default: one per core, at most four) plans a large plan — at least
    ``parallel_from`` dirty persons (default ``sync.plan_pool.PARALLEL_FROM``), committed, its
    ops not kept — in that many worker processes (``sync.plan_pool``). The match commits first
    and each slice then commits on its own, as when streaming, whether or not ``on_commit`` is
    given; ``workers=1`` always plans in this process."""
    from sync.plan_pool import PARALLEL_FROM, default_workers

    mappings = {n: config.mapping(n) for n in names}
    infos = {n: connection_info(n, mappings[n], capabilities[n]) for n in names}
    session = store.manual_session()
    keep = queue is None if keep_ops is None else keep_ops
    count = default_workers() if workers is None else workers
    pool = None
    if count > 1 and _shareable(store):
        pool = _Pool(store, count, PARALLEL_FROM if parallel_from is None else parallel_from)
    with _no_gc():
        return _build(
            session,
            mappings,
            infos,
            config,
            capabilities,
            run_id=run_id,
            commit=commit,
            chunk_size=chunk_size,
            queue=queue,
            replan=replan,
            keep=keep,
            on_commit=on_commit if commit else None,
            pool=pool,
        )


def _shareable(store: Store) -> bool:
    """Whether other processes can open ``store`` (not an in-memory SQLite database)."""
    from sqlalchemy.engine import make_url

    url = make_url(store.url)
    return not (url.get_backend_name() == "sqlite" and (not url.database or url.database == ":memory:" or "mode=memory" in str(url)))


@contextmanager
def _no_gc() -> Iterator[None]:
    """Cyclic garbage collection off while millions of acyclic dicts and ops are built: its
    full passes over a growing heap would make a backfill's planning superlinear."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _build(
    session: Any,
    mappings: Mapping[str, Mapping_],
    infos: Mapping[str, ConnectionInfo],
    config: Any,
    capabilities: Mapping[str, Capabilities],
    *,
    run_id: int | None,
    commit: bool,
    chunk_size: int,
    queue: Callable[[Any, Plan], None] | None,
    replan: bool,
    keep: bool,
    on_commit: Callable[[], None] | None = None,
    pool: _Pool | None = None,
) -> Plan:
    try:
        if replan:
            mark_all_persons_dirty_in(session)
        merged_persons, primaries = match_dirty(session, match_policy(config, capabilities))
        policy = reconcile_policy(config)
        plan = Plan()
        dirty = dirty_person_ids(session)
        parallel = pool is not None and commit and not keep and len(dirty) >= pool.threshold
        if parallel and queue is not None and not hasattr(queue, "portable"):
            parallel = False  # a queue that cannot be rebuilt in a worker: plan here
        if on_commit is not None or parallel:
            session.commit()
        # Workers take smaller slices: each holds one at a time, and several run at once.
        size = min(chunk_size, PARALLEL_SLICE) if parallel else chunk_size
        slices = list(_slices(len(dirty), size, streaming=on_commit is not None or parallel))
        if parallel:
            assert pool is not None
            from sync.plan_pool import plan_in_workers

            plan_in_workers(
                pool.store, config, list(infos), capabilities, dirty, slices,
                plan=plan, run_id=run_id, merged_persons=merged_persons, primaries=primaries,
                queue=queue, workers=pool.workers, on_commit=on_commit,  # type: ignore[arg-type]
            )
            return plan
        # In slices, so a backfill holds one slice of views and raw payloads at a time.
        for start, end in slices:
            part = plan_slice(
                session, dirty[start:end], infos, mappings, policy,
                merged_persons=merged_persons, primaries=primaries, run_id=run_id,
                queue=queue if commit else None, save=commit, release_read=on_commit is not None,
            )
            if commit and on_commit is not None:
                session.commit()
                on_commit()
            plan.persons += len(part.golden)
            plan.conflicts.extend(part.conflicts)
            if keep:
                plan.ops.extend(part.ops)
                plan.golden.update(part.golden)
                plan.snapshots.update(part.snapshots)
            else:
                plan.count(part.ops)
            del part
        if commit:
            session.commit()
        else:
            session.rollback()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
    return plan


def plan_slice(
    session: Any,
    person_ids: Sequence[int],
    infos: Mapping[str, ConnectionInfo],
    mappings: Mapping[str, Mapping_],
    policy: ReconcilePolicy,
    *,
    merged_persons: set[int] | frozenset[int] = frozenset(),
    primaries: Mapping[tuple[int, str], str] | None = None,
    run_id: int | None = None,
    queue: Callable[[Any, Plan], None] | None = None,
    save: bool = True,
    release_read: bool = False,
) -> Plan:
    """Plan one slice of persons in ``session``: load their views, reconcile, render the
    payloads and (``save``) store the plan state and queue the intents — uncommitted.
    ``release_read`` commits right after loading, so on SQLite the write lock is not held
    while the slice is computed (another writer — the push, another worker — goes on)."""
    people = load_person_views(session, person_ids)
    if release_read:
        session.commit()
    ctx = PlanContext(mappings, {})
    views = [person_view(p, infos, mappings, ctx, merged_persons, primaries) for p in people]
    part = render_payloads(reconcile(views, infos, policy), ctx)
    if save:
        existing = [(p.person_id, c) for p in people for c in p.snapshots]
        save_plan_state(session, part, run_id=run_id, existing=existing)
        if queue is not None:
            queue(session, part)
    return part


PARALLEL_SLICE = 10_000


@dataclass
class _Pool:
    """Where large plans go when planned in worker processes (``sync.plan_pool``)."""

    store: Store
    workers: int
    threshold: int


def _slices(total: int, size: int, *, streaming: bool) -> Iterator[tuple[int, int]]:
    """(start, end) of each slice: ``size`` each, or when streaming, growing from a small first
    slice to ``size`` (the first intents are queued within a fraction of a second)."""
    step = min(size, 1_000) if streaming else size
    start = 0
    while start < total:
        end = min(total, start + step)
        yield start, end
        start = end
        step = min(size, step * 2)


def run_match(store: Store, config: Any, capabilities: Mapping[str, Capabilities] | None = None) -> set[int]:
    """Only the matching step, committed: the dirty records get their persons (the persons
    they touch become dirty for the next plan). Returns the persons a platform merge joined."""
    with store.stepwise_session() as session, _no_gc():
        merged, _ = match_dirty(session, match_policy(config, capabilities))
    return merged


def match_dirty(session: Any, policy: MatchPolicy) -> tuple[set[int], dict[tuple[int, str], str]]:
    """Match the dirty records and store the result. Returns the persons a platform merge
    joined this run, and the primary record (remote id) per (person, connection) where a
    person has several."""
    rows = load_match_input(session)
    if not len(rows):
        return set(), {}
    result = match_records(_input(rows), policy)
    outcome = save_match(
        session,
        rows,
        result.person_of.tolist(),
        folds=result.folds,
        merged=result.merged,
        reviews=_reviews(rows, result),
        new_persons=result.new_persons,
    )

    def real(p: int) -> int:
        return outcome.new_person_ids.get(p, p)

    merged = {real(p) for p in result.merge_persons}
    primaries = {(real(d.person), d.connection): rows.remote_ids[d.records[0]] for d in result.duplicates}
    return merged, primaries


def _input(rows: MatchRows) -> MatchInput:
    return MatchInput(
        record_ids=rows.record_ids,
        connections=rows.connections,
        remote_ids=rows.remote_ids,
        person_ids=rows.person_ids,
        merged_into=rows.merged_into,
        deleted=rows.deleted,
        key_records=rows.key_records,
        key_kinds=rows.key_kinds,
        key_values=rows.key_values,
        # A record deleted and already matched is not news: only a newly seen delete may be
        # a platform merge.
        vanished_now=np.logical_and(rows.deleted, rows.dirty),
    )


def _reviews(rows: MatchRows, result: MatchResult) -> list[ReviewRow]:
    out = []
    for r in result.reviews:
        records = [
            {"connection": rows.connections[i], "remote_id": rows.remote_ids[i], "person_id": int(result.person_of[i])}
            for i in r.records
        ]
        out.append(ReviewRow(r.kind, r.key, records, r.detail))
    return out


def person_view(
    person: PersonRows,
    infos: Mapping[str, ConnectionInfo],
    mappings: Mapping[str, Mapping_],
    ctx: PlanContext,
    merged_persons: set[int] | frozenset[int] = frozenset(),
    primaries: Mapping[tuple[int, str], str] | None = None,
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
            sides[conn] = Side(conn, RecordState(rec.remote_id, current, rec.updated_at, rec.deleted), snapshot)
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
    return PersonView(person.person_id, person.golden, sides, merged=person.person_id in merged_persons)


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


# -- printing ---------------------------------------------------------------------------------


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
