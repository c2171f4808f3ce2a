"""Building a Plan from the staging store: match the dirty records, then reconcile the dirty
persons slice by slice (:mod:`sync.plan.slice`), in this process or in worker processes
(:mod:`sync.plan.pool`).

    build_plan(store, config, names, capabilities, run_id=..., commit=True) -> Plan

Everything goes through one unit of work, ``store.transaction()``. With ``commit=False``
(``contactsync plan``, a dry run) it is rolled back at the end, so nothing is written anywhere,
not even locally. With ``commit`` a plain plan commits once at the end; a streamed or parallel
plan commits the match first and then each slice on its own (``tx.commit()``; a crash leaves the
later slices' persons dirty, to be planned again).
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, cast

import numpy as np

from connectors.base import Capabilities
from sync.mapping import FieldMapping
from sync.match import MatchInput, MatchPolicy, MatchResult, match_records
from sync.plan import pool as plan_pool
from sync.plan.context import connection_info, match_policy, reconcile_policy
from sync.plan.model import Plan
from sync.plan.slice import MatchNotes, plan_slice
from sync.reconcile import ConnectionInfo
from sync.store import Store, UnitOfWork
from sync.store.persons import MatchRows, ReviewRow


def build_plan(
    store: Store,
    config: Any,
    names: Sequence[str],
    capabilities: Mapping[str, Capabilities],
    *,
    run_id: int | None = None,
    commit: bool = True,
    chunk_size: int = 20_000,
    queue: Callable[[UnitOfWork, Plan], None] | None = None,
    replan: bool = False,
    keep_ops: bool | None = None,
    on_commit: Callable[[], None] | None = None,
    workers: int | None = None,
    parallel_from: int | None = None,
    skip: Collection[str] = (),
) -> Plan:
    """Match the store's dirty records, reconcile its dirty persons over connections ``names``
    and return the Plan with payloads rendered. ``commit`` stores the match, the golden records,
    read-confirmed snapshots and conflicts; without it the transaction is rolled back.

    ``queue(tx, slice)`` is called for each planned slice inside the same unit of work
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
    ``parallel_from`` dirty persons (default ``sync.plan.pool.PARALLEL_FROM``), committed, its
    ops not kept — in that many worker processes (``sync.plan.pool``). The match commits first
    and each slice then commits on its own, as when streaming, whether or not ``on_commit`` is
    given; ``workers=1`` always plans in this process.

    ``skip``: connections whose pull failed this cycle. Their records are unknown, so nothing
    is planned for them (no create, update, delete, tag or exclusion; no snapshot confirmed)
    and every person that would have had one stays dirty, to be planned by a later cycle.
    Such a plan is computed in this process."""
    mappings = {n: config.mapping(n) for n in names}
    infos = {n: connection_info(n, mappings[n], capabilities[n]) for n in names}
    keep = queue is None if keep_ops is None else keep_ops
    count = plan_pool.default_workers() if workers is None else workers
    pool = None
    if count > 1 and store.shareable and not skip:
        pool = _Pool(store, count, plan_pool.PARALLEL_FROM if parallel_from is None else parallel_from)
    with store.transaction() as tx, _no_gc():
        return _build(
            tx,
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
            skip=frozenset(skip),
        )


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
    tx: UnitOfWork,
    mappings: Mapping[str, FieldMapping],
    infos: Mapping[str, ConnectionInfo],
    config: Any,
    capabilities: Mapping[str, Capabilities],
    *,
    run_id: int | None,
    commit: bool,
    chunk_size: int,
    queue: Callable[[UnitOfWork, Plan], None] | None,
    replan: bool,
    keep: bool,
    on_commit: Callable[[], None] | None = None,
    pool: _Pool | None = None,
    skip: frozenset[str] = frozenset(),
) -> Plan:
    if replan:
        tx.persons.mark_all_dirty()
    merged_persons, primaries, notes = match_dirty(tx, match_policy(config, capabilities))
    policy = reconcile_policy(config)
    plan = Plan() if keep else Plan.counted()
    dirty = tx.persons.dirty_person_ids()
    parallel = pool is not None and commit and not keep and len(dirty) >= pool.threshold
    portable = queue if isinstance(queue, plan_pool.PortableQueue) else None
    if parallel and queue is not None and portable is None:
        parallel = False  # a queue that cannot be rebuilt in a worker: plan here
    if on_commit is not None or parallel:
        tx.commit()
    # Workers take smaller slices: each holds one at a time, and several run at once.
    size = min(chunk_size, PARALLEL_SLICE) if parallel else chunk_size
    slices = list(_slices(len(dirty), size, streaming=on_commit is not None or parallel))
    if parallel:
        assert pool is not None
        plan_pool.plan_in_workers(
            pool.store,
            config,
            list(infos),
            capabilities,
            dirty,
            slices,
            plan=plan,
            run_id=run_id,
            merged_persons=merged_persons,
            primaries=primaries,
            notes=notes,
            queue=portable,
            workers=pool.workers,
            on_commit=on_commit,
        )
        # The slices are committed: statistics of what they rewrote, taken now rather than
        # by the next cycle's match (PostgreSQL; see Persons.refresh_statistics).
        tx.persons.refresh_statistics()
        return plan
    # In slices, so a backfill holds one slice of views and raw payloads at a time.
    for start, end in slices:
        part = plan_slice(
            tx,
            dirty[start:end],
            infos,
            mappings,
            policy,
            merged_persons=merged_persons,
            primaries=primaries,
            notes=notes,
            run_id=run_id,
            queue=queue if commit else None,
            save=commit,
            release_read=on_commit is not None,
            skip=skip,
        )
        if commit and on_commit is not None:
            tx.commit()
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
    if not commit:
        tx.rollback()  # a dry run: nothing of the match or the plan is kept
    return plan


PARALLEL_SLICE = 10_000


@dataclass
class _Pool:
    """Where large plans go when planned in worker processes (``sync.plan.pool``)."""

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
    with store.transaction() as tx, _no_gc():
        merged, _, _ = match_dirty(tx, match_policy(config, capabilities))
    return merged


def match_dirty(tx: UnitOfWork, policy: MatchPolicy) -> tuple[set[int], dict[tuple[int, str], str], MatchNotes]:
    """Match the dirty records and store the result. Returns the persons a platform merge
    joined this run, the primary record (remote id) per (person, connection) where a
    person has several, and the notes planning needs (inferred merges, contested keys)."""
    # Taken before the records are read: an answer given after this moment stays pending for
    # the next match, even if this one happens to read it.
    started = datetime.now(UTC)
    rows = tx.persons.load_match_input()
    if not len(rows):
        return set(), {}, MatchNotes()
    linked, apart = tx.persons.match_decisions()
    if linked or apart:  # a person's answers to ambiguous matches (the web page's review queue)
        policy = replace(policy, linked=linked, apart=apart)
    result = match_records(_input(rows), policy)
    outcome = tx.persons.save_match(
        rows,
        result.person_of.tolist(),
        folds=result.folds,
        merged=result.merged,
        reviews=_reviews(rows, result),
        new_persons=result.new_persons,
    )
    if linked or apart:
        tx.persons.mark_decisions_applied(started)

    def real(p: int) -> int:
        return outcome.new_person_ids.get(p, p)

    merged = {real(p) for p in result.merge_persons}
    primaries = {(real(d.person), d.connection): rows.remote_ids[d.records[0]] for d in result.duplicates}
    notes = MatchNotes(
        frozenset(real(p) for p in result.inferred_merge_persons),
        {real(p): keys for p, keys in result.withheld.items()},
    )
    return merged, primaries, notes


def _input(rows: MatchRows) -> MatchInput:
    # The store hands its columns over as NumPy arrays, which matching reads through
    # ``np.asarray``; MatchInput's fields are annotated as Sequences only, which an ndarray is
    # not to a type checker. The casts stand until those annotations accept arrays
    # (sync/match/graph.py; no copy to lists here, it would cost a Python object per record).
    return MatchInput(
        record_ids=cast("Sequence[int]", rows.record_ids),
        connections=rows.connections,
        remote_ids=rows.remote_ids,
        person_ids=cast("Sequence[int | None]", rows.person_ids),
        merged_into=rows.merged_into,
        deleted=cast("Sequence[bool]", rows.deleted),
        key_records=cast("Sequence[int]", rows.key_records),
        key_kinds=rows.key_kinds,
        key_values=rows.key_values,
        # A record deleted and already matched is not news: only a newly seen delete may be
        # a platform merge.
        vanished_now=cast("Sequence[bool]", np.logical_and(rows.deleted, rows.dirty)),
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
