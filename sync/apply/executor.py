"""Carrying out the outbox: one asyncio task per connection, all connections at once.

Per connection, first the rows left *in flight* by an earlier run are settled (a create is
never blindly repeated: upsert where the platform has one, otherwise look the contact up by
its keys and link what is found; updates, tag calls and deletes are idempotent and are simply
sent again). Then due rows are taken in id order, in chunks: the chunk is marked in flight
(committed), its calls run concurrently up to the connection's concurrency, and the results are
committed together — each row's outbox status, remote record link and snapshot in the same
transaction.

Errors are a table:

* ``RecordError`` (a 4xx for one contact) → the row is ``failed`` with the platform's message
  and a retry time (exponential backoff); the rest of the cycle goes on.
* ``RemoteUnavailable`` (retries exhausted) → the row waits for a later run; a create stays
  in flight, because the platform may have made it before the reply was lost.
* ``ConfigurationError`` (401/403) → that connection stops for this run; the others go on.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

import structlog

from connectors.base import (
    ConfigurationError,
    Connector,
    NotFound,
    PullMode,
    RawRecord,
    RecordError,
    RemoteUnavailable,
    Stopped,
    WriteResult,
)
from sync.apply.storethread import StoreThread
from sync.canonical import FieldDict, deep_merge_json, fields_to_json, same_json_value
from sync.metrics import record_write
from sync.store.models import OutboxStatus, utcnow
from sync.store.outbox import Completion, Failure, OutboxItem, OutboxStore, SendState

T = TypeVar("T")
log = structlog.get_logger("contactsync.apply")

KeysOf = Callable[[Mapping[str, Any]], list[tuple[str, str]]]
ReadFields = Callable[[Mapping[str, Any]], FieldDict]
Progress = Callable[[str, int], None]


@dataclass(frozen=True)
class Backoff:
    """Retry times of record-level failures: ``base * factor**(attempts-1)``, capped."""

    base_s: float = 60.0
    factor: float = 2.0
    max_s: float = 6 * 3600.0

    def next_at(self, attempts: int, now: datetime) -> datetime:
        delay = min(self.max_s, self.base_s * self.factor ** max(attempts - 1, 0))
        return now + timedelta(seconds=delay)


@dataclass
class Target:
    """One connection to push to.

    ``keys_of`` turns a raw payload into its normalized matching keys (through the mapping), so
    a record we create is indexed for matching at once; None leaves the key index to the stage.
    ``read_fields`` reads a raw payload into canonical fields: values a platform fills in on a
    new record by itself (GoHighLevel ``dnd: false``) join the snapshot, so reading them back
    next cycle is not mistaken for an edit made there.
    """

    name: str
    connector: Connector
    concurrency: int = 4
    keys_of: KeysOf | None = None
    read_fields: ReadFields | None = None
    # Called (off the event loop) with {canonical field: evidence} when a write's read-back
    # shows the platform did not hold what was sent (write verification); None: not recorded.
    on_unwritable: Callable[[str, dict[str, str]], Any] | None = None
    # Read each contact by id just before an update that was planned against its values, and
    # send nothing if they are no longer those (set per cycle: on when this cycle's pull cannot
    # vouch that the staged payloads are current - an incremental or eventually consistent
    # listing, a scan that failed, was held or came back short).
    verify_updates: bool = False
    # Remote ids this cycle's pull listed: their staged payloads are current, no read needed.
    fresh: frozenset[str] | set[str] = frozenset()


@dataclass
class ConnectionReport:
    """What apply did on one connection."""

    name: str
    calls: Counter[str] = field(default_factory=Counter)
    done: int = 0
    failed: int = 0
    deferred: int = 0  # left for a later run (platform unavailable, or stopped)
    settled: int = 0  # in-flight rows from an earlier run brought to a result
    found_by_lookup: int = 0
    superseded: int = 0  # stale rows found at send time: superseded, their persons planned again
    held: int = 0  # creates that could not be checked after a lost response: held for review
    vanished: int = 0  # contacts found deleted on the platform when a write was about to be sent
    stopped: str | None = None  # why this connection stopped early
    errors: list[str] = field(default_factory=list)
    # Fields a write's read-back showed the platform did not hold (write verification).
    unwritable: dict[str, str] = field(default_factory=dict)

    @property
    def write_calls(self) -> int:
        return sum(n for k, n in self.calls.items() if k not in ("lookup", "get"))

    def to_json(self) -> dict[str, Any]:
        return {
            "calls": dict(sorted(self.calls.items())),
            "write_calls": self.write_calls,
            "done": self.done,
            "failed": self.failed,
            "deferred": self.deferred,
            "settled": self.settled,
            "found_by_lookup": self.found_by_lookup,
            "superseded": self.superseded,
            "held": self.held,
            **({"unwritable": dict(self.unwritable)} if self.unwritable else {}),
            "vanished": self.vanished,
            "stopped": self.stopped,
            "errors": self.errors[:20],
        }


@dataclass
class ApplyReport:
    """What apply did, per connection."""

    connections: dict[str, ConnectionReport] = field(default_factory=dict)

    @property
    def write_calls(self) -> int:
        return sum(r.write_calls for r in self.connections.values())

    @property
    def done(self) -> int:
        return sum(r.done for r in self.connections.values())

    @property
    def failed(self) -> int:
        return sum(r.failed for r in self.connections.values())

    def to_json(self) -> dict[str, Any]:
        return {name: r.to_json() for name, r in sorted(self.connections.items())}


class PlanFeed:
    """Intents that arrive while planning still runs. Planning commits slice after slice and
    calls :meth:`notify` after each commit (on the event loop); the appliers send that run's
    rows as they come, so the slowest platform's writes start with the first slice instead of
    after the last."""

    def __init__(self, run_id: int) -> None:
        self.run_id = run_id
        self.finished = False
        self._wake = asyncio.Event()

    def notify(self, *, finished: bool = False) -> None:
        """More rows are committed (``finished``: and planning is over)."""
        if finished:
            self.finished = True
        wake, self._wake = self._wake, asyncio.Event()
        wake.set()

    def waiter(self) -> asyncio.Event:
        """The event the next :meth:`notify` sets (take it before looking for rows)."""
        return self._wake


class _Stop(Exception):
    """The connection must stop for this run (configuration error)."""


class _Unsettled(Exception):
    """A row looked at before the pull that must wait for planning (back to pending)."""


class _Held(Exception):
    """A create that may have landed and cannot be checked: held for a human."""


#: Ops that remove a merge's loser: sent before the other rows of their person.
_LOSERS_FIRST = frozenset({"merge", "delete"})


def _result_label(result: Completion | Failure) -> str:
    """The ``writes_total`` result of one row: done, failed (the platform refused it), held,
    or deferred (left pending or in flight for a later run)."""
    if isinstance(result, Completion):
        return "done"
    if result.status == OutboxStatus.HELD.value:
        return "held"
    if result.status == OutboxStatus.FAILED.value:
        return "failed"
    return "deferred"


class ConnectionApplier:
    """Applies the outbox of one connection."""

    def __init__(
        self,
        outbox: OutboxStore,
        target: Target,
        *,
        backoff: Backoff,
        chunk_size: int,
        stop: asyncio.Event | None,
        progress: Progress | None,
        io: StoreThread,
        feed: PlanFeed | None = None,
    ) -> None:
        self.io = io
        self.feed = feed
        self.outbox = outbox
        self.target = target
        self.connector = target.connector
        self.caps = target.connector.capabilities
        self.backoff = backoff
        self.chunk_size = max(chunk_size, target.concurrency)
        self.stop = stop
        self.progress = progress
        self.report = ConnectionReport(target.name)
        self._unwritable: dict[str, str] = {}  # found in this chunk, not yet recorded
        self._sem = asyncio.Semaphore(max(1, target.concurrency))
        self._claims: dict[str, int | None] = {}
        self._me: dict[int, int] = {}
        # The chunk's target records as staged (SendState): what an update's connector builds
        # its body on when this cycle's pull vouches for them, instead of reading each first.
        self._staged: SendState = SendState()
        self._key_owners: dict[str, set[int]] = {}
        self._probe = False

    # -- the loop -----------------------------------------------------------------------------

    async def run(self, *, settle_only: bool = False) -> ConnectionReport:
        try:
            in_flight = await self.io(self.outbox.in_flight, self.target.name)
            if settle_only:
                # Before the pull nothing is written: an in-flight create is only looked up
                # (linked if found, else back to pending), anything else goes back to pending,
                # to be re-planned against what the pull brings (or sent after it, if still
                # current). A write planned before an outside edit is never sent over it.
                if in_flight:
                    await self._chunk(in_flight, settling=True, probe=True)
                return self.report
            if in_flight and self.feed is None:
                await self._chunk(in_flight, settling=True)
            sent: set[int] = set()
            if self.feed is not None:
                await self._stream(self.feed, sent)
            last_id = 0
            while not self._stopping():
                items = await self.io(self.outbox.due, self.target.name, after_id=last_id, limit=self.chunk_size)
                if not items:
                    break
                last_id = items[-1].id
                items = [i for i in items if i.id not in sent]  # one walk of the queue per run
                if items:
                    await self.io(self.outbox.mark_in_flight, [i.id for i in items])
                    await self._chunk(items, settling=False)
        except _Stop:
            pass
        return self.report

    async def _stream(self, feed: PlanFeed, sent: set[int]) -> None:
        """While planning runs, send the rows it has committed so far. A person who still had
        rows from an earlier run waits for the final pass, which keeps each person's rows in
        queue order (planning may be superseding them meanwhile)."""
        held = await self.io(self.outbox.queued_persons, self.target.name, other_than_run=feed.run_id)
        last_id = 0
        while not self._stopping():
            wake, finished = feed.waiter(), feed.finished
            rows = await self.io(
                self.outbox.due, self.target.name, after_id=last_id, limit=self.chunk_size, run_id=feed.run_id
            )
            if rows:
                last_id = rows[-1].id
                items = [i for i in rows if i.person_id is not None and i.person_id not in held]
                if items:
                    sent.update(i.id for i in items)
                    await self.io(self.outbox.mark_in_flight, [i.id for i in items])
                    await self._chunk(items, settling=False)
                continue
            if finished:  # taken before the query: that query saw every slice
                return
            try:
                await asyncio.wait_for(wake.wait(), timeout=0.5)  # wake up now and then to see a stop
            except TimeoutError:
                pass

    async def _fresh(self, items: Sequence[OutboxItem]) -> list[OutboxItem]:
        """The rows still current, the others superseded (their persons planned again).

        A row is stale when its person's version is no longer the one it was planned at (a
        manual resolution, a newer plan), or - for a row queued by an earlier run - when its
        person waits to be planned again, or when the record it writes no longer holds (as
        last pulled) the values the row was planned against."""
        current = self.feed.run_id if self.feed is not None else None
        state = await self.io(self.outbox.send_state, items)
        self._staged = state
        stale: list[tuple[int, str]] = []
        for item in items:
            reason = self._staleness(item, state, current)
            if reason is not None:
                stale.append((item.id, reason))
        if not stale:
            return list(items)
        persons = {i.person_id for i in items if i.person_id is not None and i.id in dict(stale)}
        await self.io(self.outbox.supersede_stale, stale, persons)
        self.report.superseded += len(stale)
        gone = dict(stale)
        return [i for i in items if i.id not in gone]

    def _staleness(self, item: OutboxItem, state: SendState, current: int | None) -> str | None:
        if item.person_id is None:
            return None
        person = state.persons.get(item.person_id)
        if person is None:
            return None
        version, dirty = person
        if item.person_version is not None and version != item.person_version:
            return "stale: the person changed since this write was planned; planned again"
        earlier = current is not None and item.run_id != current
        if not earlier:
            return None
        if dirty:
            return "stale: the person has changes not yet planned; planned again"
        if item.base and item.remote_id is not None and self.target.read_fields is not None:
            payload = state.payloads.get(item.remote_id)
            if payload is not None:
                held = fields_to_json(self.target.read_fields(payload))
                for name, value in item.base.items():
                    if not same_json_value(held.get(name), value):
                        return f"stale: {name} changed on {item.connection} since this write was planned; planned again"
        return None

    def _stopping(self) -> bool:
        return self.report.stopped is not None or (self.stop is not None and self.stop.is_set())

    async def _prefetch(self, items: Sequence[OutboxItem]) -> None:
        """What the chunk's creates will ask of the store, in two queries instead of a few per row."""
        self._me = await self.io(self.outbox.live_persons, [i.person_id for i in items])
        kind = self.caps.lookup_keys[0] if self.caps.lookup_keys else None
        values = [i.keys[kind] for i in items if i.op == "create" and kind and i.keys.get(kind)]
        self._key_owners = (
            await self.io(self.outbox.key_owners, self.target.name, kind, values) if values and kind else {}
        )

    async def _chunk(self, items: Sequence[OutboxItem], *, settling: bool, probe: bool = False) -> None:
        self._staged = SendState()
        if not settling:
            items = await self._fresh(items)
            if not items:
                return
        await self._prefetch(items)
        self._probe = probe
        # Rows of one person run in id order, except that a merge's losers go first (their merge
        # or delete before the survivor's update or create, which may carry the loser's keys: a
        # platform that holds a key value on one contact only refuses it while the loser still
        # has it - Comm100 "identity already used"); different persons run concurrently.
        groups: dict[Any, list[OutboxItem]] = {}
        for item in items:
            groups.setdefault(item.person_id if item.person_id is not None else ("row", item.id), []).append(item)
        for group in groups.values():
            group.sort(key=lambda i: (i.op not in _LOSERS_FIRST, i.id))

        async def in_order(group: list[OutboxItem]) -> list[Completion | Failure]:
            return [await self._guarded(item, settling) for item in group]

        done = await asyncio.gather(*(in_order(g) for g in groups.values()))
        results = [r for group in done for r in group]
        completions = [r for r in results if isinstance(r, Completion)]
        failures = [r for r in results if isinstance(r, Failure)]
        # Store work runs off the event loop: other connections keep their calls going meanwhile.
        await self.io(self.outbox.record, completions, failures)
        if self._unwritable:
            found, self._unwritable = self._unwritable, {}
            if self.target.on_unwritable is not None:
                await self.io(self.target.on_unwritable, self.target.name, found)
        sent = len(completions) - sum(1 for c in completions if c.superseded)
        self.report.done += sent
        if settling:
            self.report.settled += sent
        if self.progress is not None and sent:
            self.progress(self.target.name, sent)
        if self.report.stopped is not None:
            raise _Stop

    async def _guarded(self, item: OutboxItem, settling: bool) -> Completion | Failure:
        result = await self._guarded_call(item, settling)
        record_write(self.target.name, item.op, _result_label(result))
        return result

    async def _guarded_call(self, item: OutboxItem, settling: bool) -> Completion | Failure:
        async with self._sem:
            if self._stopping():
                # Claimed but never sent: back to pending without counting an attempt (a row
                # being settled may have landed in an earlier run: it stays in flight).
                self.report.deferred += 1
                kept = OutboxStatus.IN_FLIGHT if settling else OutboxStatus.PENDING
                return Failure(item.id, "not sent: run stopped", status=kept.value, count_attempt=False)
            try:
                return await self._execute(item, settling)
            except _Unsettled as exc:
                # Looked up before the pull and not there: back to pending (its attempts kept,
                # so the send after planning looks it up once more before creating).
                return Failure(item.id, str(exc), status=OutboxStatus.PENDING.value, count_attempt=False)
            except _Held as exc:
                self.report.held += 1
                self.report.errors.append(f"{item.op} #{item.id}: {exc}")
                return Failure(item.id, str(exc), status=OutboxStatus.HELD.value, count_attempt=False)
            except Stopped as exc:
                # The stop came while this row waited (rate budget, backoff): nothing new sent.
                self.report.deferred += 1
                landed = settling or (exc.may_have_landed and item.op == "create")
                kept = OutboxStatus.IN_FLIGHT if landed else OutboxStatus.PENDING
                return Failure(item.id, "not sent: run stopped", status=kept.value, count_attempt=False)
            except ConfigurationError as exc:
                self.report.stopped = f"configuration error: {exc}"
                self.report.errors.append(self.report.stopped)
                self.report.deferred += 1
                return Failure(item.id, str(exc), status=OutboxStatus.PENDING.value, count_attempt=False)
            except RecordError as exc:
                self.report.failed += 1
                self.report.errors.append(f"{item.op} #{item.id}: {exc}")
                return Failure(
                    item.id, str(exc), retry_at=self.backoff.next_at(item.attempts + (0 if settling else 1), utcnow())
                )
            except (RemoteUnavailable, Exception) as exc:  # noqa: BLE001 - one bad call must not stop the cycle
                self.report.deferred += 1
                message = f"{type(exc).__name__}: {exc}"
                self.report.errors.append(f"{item.op} #{item.id}: {message}")
                # A create may have happened before the reply was lost: keep it in flight so the
                # next run settles it by lookup instead of creating it again.
                status = OutboxStatus.IN_FLIGHT.value if item.op == "create" else OutboxStatus.PENDING.value
                return Failure(item.id, message, status=status)

    # -- one row ------------------------------------------------------------------------------

    async def _call(self, name: str, coro: Awaitable[T]) -> T:
        self.report.calls[name] += 1
        return await coro

    def _keys(self, payload: Mapping[str, Any] | None) -> list[tuple[str, str]] | None:
        if payload is None or self.target.keys_of is None:
            return None
        return self.target.keys_of(payload)

    async def _execute(self, item: OutboxItem, settling: bool) -> Completion:
        try:
            if item.op == "create":
                return await self._create(item, settling)
            if settling and self._probe:
                raise _Unsettled("left in flight by an earlier run: planned again after the pull")
            if item.op in ("update", "tag"):
                return await self._update(item)
            if item.op == "delete":
                return await self._delete(item)
            if item.op == "merge":
                return await self._merge(item)
            raise RecordError(0, f"unknown outbox op {item.op!r}")
        finally:
            # A record this row wrote (or tried to) is no longer as staged: a later row of the
            # chunk for it (after a merge into it, say) reads it rather than build on that.
            touched = [item.remote_id, *(str(x) for x in item.payload.get("loser_ids") or [])]
            for remote_id in touched:
                if remote_id is not None:
                    self._staged.payloads.pop(remote_id, None)

    async def _lookup(self, keys: Mapping[str, str]) -> str | None:
        """The remote id holding these keys; None when not found. Raises NotImplementedError
        when the platform cannot be searched at all."""
        if not keys:
            return None
        self.report.calls["lookup"] += 1
        return await self.connector.lookup(keys)

    async def _create(self, item: OutboxItem, settling: bool) -> Completion:
        """Create, never twice: a create that may already have happened (in flight after a
        crash, retried after a failure) or that goes to a lookup-only platform (DM Champ) looks
        the contact up first and links what it finds — unless that contact is already another
        person's, which is a record-level failure rather than a silent takeover."""
        body = item.body
        marker = self._marker(item)
        if marker is not None:
            body[self._marker_field()] = marker
        lookup_only = self.caps.pull_mode is PullMode.LOOKUP_ONLY
        if settling and not self._checkable(item, marker):
            # It may have landed and nothing can find it: never sent again blind.
            raise _Held(
                f"{item.connection}: a create that may have landed cannot be checked (no email or phone "
                "to look it up by, no marker the platform can be searched by); held for review"
            )
        if lookup_only and not settling and item.attempts == 0 and self.caps.can_upsert:
            # A first create on a lookup-only platform whose create finds the contact by its
            # key itself (DM Champ, by phone): check locally that no other person holds that
            # key there, then let the platform create or adopt - no extra lookup round trip.
            await self._check_keys_free(item)
        elif settling or lookup_only or item.attempts >= 1:
            try:
                found = await self._lookup(item.keys)
                if found is None and marker is not None:
                    self.report.calls["lookup"] += 1
                    found = await self.connector.lookup_marker(marker)  # type: ignore[attr-defined]
            except NotImplementedError:
                if settling and self._probe:
                    raise _Unsettled("cannot be looked up before the pull; settled after planning") from None
                if not self.caps.can_upsert:
                    raise RecordError(
                        0,
                        f"{item.connection}: a create that may have happened cannot be "
                        "checked (no lookup, no upsert); left for review",
                    ) from None
                # No search on this platform: an upsert is the only create that cannot double.
                result = await self._call("upsert", self.connector.upsert(body))
                await self._claimable(item, str(result.remote_id), raise_=True)
                return self._created(item, result, body, merge_payload=not result.created)
            if found is not None and await self._claimable(item, found, raise_=not settling):
                self.report.found_by_lookup += 1
                if not lookup_only:
                    return await self._adopt(item, found, body)
                if not settling:
                    # An existing contact with this person's keys: bring our fields to it
                    # (DM Champ: write-only, nothing there is read back to lose).
                    changes = self._updatable(body)
                    if changes:
                        await self._call("update", self.connector.update(found, changes))
                return self._created(item, WriteResult(remote_id=found), body, merge_payload=True)
            if settling and self._probe:
                raise _Unsettled("not found before the pull: sent after planning")
        result = await self._call("create", self.connector.create(body))
        if not result.created:
            # The platform handed back an existing contact (duplicate refused, or adopted).
            await self._claimable(item, str(result.remote_id), raise_=True)
            if result.record is not None:
                # Its own values (made outside, perhaps moments ago and not yet seen by a pull)
                # are not ours: reconciled like any contact found by lookup, never taken as
                # already in sync (issue 15: a GoHighLevel contact not yet in search).
                return self._adopt_record(item, str(result.remote_id), result.record, body, ours_possible=False)
        return self._created(item, result, body, merge_payload=not result.created)

    def _marker_field(self) -> str:
        return str(getattr(self.connector, "marker_field", ""))

    def _marker(self, item: OutboxItem) -> str | None:
        """The idempotency marker a create carries where the platform stores one and can be
        searched by it (``connector.marker_field`` / ``lookup_marker``), for a person without a
        key to look up: the person's, so any create of that person there finds the contact an
        earlier one made."""
        if item.person_id is None or not self._marker_field() or not hasattr(self.connector, "lookup_marker"):
            return None
        if any(item.keys.get(k) for k in self.caps.lookup_keys):
            return None  # found by its keys: the body stays as planned
        return f"contactsync:{item.person_id}"

    def _checkable(self, item: OutboxItem, marker: str | None) -> bool:
        """Whether a create that may have landed can be found again on this platform."""
        if marker is not None:
            return True
        return any(item.keys.get(k) for k in self.caps.lookup_keys)

    async def _adopt(self, item: OutboxItem, found: str, body: Mapping[str, Any]) -> Completion:
        """A contact found where a create may have landed. Nothing is written over it: when it
        holds what this row (or a version of it an earlier plan carried) would have written, it
        is our create and that is its snapshot; otherwise it was made or changed by someone
        else, and it is linked without a snapshot, so the next plan reconciles its values with
        the person's (the outside values count as edits) instead of overwriting them."""
        record = await self._call("get", self.connector.get(found))
        if record is None:
            return self._created(item, WriteResult(remote_id=found), body, merge_payload=True)
        return self._adopt_record(item, found, record, body)

    def _adopt_record(
        self,
        item: OutboxItem,
        found: str,
        record: RawRecord,
        body: Mapping[str, Any],
        *,
        ours_possible: bool = True,
    ) -> Completion:
        """``ours_possible`` False: the platform refused our create as a duplicate of this
        contact, so nothing on it is ours, whatever it holds."""
        if self.target.read_fields is None:
            return self._created(item, WriteResult(remote_id=found), body, merge_payload=True)
        held = fields_to_json(self.target.read_fields(record.payload))
        versions = [item.fields, *(item.payload.get("earlier_fields") or [])] if ours_possible else []
        ours = next((v for v in versions if all(same_json_value(held.get(k), x) for k, x in v.items())), None)
        completion = self._created(item, WriteResult(remote_id=found, record=record), body)
        if ours is None:
            completion.snapshot = None
            completion.dirty = True
            completion.note = "found by lookup holding other values: linked, reconciled by the next plan"
        elif ours is not item.fields:
            completion.snapshot = {**{k: v for k, v in held.items() if k not in ours}, **ours}
            completion.dirty = True  # an earlier plan's values landed: the next plan brings the newer ones
            completion.note = "an earlier plan's create landed: its values are planned again"
        return completion

    async def _check_keys_free(self, item: OutboxItem) -> None:
        me = self._me.get(item.person_id) if item.person_id is not None else None
        kind = self.caps.lookup_keys[0] if self.caps.lookup_keys else None
        value = item.keys.get(kind) if kind else None
        others = self._key_owners.get(value, set()) - {me} if value else set()
        if others:
            raise RecordError(
                409,
                f"{item.connection}: its contact with this {kind} is already person {min(others)}'s "
                "(they share the key); left for review",
            )

    async def _claimable(self, item: OutboxItem, remote_id: str, *, raise_: bool) -> bool:
        me = self._me.get(item.person_id) if item.person_id is not None else None
        # Claims of this run count too: two creates of one chunk may be handed the same contact.
        owner = self._claims.get(remote_id)
        if owner is None:
            owner = await self.io(self.outbox.owner, item.connection, remote_id)
        if owner is None or owner == me:
            self._claims[remote_id] = me
            return True
        if raise_:
            raise RecordError(
                409,
                f"{item.connection}: the platform matched this person to contact {remote_id}, which is "
                f"already person {owner}'s (they share a key such as a phone number); left for review",
            )
        return False

    def _updatable(self, body: Mapping[str, Any]) -> dict[str, Any]:
        allowed = self.caps.updatable_fields
        return {k: v for k, v in body.items() if allowed is None or k in allowed}

    def _created(
        self, item: OutboxItem, result: WriteResult, body: Mapping[str, Any], *, merge_payload: bool = False
    ) -> Completion:
        payload = result.record.payload if result.record is not None else dict(body)
        snapshot = item.fields
        if result.record is not None and self.target.read_fields is not None:
            # Only keys we did not set: what we set is confirmed as planned (a fresh record has
            # no outside edits to lose, but our own values stay the reference) - unless the
            # platform did not hold it (write verification: then what it holds).
            back = fields_to_json(self.target.read_fields(result.record.payload))
            snapshot = {**{k: v for k, v in back.items() if k not in item.fields}, **item.fields}
            if result.created:
                snapshot = self._verify_written(item, back, item.fields, snapshot, result.remote_id)
        return Completion(
            item_id=item.id,
            remote_id=str(result.remote_id),
            person_id=item.person_id,
            connection=item.connection,
            record_payload=payload,
            merge_payload=merge_payload and result.record is None,
            record_updated_at=result.record.updated_at if result.record is not None else None,
            keys=self._keys(payload),
            snapshot=snapshot,
        )

    async def _read(self, remote_id: str) -> RawRecord | None | bool:
        """The contact by id (None: not found; False: this platform cannot be read by id)."""
        try:
            return await self._call("get", self.connector.get(remote_id))
        except NotImplementedError:
            return False

    def _vanished(self, item: OutboxItem) -> Completion:
        """The contact a write was meant for is gone from the platform (read by id: not found):
        evidence of a delete made there, which no listing may ever show (GoHighLevel's search
        cannot prove absence). Nothing is sent; the record is marked deleted and the person
        planned again under the delete policy."""
        assert item.remote_id is not None
        self.report.vanished += 1
        return Completion(
            item.id,
            item.remote_id,
            item.person_id,
            item.connection,
            vanished=True,
            superseded=f"stale: contact {item.remote_id} was deleted on {item.connection}; planned again",
        )

    def _changed(self, item: OutboxItem, record: RawRecord) -> str | None:
        """The first field the row writes whose value on the platform (``record``, just read)
        is no longer the one the row was planned against."""
        if not item.base or self.target.read_fields is None:
            return None
        held = fields_to_json(self.target.read_fields(record.payload))
        return next((name for name, value in item.base.items() if not same_json_value(held.get(name), value)), None)

    async def _verified(self, item: OutboxItem) -> Completion | RawRecord | None:
        """Read the contact before an update planned against its values (``verify_updates``):
        the record read when it still holds them (send; None when it cannot be read), else the
        result that settles the row unsent - the contact gone, or changed outside (its read is
        staged, the person planned again)."""
        assert item.remote_id is not None
        record = await self._read(item.remote_id)
        if record is False:
            return None
        if record is None:
            return self._vanished(item)
        assert isinstance(record, RawRecord)
        name = self._changed(item, record)
        if name is None:
            return record
        self.report.superseded += 1
        return Completion(
            item_id=item.id,
            remote_id=item.remote_id,
            person_id=item.person_id,
            connection=item.connection,
            record_payload=record.payload,
            record_updated_at=record.updated_at,
            keys=self._keys(record.payload),
            dirty=True,
            superseded=f"stale: {name} changed on {item.connection} since this write was planned "
            "(read before sending); planned again",
        )

    async def _update(self, item: OutboxItem) -> Completion:
        assert item.remote_id is not None, "update without a target"
        body = item.body
        result: WriteResult | None = None
        read: RawRecord | None = None
        vouched = not self.target.verify_updates or item.remote_id in self.target.fresh
        if body and item.base and not vouched:
            settled = await self._verified(item)
            if isinstance(settled, Completion):
                return settled
            read = settled
        if body:
            # A connector that reads the contact itself before its write (Comm100's full
            # representation) takes the read just made instead of a second GET: the body it
            # sends is then built on exactly the values that were checked. Where this cycle's
            # pull vouches for the staged payload (a scan, a listing that caught up, a contact
            # listed this cycle), that payload stands for the read.
            takes = getattr(self.connector, "update_takes_current", False)
            current = read
            if current is None and vouched and takes and self.connector.update_reads_current(body):
                current = self._staged_record(item.remote_id)
            extra = {"current": current} if current is not None and takes else {}
            try:
                result = await self._call("update", self.connector.update(item.remote_id, body, **extra))
            except NotFound:
                # A "not found" is evidence of a delete made there: confirmed by a read by id,
                # it settles the row (never retried for ever); otherwise it is a plain failure.
                if await self._read(item.remote_id) is None:
                    return self._vanished(item)
                raise
        add, remove = item.payload.get("add_tags") or [], item.payload.get("remove_tags") or []
        if add:
            await self._call("add_tags", self.connector.add_tags(item.remote_id, list(add)))
        if remove:
            await self._call("remove_tags", self.connector.remove_tags(item.remote_id, list(remove)))
        record = result.record if result is not None else None
        snapshot: dict[str, Any] | None = item.fields or None  # an op that confirms nothing leaves it alone
        if record is not None and snapshot and item.base is not None and self.target.read_fields is not None:
            back = fields_to_json(self.target.read_fields(record.payload))
            snapshot = self._verify_written(item, back, item.base, dict(snapshot), item.remote_id)
        payload: dict[str, Any] | None
        merge = record is None
        if record is not None:
            payload = record.payload
        elif body and read is not None:
            # Read just before the write: that record with our body on top is what it holds.
            payload, merge, record = deep_merge_json(read.payload, body), False, read
            if add or remove:
                payload.pop("tags", None)
        elif body:
            payload = dict(body)
            if add or remove:
                payload.pop("tags", None)
        else:
            payload = None
        return Completion(
            item_id=item.id,
            remote_id=item.remote_id,
            person_id=item.person_id,
            connection=item.connection,
            record_payload=payload,
            merge_payload=merge,
            record_updated_at=record.updated_at if record is not None and result is not None else None,
            keys=self._keys(payload) if record is not None else None,
            snapshot=snapshot,
            # The contact as returned (or read) holds other values than the snapshot in fields
            # this row did not write: an outside edit the pull did not show. Left dirty, so the
            # next plan reconciles it instead of the record passing for confirmed.
            dirty=self._news(item, payload) if record is not None else False,
        )

    def _staged_record(self, remote_id: str) -> RawRecord | None:
        """The live staged record ``remote_id`` as loaded for this chunk (None: not loaded, or
        deleted or merged away there: the connector reads it and finds out)."""
        payload = self._staged.payloads.get(remote_id)
        if payload is None or remote_id in self._staged.gone:
            return None
        return RawRecord(remote_id, payload)

    def _verify_written(
        self,
        item: OutboxItem,
        back: Mapping[str, Any],
        written: Mapping[str, Any],
        snapshot: dict[str, Any],
        remote_id: str,
    ) -> dict[str, Any]:
        """Write verification: each field the write carried (``written``'s keys) must read
        back from the platform's answer as sent. One that does not - the platform ignored or
        changed it - is noted not writable on this connection (recorded with the chunk, then
        left out of every later plan for it), and the snapshot takes the value the platform
        holds, so the next pull does not read it as an edit made there."""
        skip = {"tags"} if self.caps.tags_via_endpoint else set()
        for name in written:
            if name in skip or name not in item.fields:
                continue
            sent, held = item.fields.get(name), back.get(name)
            if _alike(sent, held):
                continue
            evidence = f"{item.op} of contact {remote_id}: sent {_short(sent)}, the platform holds {_short(held)}"
            self._unwritable.setdefault(name, evidence)
            self.report.unwritable.setdefault(name, evidence)
            log.warning("write_not_held", connection=self.target.name, field=name, evidence=evidence)
            if _blank(held):
                snapshot.pop(name, None)
            else:
                snapshot[name] = held
        return snapshot

    def _news(self, item: OutboxItem, payload: Mapping[str, Any] | None) -> bool:
        if payload is None or self.target.read_fields is None or not item.fields:
            return False
        if not item.base:
            return False  # which fields it wrote is not known: nothing to tell apart
        held = fields_to_json(self.target.read_fields(payload))
        others = (set(item.fields) | set(held)) - set(item.base)
        return any(not same_json_value(held.get(k), item.fields.get(k)) for k in others)

    async def _delete(self, item: OutboxItem) -> Completion:
        assert item.remote_id is not None, "delete without a target"
        try:
            await self._call("delete", self.connector.delete(item.remote_id))
        except NotFound:
            pass  # already gone: the intent holds
        return Completion(item.id, item.remote_id, item.person_id, item.connection, deleted=True)

    async def _merge(self, item: OutboxItem) -> Completion:
        assert item.remote_id is not None, "merge without a survivor"
        losers = [str(x) for x in item.payload.get("loser_ids") or []]
        result: WriteResult = await self._call("merge", self.connector.merge(item.remote_id, losers))
        record = result.record
        return Completion(
            item_id=item.id,
            remote_id=item.remote_id,
            person_id=item.person_id,
            connection=item.connection,
            record_payload=record.payload if record is not None else None,
            keys=self._keys(record.payload) if record is not None else None,
            snapshot=item.fields or None,
            merged_losers=tuple(losers),
        )


