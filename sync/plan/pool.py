"""Planning a large plan's slices in worker processes (as dlt normalizes its load packages in a
process pool): reconcile and payload rendering are pure Python, so on one interpreter a
backfill's planning is bound to one core however many the machine has.

    plan_in_workers(store, config, names, capabilities, dirty, slices, ...) -> None

Each worker opens its own connection to the same store and, per slice of dirty persons, does
exactly what the single-process loop in :mod:`sync.plan.build` does: load the slice's views,
reconcile, render payloads, then store the golden records, read-confirmed snapshots, conflicts
and (through the queue) the outbox intents, and commit that slice on its own. A slice holds
whole persons and the persons of two slices share nothing, so slices commit in any order; a
crash leaves the uncommitted slices' persons dirty, to be planned again, as streaming does.

The parent only hands out slices and adds up what each one returns (counts, conflicts, the
queue's enqueue counts); it calls ``on_commit`` after each slice has committed, so the push
sends a slice's intents while later slices are planned.

Workers are started with ``spawn``, never ``fork``: planning runs in a thread next to the
push's event loop, and a forked child would inherit that loop's and the store's locks mid-use.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from connectors.base import Capabilities
from sync.plan.context import connection_info, reconcile_policy
from sync.plan.model import ConflictDecision, Plan
from sync.plan.slice import MatchNotes, plan_slice
from sync.store import Store

# Below this many dirty persons a pool costs more than it saves (worker start-up is about a
# second; one core plans some 10,000 persons a second).
PARALLEL_FROM = 50_000


def default_workers() -> int:
    """Worker processes for a large plan: one per core the process may use, at most four (the
    store's writes are serialized on SQLite, so more would mostly wait)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


@runtime_checkable
class PortableQueue(Protocol):
    """A planning queue that can be rebuilt in a worker process (``sync.apply.PlanQueue``)."""

    def portable(self) -> QueueSpec: ...
    def absorb(self, counts: Any) -> None: ...


class QueueSpec(Protocol):
    """What a worker needs to rebuild a queue on its own store handle."""

    def open(self, store: Any) -> Callable[[Any, Plan], None]:
        """A queue writing through ``store``; its ``result`` counts what it queued."""
        ...


@dataclass
class _Setup:
    """Everything a worker is started with (pickled once per worker)."""

    store_url: str
    config: Any
    names: list[str]
    capabilities: dict[str, Capabilities]
    run_id: int | None
    merged_persons: set[int]
    primaries: dict[tuple[int, str], str]
    queue: QueueSpec | None
    notes: MatchNotes | None = None
    parent_pid: int = field(default_factory=os.getpid)


@dataclass
class SliceResult:
    """What one planned and committed slice reports back to the parent."""

    persons: int
    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    conflicts: list[ConflictDecision] = field(default_factory=list)
    queued: Any = None  # the queue's own counts for this slice (``EnqueueResult``)


def worker_config(config: Any) -> Any:
    """A copy of ``config`` to send to a worker: without credentials (planning never calls a
    platform, so secrets stay in the parent) and without the parent's loaded mappings (each
    worker loads its own)."""
    connections = {name: conn.model_copy(update={"credentials": {}}) for name, conn in config.connections.items()}
    copy = config.model_copy(update={"connections": connections})
    copy._mappings = {}
    return copy


def plan_in_workers(
    store: Any,
    config: Any,
    names: Sequence[str],
    capabilities: Mapping[str, Capabilities],
    dirty: Sequence[int],
    slices: Sequence[tuple[int, int]],
    *,
    plan: Plan,
    run_id: int | None,
    merged_persons: set[int],
    primaries: Mapping[tuple[int, str], str],
    queue: PortableQueue | None,
    workers: int,
    notes: MatchNotes | None = None,
    on_commit: Callable[[], None] | None = None,
) -> None:
    """Plan and commit ``dirty[start:end]`` for each of ``slices`` in ``workers`` processes,
    adding each slice's counts and conflicts to ``plan`` (and its enqueue counts to ``queue``)
    as it commits. The first failure stops handing out slices and is raised once the slices
    already running have finished."""
    setup = _Setup(
        store_url=store.url,
        config=worker_config(config),
        names=list(names),
        capabilities=dict(capabilities),
        run_id=run_id,
        merged_persons=set(merged_persons),
        primaries=dict(primaries),
        queue=queue.portable() if queue is not None else None,
        notes=notes,
    )
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_start, initargs=(setup,)) as pool:
        pending = {pool.submit(_plan_slice, list(dirty[start:end])) for start, end in slices}
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                for future in done:
                    result: SliceResult = future.result()
                    plan.persons += result.persons
                    plan.untracked.update(result.counts)
                    plan.conflicts.extend(result.conflicts)
                    if queue is not None and result.queued is not None:
                        queue.absorb(result.queued)
                    if on_commit is not None:
                        on_commit()
        except BaseException:
            for future in pending:
                future.cancel()
            raise