def _blank(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def _alike(a: Any, b: Any) -> bool:
    """Canonical JSON values equal, blanks alike and list order aside."""
    if _blank(a) or _blank(b):
        return _blank(a) and _blank(b)
    if isinstance(a, list) and isinstance(b, list):
        return sorted(json.dumps(x, sort_keys=True) for x in a) == sorted(json.dumps(x, sort_keys=True) for x in b)
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 120 else text[:117] + "..."


async def apply_outbox(
    outbox: OutboxStore,
    targets: Sequence[Target],
    *,
    backoff: Backoff | None = None,
    chunk_size: int = 64,
    stop: asyncio.Event | None = None,
    progress: Progress | None = None,
    settle_only: bool = False,
    io: StoreThread | None = None,
    feed: PlanFeed | None = None,
) -> ApplyReport:
    """Send every due outbox row of every target, the connections concurrently (so the slowest
    platform's rate limit, not the sum, bounds the run). ``settle_only`` settles in-flight rows
    and stops (the engine does this before planning, so a planned create never races a create
    that may already exist). With a ``feed``, planning is still running: its rows are sent as
    its slices commit, then everything else that is due."""
    own = io is None
    io = io or StoreThread()
    appliers = [
        ConnectionApplier(
            outbox,
            t,
            backoff=backoff or Backoff(),
            chunk_size=chunk_size,
            stop=stop,
            progress=progress,
            io=io,
            feed=feed,
        )
        for t in targets
    ]
    try:
        reports = await asyncio.gather(*(a.run(settle_only=settle_only) for a in appliers))
    finally:
        if own:
            io.close()
    return ApplyReport({r.name: r for r in reports})