# -- in the worker ------------------------------------------------------------------------------

_worker: _Worker | None = None


class _Worker:
    """A worker's store handle, mappings and policies, built once when it starts."""

    def __init__(self, setup: _Setup) -> None:
        self.setup = setup
        self.store = Store.open(setup.store_url, check=False)
        self.mappings = {n: setup.config.mapping(n) for n in setup.names}
        self.infos = {n: connection_info(n, self.mappings[n], setup.capabilities[n]) for n in setup.names}
        self.policy = reconcile_policy(setup.config)

    def plan(self, person_ids: list[int]) -> SliceResult:
        # A queue per slice, so its counts are this slice's alone.
        queue = self.setup.queue.open(self.store) if self.setup.queue is not None else None
        with self.store.transaction() as tx:
            part = plan_slice(
                tx,
                person_ids,
                self.infos,
                self.mappings,
                self.policy,
                merged_persons=self.setup.merged_persons,
                primaries=self.setup.primaries,
                notes=self.setup.notes,
                run_id=self.setup.run_id,
                queue=queue,
                release_read=True,
            )
        result = SliceResult(persons=len(part.golden), conflicts=part.conflicts, queued=getattr(queue, "result", None))
        for op in part.ops:
            result.counts[(op.connection, op.kind.value)] += 1
        return result


class PlanningWorkerError(RuntimeError):
    """A planning worker could not start (its store, a mapping); raised in the parent."""


_failed: str | None = None


def _start(setup: _Setup) -> None:
    import gc

    global _worker, _failed
    _die_with_parent(setup.parent_pid)
    # As in the parent's planning: no cyclic collection over millions of acyclic dicts.
    gc.disable()
    try:
        _worker = _Worker(setup)
    except Exception as exc:
        # Kept for the first slice to raise: an initializer's own exception would only break
        # the pool ("a process in the initializer failed") and lose what went wrong.
        _failed = f"{type(exc).__name__}: {exc}"


def _die_with_parent(parent_pid: int) -> None:
    """Have the kernel kill this worker when its parent dies (Linux). A worker orphaned by a
    kill -9 of the daemon would otherwise go on committing its slice while a restarted
    daemon plans the same persons; killed, its open transaction simply rolls back."""
    import ctypes
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # the parent died before the request took effect
        os._exit(1)


def _plan_slice(person_ids: list[int]) -> SliceResult:
    import gc

    if _worker is None:
        raise PlanningWorkerError(f"a planning worker could not start: {_failed or 'its initializer did not run'}")
    try:
        return _worker.plan(person_ids)
    finally:
        # The slice's objects are freed by reference counting; this frees the few cycles among
        # them (a young-generation pass: cheap, with collection otherwise off).
        gc.collect(0)


__all__ = ["PARALLEL_FROM", "PlanningWorkerError", "SliceResult", "default_workers", "plan_in_workers", "worker_config"]
