"""One sync cycle: pull every connection concurrently → stage → match → reconcile/plan → apply
(the push starting with planning's first committed slice).

The cycle is the unit the daemon schedules, ``backfill`` runs once in full, and ``plan`` runs
as a dry run. Around it:

* a **profile lock** (PostgreSQL advisory lock; a file lock on SQLite) makes exactly one
  process run a profile at a time — a second one skips the cycle;
* **settling first**: outbox rows left in flight by a crash are settled (looked up or upserted)
  *before* pulling and planning, so a planned create never races one that may already exist;
* the **runs table** gets a row per cycle with its counts, and one summary log line is written;
  every run ends recorded as ``ok``, ``partial``, ``failed`` or ``interrupted`` with its reason,
  whatever stopped it (a stop signal, KeyboardInterrupt, cancellation, an exception), and a run
  left ``running`` by a process that died is marked ``interrupted`` at the profile's next start;
* **a failed pull plans nothing**: a connection whose pull failed this cycle gets no create,
  update or delete (its records are unknown); its persons stay dirty for a later cycle, and its
  push is held by its circuit breaker;
* a **circuit breaker per connection**: after ``breaker.max_consecutive_failures`` failed calls
  in a row (unavailable, unauthorized) the connection is opened for the rest of the cycle; its
  pending work stays pending with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import structlog

from connectors.base import Capabilities, ConfigurationError, Connector, ConnectorError, Page, PullMode, RecordError
from connectors.gohighlevel.oauth import NeedsReauth
from connectors.http import DailyQuota, QuotaExhausted, RateBudget
from connectors.registry import connector_class
from sync import metrics
from sync.apply import ApplyReport, Backoff, PlanFeed, PlanQueue, Target, apply_outbox
from sync.apply.storethread import StoreThread
from sync.canonical import fields_to_json, is_empty
from sync.config import Config
from sync.detect.hints import HintReport, stage_hints
from sync.detect.stage import PullReport, pull_connection, read_keys
from sync.plan import Plan
from sync.plan.build import build_plan
from sync.store import StagedHash, Store
from sync.store.cursors import CursorState
from sync.store.held import DeleteLimits
from sync.store.outbox import EnqueueResult
from sync.store.snapshots import fields_hash

log = structlog.get_logger("contactsync.engine")

# (phase, connection, n): phase "pull" or "push" counts n more records done; "pull_total" says
# the pull of that connection expects n records in all (when the platform reports a total);
# "push_total", once planning is done, how many writes the plan queued there (an estimate: rows
# left from earlier runs are sent too).
ProgressFn = Callable[[str, str, int], None]


@dataclass
class CycleReport:
    """What one cycle did (also written, as counts, to the runs table)."""

    profile: str
    kind: str
    run_id: int | None = None
    status: str = "ok"
    skipped: str | None = None
    error: str | None = None
    pulls: dict[str, PullReport] = field(default_factory=dict)
    plan: Plan | None = None
    queued: EnqueueResult | None = None
    settled: ApplyReport | None = None
    applied: ApplyReport | None = None
    duration_s: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)  # seconds per step
    joined: list[str] = field(default_factory=list)  # connections planned for the first time: all persons replanned
    breakers: dict[str, str] = field(default_factory=dict)  # connection -> why its breaker opened
    # connection -> why the cycle left it alone (needs_reauth, a daily-quota pause)
    blocked: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def reasons(self) -> list[str]:
        """Why this run is not ``ok``, in words, one entry per cause."""
        out: list[str] = [
            f"{name}: {why}; nothing pulled, planned or written" for name, why in sorted(self.blocked.items())
        ]
        for name, pull in sorted(self.pulls.items()):
            if name in self.blocked:
                continue
            if pull.error:
                out.append(f"{name}: pull failed ({pull.error}); nothing planned for it")
            if pull.held:
                out.append(f"{name}: {pull.held_reason}")
        for name, why in sorted(self.breakers.items()):
            if name in self.blocked or (name in self.pulls and self.pulls[name].error):
                continue  # said above
            out.append(f"{name}: circuit breaker open ({why}); its writes stay pending")
        for report in (self.settled, self.applied):
            if report is None:
                continue
            for name, r in sorted(report.connections.items()):
                if r.stopped and name not in self.breakers:
                    out.append(f"{name}: push stopped ({r.stopped})")
                if r.failed:
                    out.append(f"{name}: {r.failed} writes failed")
                if r.deferred:
                    out.append(f"{name}: {r.deferred} writes not done (platform unavailable or stopped)")
        return out

    def counts(self) -> dict[str, Any]:
        """The run's counts as plain JSON."""
        out: dict[str, Any] = {"pull": {n: p.to_json() for n, p in sorted(self.pulls.items())}}
        if self.plan is not None:
            out["plan"] = self.plan.summary()
            out["conflicts"] = len(self.plan.conflicts)
            out["review"] = sum(1 for c in self.plan.conflicts if c.needs_review)
        if self.queued is not None:
            q = self.queued
            out["queued"] = {"added": q.added, "kept": q.kept, "superseded": q.superseded, "excluded": q.excluded}
        if self.settled is not None and any(r.settled or r.write_calls for r in self.settled.connections.values()):
            out["settled"] = self.settled.to_json()
        if self.applied is not None:
            out["push"] = self.applied.to_json()
            out["write_calls"] = self.applied.write_calls + (self.settled.write_calls if self.settled else 0)
        if self.timings:
            out["timings"] = dict(self.timings)
        if self.joined:
            out["joined"] = list(self.joined)
        if self.breakers:
            out["breakers"] = dict(self.breakers)
        if self.blocked:
            out["blocked"] = dict(self.blocked)
        out.update(self.extra)
        return out

    def write_calls(self) -> int:
        n = self.applied.write_calls if self.applied else 0
        return n + (self.settled.write_calls if self.settled else 0)


#: How much earlier than its first request a prefetched listing is taken to be (clocks of
#: several processes sharing one store, writes recorded a little after they landed).
PREFETCH_MARGIN_S = 5.0
#: A prefetched scan staged within this long of its last page, with nothing skipped as
#: written meanwhile, is as current as one pulled under the lock (which also lists its pages
#: before the push): it vouches for its contacts like that pull would (no read before update).
PREFETCH_CURRENT_S = 1.0


@dataclass
class Prefetch:
    """A full scan read before its cycle's turn (:meth:`CycleRunner.run`): the cursor it
    started from, when it started (less :data:`PREFETCH_MARGIN_S`), its pages and how long it
    took."""

    state: CursorState
    since: datetime
    pages: list[Page]
    seconds: float
    ended: float  # time.monotonic() when its last page was read
    # The staged rows' hashes when it began: a row that changed by the time it is staged was
    # written meanwhile (by our writes) and may be newer than its page.
    hashes: dict[str, StagedHash] = field(default_factory=dict)
    # The platform's refusal or failure that stopped the listing (after the client's retries):
    # the cycle reports it as this connection's pull error rather than ask again under the lock.
    error: str | None = None


class CycleRunner:
    """Runs cycles of one configuration against one store.

    ``transports`` (connection name → httpx transport) reach in-process emulators in tests;
    ``settings`` overrides ``ConnectionSettings`` fields per connection (e.g. a scaled rate
    limit or a different base URL)."""

    def __init__(
        self,
        config: Config,
        store: Store,
        *,
        transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
        settings: Mapping[str, Mapping[str, Any]] | None = None,
        backoff: Backoff | None = None,
        chunk_size: int = 64,
        prefetch: bool = False,
    ) -> None:
        self.config = config
        self.store = store
        #: Read each cycle's listings before its turn and lock (:meth:`_prefetch`): for a
        #: runner whose cycles queue behind each other (the daemon: scheduled cycles, poll
        #: lanes and webhook cycles share it), so none waits behind another's network reads.
        #: A one-shot process has nobody to wait for: reading first would only forgo staging
        #: pages while the next ones are read.
        self.prefetch = prefetch
        self.outbox = store.outbox
        self.transports = dict(transports or {})
        self.settings_overrides = {k: dict(v) for k, v in (settings or {}).items()}
        self.backoff = backoff or Backoff()
        self.chunk_size = chunk_size
        metrics.install()  # the HTTP counters observe every connector this process makes
        # Cycles of one profile in this process (scheduled and webhook-driven) queue for each
        # other rather than skip: the store's profile lock still keeps other processes out.
        self._mutexes: dict[str, threading.Lock] = {}
        self._budgets: dict[str, RateBudget] = {}
        self._dailies: dict[str, DailyQuota] = {}
        self._mutexes_guard = threading.Lock()
        self._owner = rate_window_owner()  # this runner's rows of store.rate_windows
        self._saved_windows: dict[str, tuple[int, float]] = {}

    @contextlib.contextmanager
    def _turn(self, profile: str, stop: threading.Event | None) -> Iterator[bool]:
        """Wait for this process's other cycle of ``profile`` to end; False when stopped first."""
        with self._mutexes_guard:
            mutex = self._mutexes.setdefault(profile, threading.Lock())
        while not mutex.acquire(timeout=0.1):
            if stop is not None and stop.is_set():
                yield False
                return
        try:
            yield True
        finally:
            mutex.release()

    # -- wiring -------------------------------------------------------------------------------

    def profile_connections(self, profile: str) -> list[str]:
        """The enabled connections a profile syncs."""
        profiles = self.config.effective_profiles()
        if profile not in profiles:
            raise KeyError(f"unknown profile {profile!r}; known: {', '.join(profiles)}")
        enabled = set(self.config.enabled_connections())
        return [c for c in (profiles[profile].connections or []) if c in enabled]

    def connector(self, name: str) -> Connector:
        """A fresh connector for connection ``name`` (close it with ``aclose``)."""
        from dataclasses import replace

        settings = self.config.connection_settings(name)
        # What a probe measured on this account (contactsync probe): the connector takes those
        # readings instead of the safe ones.
        measured = self.store.behaviours.measured(name)
        if measured:
            settings = replace(settings, behaviours={**measured, **settings.behaviours})
        overrides = self.settings_overrides.get(name)
        if overrides:
            settings = replace(settings, **overrides)
        cls = connector_class(self.config.connections[name].platform)
        connector = cls(settings, self.transports.get(name))
        if getattr(connector, "oauth_app", None) is not None:
            from sync.auth import token_provider

            connector.bind_tokens(
                token_provider(
                    self.config,
                    self.store,
                    name,
                    transports=self.transports,
                    base_urls={n: str(o["base_url"]) for n, o in self.settings_overrides.items() if "base_url" in o},
                )
            )
        # One rate budget per connection for the whole process: every cycle (scheduled, webhook
        # driven, adaptive poll) makes its connectors afresh, and a fresh budget would forget
        # the requests the last cycle sent within the platform's window.
        http: Any = getattr(connector, "http", None)
        fresh = getattr(http, "budget", None)
        if isinstance(fresh, RateBudget):
            with self._mutexes_guard:
                budget = self._budgets.get(name)
                if budget is None or (budget.limit != fresh.limit and fresh.limit is not None):
                    # The first budget of this connection here (or the configured limit
                    # changed): it starts with what other processes sent within the window.
                    self._budgets[name] = budget = fresh
                    load_rate_window(self.store, name, fresh, self._owner)
            http.budget = budget
        # And one daily quota countdown: a second connector of the connection (a cycle's pull
        # and its push, the next cycle) starts from what the last answer said is left today.
        daily = getattr(http, "daily", None)
        if isinstance(daily, DailyQuota):
            shared = self._dailies.setdefault(name, daily)
            if shared.exhausted():
                # The store's pause is the authority on when the day turned (a reset the
                # headers never announce): once it is over, start counting afresh.
                state = self.store.auth.states([name]).get(name)
                until = state.quota_paused_until if state is not None else None
                if until is None or until <= datetime.now(UTC):
                    shared.remaining = None
            http.daily = shared
        # Fields write verification found the platform does not hold: never written there again.
        unwritable = self.store.behaviours.unwritable(name)
        if unwritable:
            connector.capabilities = replace(
                connector.capabilities, unwritable_fields=connector.capabilities.unwritable_fields | unwritable
            )
        return connector

    def _save_windows(self, names: Sequence[str]) -> None:
        """Record in the store what this process sent within each limited connection's window
        (when it changed since the last save), for the next process to count."""
        for name in names:
            budget = self._budgets.get(name)
            if budget is None or budget.limit is None:
                continue
            stamps = budget.window_stamps()
            mark = (len(stamps), stamps[-1] if stamps else 0.0)
            if self._saved_windows.get(name) == mark:
                continue
            if save_rate_window(self.store, name, budget, self._owner, stamps):
                self._saved_windows[name] = mark

    def _unwritable_found(self, connection: str, fields: dict[str, str]) -> None:
        new = self.store.behaviours.mark_unwritable(connection, fields)
        for name in new:
            log.warning(
                "field_not_writable",
                connection=connection,
                field=name,
                evidence=fields[name],
                action="read from this connection, never written to it again (contactsync status)",
            )

    def capabilities(self, connectors: Mapping[str, Connector]) -> dict[str, Capabilities]:
        return {name: c.capabilities for name, c in connectors.items()}

    # -- running ------------------------------------------------------------------------------

    def run(
        self,
        profile: str = "default",
        *,
        kind: str = "cycle",
        full: bool = False,
        dry_run: bool = False,
        only: Sequence[str] | None = None,
        stop: threading.Event | None = None,
        progress: ProgressFn | None = None,
        replan: bool = False,
    ) -> CycleReport:
        """Run one cycle of ``profile`` under its lock (blocking). A cycle that finds the lock
        held elsewhere returns at once with ``skipped`` set. ``replan`` reconciles every person,
        not only those that changed (after a change of mappings or policies).

        With ``prefetch`` (the daemon), the listings of the connections pulled (Acquire's full
        scan: every page, every time; the others' incremental polls) are read first, together,
        before waiting for the turn and the lock, so a webhook's focused cycle never queues behind their pages; under the
        lock each is staged as if pulled then, except what our own writes changed since it was
        read (see :meth:`_usable`)."""
        prefetched = self._prefetch(profile, only, stop) if self.prefetch and not (dry_run or full) else {}
        with self._turn(profile, stop) as turn, self.store.profile_lock(profile) as lock:
            if not turn:
                return CycleReport(profile, kind, status="skipped", skipped="stopped while another cycle ran")
            if not lock.held:
                report = CycleReport(profile, kind, status="skipped", skipped="another process holds this profile")
                metrics.record_run(profile, "skipped", 0.0)
                log.info("run_skipped", profile=profile, kind=kind, reason=report.skipped)
                return report
            # Under the lock no other process runs this profile: a run still "running" was
            # left by a process that died (kill -9, power loss).
            stale = self.store.runs.interrupt_stale(
                profile, "the process running it stopped without finishing (killed or crashed)"
            )
            if stale:
                log.warning("stale_runs_interrupted", profile=profile, runs=stale)
            return asyncio.run(
                self.cycle(
                    profile,
                    kind=kind,
                    full=full,
                    dry_run=dry_run,
                    only=only,
                    stop=stop,
                    progress=progress,
                    replan=replan,
                    prefetched=prefetched,
                )
            )

    def _prefetch(self, profile: str, only: Sequence[str] | None, stop: threading.Event | None) -> dict[str, Prefetch]:
        """Read the listings of this cycle (every connection pulled that has one, not left
        alone, with no interrupted pull to resume) without the turn or the lock, all at once:
        under the lock they are only staged, so the cycle holds its turn for no network wait
        and the short polls cost no time beside the long scans."""
        try:
            names = [n for n in self.profile_connections(profile) if only is None or n in only]
            scans = [
                n
                for n in names
                if connector_class(self.config.connections[n].platform).capabilities.pull_mode
                is not PullMode.LOOKUP_ONLY
            ]
            if scans:
                blocked = self._blocked(scans)
                scans = [n for n in scans if n not in blocked]
            if not scans:
                return {}

            async def all_of() -> list[Prefetch | None]:
                return list(await asyncio.gather(*(self._prefetch_one(n, stop) for n in scans)))

            found = asyncio.run(all_of())
        except Exception:  # noqa: BLE001 - the cycle pulls under its lock as ever
            log.exception("prefetch_failed", profile=profile)
            return {}
        return {n: p for n, p in zip(scans, found, strict=True) if p is not None}

    async def _prefetch_one(self, name: str, stop: threading.Event | None) -> Prefetch | None:
        state = await asyncio.to_thread(self.store.cursors.get_cursor, name)
        if state.checkpoint is not None:
            return None  # an interrupted pull resumes under the lock
        connector = self.connector(name)
        astop = asyncio.Event()
        connector.bind_stop(astop, stop)
        started = time.monotonic()
        since = datetime.now(UTC) - timedelta(seconds=PREFETCH_MARGIN_S)
        hashes = await asyncio.to_thread(self.store.staging.staged_hashes, name)
        pages: list[Page] = []
        try:
            async for page in connector.pull(state.position):
                pages.append(page)
                if page.complete or (stop is not None and stop.is_set()):
                    break
        except ConnectorError as exc:
            ended = time.monotonic()
            return Prefetch(state, since, [], round(ended - started, 3), ended, error=f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # noqa: BLE001 - pulled again under the lock, where it is reported
            log.info("prefetch_not_used", connection=name, reason=f"{type(exc).__name__}: {exc}")
            return None
        finally:
            await connector.aclose()
        if not pages or not pages[-1].complete:
            return None
        ended = time.monotonic()
        return Prefetch(state, since, pages, round(ended - started, 3), ended, hashes)

    def _usable(self, name: str, pre: Prefetch) -> tuple[list[Page] | None, set[str], dict[str, StagedHash] | None]:
        """Under the lock: the prefetched pages of ``name`` if they can still be staged, and
        the remote ids not to stage. Not when another pull of it ran meanwhile (the store holds
        newer rows than the listing), nor when a delete or merge was sent there since it
        started (which records exist changed). Otherwise the rows whose staged payload changed
        since the listing began (our writes landed) are listed but not staged; every other row
        is as it was when the listing began, so staging its page is what a pull then would
        have done."""
        now = self.store.cursors.get_cursor(name)
        before = pre.state
        if (now.position, now.checkpoint, now.full_scan_id) != (
            before.position,
            before.checkpoint,
            before.full_scan_id,
        ):
            log.info("prefetch_not_used", connection=name, reason="pulled meanwhile")
            return None, set(), None
        if self.store.outbox.structural_since(name, pre.since):
            log.info("prefetch_not_used", connection=name, reason="a delete or merge was sent meanwhile")
            return None, set(), None
        hashes = self.store.staging.staged_hashes(name)
        changed = {rid for rid in pre.hashes.keys() | hashes.keys() if pre.hashes.get(rid) != hashes.get(rid)}
        return pre.pages, changed, hashes

    def run_hints(
        self,
        profile: str,
        hints: Mapping[str, Sequence[str]],
        *,
        stop: threading.Event | None = None,
        on_staged: Callable[[dict[str, HintReport]], None] | None = None,
    ) -> CycleReport:
        """A focused cycle driven by change hints (webhook events), under the profile's lock like
        any cycle (a held lock skips it: the caller tries again). ``hints``: connection → remote
        ids that changed. Each is re-read by id and staged (``sync.detect.hints``; a contact the
        platform no longer has is staged deleted), ``on_staged`` is called once they are
        committed (the inbox marks its events processed), then a cycle that pulls nothing plans
        the dirty persons — the hinted ones — and pushes through the same outbox."""
        with self._turn(profile, stop) as turn, self.store.profile_lock(profile) as lock:
            if not turn:
                return CycleReport(profile, "webhook", status="skipped", skipped="stopped while another cycle ran")
            if not lock.held:
                report = CycleReport(profile, "webhook", status="skipped", skipped="another process holds this profile")
                return report
            stale = self.store.runs.interrupt_stale(
                profile, "the process running it stopped without finishing (killed or crashed)"
            )
            if stale:
                log.warning("stale_runs_interrupted", profile=profile, runs=stale)
            return asyncio.run(self._hinted(profile, hints, stop=stop, on_staged=on_staged))

    async def _hinted(
        self,
        profile: str,
        hints: Mapping[str, Sequence[str]],
        *,
        stop: threading.Event | None,
        on_staged: Callable[[dict[str, HintReport]], None] | None,
    ) -> CycleReport:
        started = time.monotonic()
        names = set(self.profile_connections(profile))
        reports: dict[str, HintReport] = {}
        for name, ids in hints.items():
            if name not in names or not ids:
                continue
            connector = self.connector(name)
            try:
                reports[name] = await stage_hints(
                    self.store,
                    name,
                    connector,
                    self.config.mapping(name),
                    ids,
                    concurrency=self.config.connections[name].max_concurrency,
                    max_deletes=self.config.deletes.max_count,
                )
            finally:
                await connector.aclose()
        if on_staged is not None:
            on_staged(reports)
        extra = {"hints": {n: r.to_json() for n, r in sorted(reports.items())}}
        report = await self.cycle(profile, kind="webhook", only=(), stop=stop, extra=extra)
        report.timings["hints"] = round(time.monotonic() - started - report.duration_s, 3)
        return report

    async def cycle(
        self,
        profile: str = "default",
        *,
        kind: str = "cycle",
        full: bool = False,
        dry_run: bool = False,
        only: Sequence[str] | None = None,
        stop: threading.Event | None = None,
        progress: ProgressFn | None = None,
        replan: bool = False,
        extra: Mapping[str, Any] | None = None,
        prefetched: Mapping[str, Prefetch] | None = None,
    ) -> CycleReport:
        """One cycle (call under the profile lock; :meth:`run` does). ``extra`` goes into the
        run's counts as given; ``prefetched``: full scans read before the lock (:meth:`run`)."""
        started = time.monotonic()
        report = CycleReport(profile, "plan" if dry_run else kind)
        report.extra.update(extra or {})
        names = self.profile_connections(profile)
        pulled = [n for n in names if only is None or n in only]
        report.run_id = self.store.runs.start_run(profile, report.kind)
        structlog.contextvars.bind_contextvars(run_id=report.run_id, profile=profile)
        astop = asyncio.Event()
        watcher = asyncio.create_task(_watch(stop, astop)) if stop is not None else None

        def halted() -> bool:
            """A stop was asked for: the thread-world event is read too, since the watcher only
            polls it and a connector may already have stopped on it."""
            if stop is not None and stop.is_set():
                astop.set()
            return astop.is_set()

        connectors = {n: self.connector(n) for n in names}
        breakers = {n: Breaker(n, self.config.breaker.max_consecutive_failures) for n in names}
        for c in connectors.values():
            c.bind_stop(astop, stop)  # rate-budget and backoff waits wake on a stop; no request after it
        # Connections left alone this cycle: needs_reauth, or a daily-quota pause not yet over.
        report.blocked = self._blocked(names)
        for n, why in report.blocked.items():
            breakers[n].trip(why)
            log.warning("connection_blocked", connection=n, reason=why)
        pulled = [n for n in pulled if n not in report.blocked]
        io = StoreThread()
        try:
            targets = [
                Target(
                    n,
                    _Guarded(c, breakers[n]),  # type: ignore[arg-type]
                    concurrency=self.config.connections[n].max_concurrency,
                    keys_of=_keys_of(self.config.mapping(n)),
                    read_fields=_reader(self.config.mapping(n)),
                    on_unwritable=self._unwritable_found,
                )
                for n, c in connectors.items()
            ]
            lap = time.monotonic()

            def timed(step: str) -> None:
                nonlocal lap
                now = time.monotonic()
                report.timings[step] = round(now - lap, 3)
                lap = now

            if not dry_run:
                report.settled = await apply_outbox(
                    self.outbox, targets, backoff=self.backoff, settle_only=True, io=io, stop=astop
                )
                timed("settle")
            if prefetched:
                report.timings["prefetch"] = max(p.seconds for p in prefetched.values())
            report.pulls = await self._pull(
                connectors, pulled, full=full, stop=astop, progress=progress, io=io, prefetched=prefetched
            )
            timed("pull")
            # A connection whose pull failed: its records are unknown this cycle, so nothing is
            # planned for it and nothing is pushed to it (its breaker opens).
            for n, why in report.blocked.items():
                report.pulls.setdefault(n, PullReport(n, skipped=why))
            failed_pulls = sorted({*(n for n in pulled if report.pulls[n].error), *report.blocked})
            for t in targets:
                pull = report.pulls.get(t.name)
                t.verify_updates = _verify_updates(connectors[t.name], pull)
                current = connectors[t.name].capabilities.listing_current
                t.fresh = (
                    pull.listed
                    if current and pull is not None and pull.complete and not pull.error and _as_current(pull)
                    else set()
                )
            for n in failed_pulls:
                breakers[n].trip(f"pull failed this cycle: {report.pulls[n].error}")
            if halted():
                report.status = "interrupted"
                report.error = "stopped before planning"
                return report
            # Updates sent earlier whose answer was lost, read back by this pull: ours, not edits.
            landed = {
                n: await io(self.outbox.confirm_landed, n, _reader(self.config.mapping(n)))
                for n in pulled
                if not dry_run and n in report.pulls and not report.pulls[n].error
            }
            if any(landed.values()):
                report.extra["landed"] = {n: k for n, k in landed.items() if k}
            # Contacts we wrote without reading them back come back from this pull as changed
            # payloads; those that read as we confirmed them are not changes. (A dry run too:
            # like staging, this only says what changed, and the plan it prints must be the
            # one a cycle would carry out.)
            echoes = {
                n: await io(self.outbox.clear_echoes, n, _snapshot_digest(self.config.mapping(n)))
                for n in pulled
                if n in report.pulls and not report.pulls[n].error
            }
            if any(echoes.values()):
                report.extra["echoes"] = {n: k for n, k in echoes.items() if k}
            # The intents are queued inside the planning transaction (PlanQueue): the persons it
            # marks clean and the writes that carry their edits commit together.
            queue = None if dry_run else PlanQueue(self.capabilities(connectors), run_id=report.run_id)
            # A connection that joined the profile after its persons were planned must get all of
            # them, not only the ones that change from now on.
            report.joined = await io(self.store.replan.unplanned_connections, names)
            if report.joined:
                log.info("replan_for_new_connections", connections=report.joined)
            if queue is None:
                report.plan = self._reconcile(
                    names,
                    connectors,
                    run_id=report.run_id,
                    commit=False,
                    queue=None,
                    replan=replan or bool(report.joined),
                    skip=failed_pulls,
                )
                timed("plan")
                report.status = _status(report, astop) if not halted() else "interrupted"
                return report
            push = None if progress is None else (lambda conn, n: progress("push", conn, n))
            # Planning runs in a worker thread and commits slice by slice; the push sends each
            # slice's intents as they commit (PlanFeed), so the writes to the slowest platform
            # start with the first slice. "plan" is timed to its end, "push" from there.
            feed = PlanFeed(report.run_id)
            loop = asyncio.get_running_loop()

            def notify_feed() -> None:  # from the planning thread, after each slice's commit
                loop.call_soon_threadsafe(feed.notify)

            pushing = asyncio.create_task(
                apply_outbox(
                    self.outbox,
                    targets,
                    backoff=self.backoff,
                    chunk_size=self.chunk_size,
                    stop=astop,
                    progress=push,
                    io=io,
                    feed=feed,
                )
            )
            try:
                report.plan = await asyncio.to_thread(
                    self._reconcile,
                    names,
                    connectors,
                    run_id=report.run_id,
                    commit=True,
                    queue=queue,
                    replan=replan or bool(report.joined),
                    on_commit=notify_feed,
                    skip=failed_pulls,
                )
                timed("plan")
                if progress is not None and report.plan is not None:  # the push bars' totals
                    for conn, ops in report.plan.summary().items():
                        progress("push_total", conn, sum(n for k, n in ops.items() if k != "exclude"))
            finally:
                # Whatever planning did, the slices it committed are sent before the cycle ends.
                feed.notify(finished=True)
                report.applied = await pushing
            report.queued = queue.result
            timed("push")
            report.status = _status(report, astop) if not halted() else "interrupted"
            return report
        except Exception as exc:
            report.status = "failed"
            report.error = f"{type(exc).__name__}: {exc}"
            log.exception("run_failed", error=report.error)
            return report
        except (KeyboardInterrupt, SystemExit, asyncio.CancelledError) as exc:
            # Ctrl-C, a SIGTERM turned into an exception, a cancelled task: recorded, then raised.
            report.status = "interrupted"
            report.error = f"interrupted ({type(exc).__name__})"
            raise
        finally:
            if watcher is not None:
                watcher.cancel()
            report.breakers = {n: b.reason for n, b in breakers.items() if b.reason}
            self._note_quota(report, connectors)
            if report.status == "ok" and report.blocked:
                report.status = "partial"
            if report.status in ("partial", "interrupted") and not report.error:
                fallback = "stopped on request (a stop signal)" if report.status == "interrupted" else None
                report.error = "; ".join(report.reasons()) or fallback
            await asyncio.gather(*(c.aclose() for c in connectors.values()), return_exceptions=True)
            self._save_windows(names)
            io.close()
            report.duration_s = round(time.monotonic() - started, 3)
            self._finish(report)
            structlog.contextvars.unbind_contextvars("run_id", "profile")

    def _blocked(self, names: Sequence[str]) -> dict[str, str]:
        """Connections a cycle leaves alone, with the reason: ``needs_reauth`` or a daily-quota
        pause not yet over (``store.auth.blocked``), and a GoHighLevel location whose token
        comes from an agency connection in ``needs_reauth``."""
        from sync.auth import oauth_app

        blocked = self.store.auth.blocked(list(names))
        agencies = {
            n: app.agency for n in names if n not in blocked and (app := oauth_app(self.config, n)) and app.agency
        }
        if not agencies:
            return blocked
        held = self.store.auth.blocked(sorted(set(agencies.values())))
        for n, agency in agencies.items():
            why = held.get(agency)
            if why is not None and why.startswith("needs_reauth"):
                blocked[n] = f"needs_reauth (its agency connection {agency}: {why.removeprefix('needs_reauth: ')})"
        return blocked

    def _note_quota(self, report: CycleReport, connectors: Mapping[str, Connector]) -> None:
        """Remember each connection's daily figures; pause one whose daily budget is spent until
        its reset (the run is then partial with that reason, never failed with 429s)."""
        for name, c in connectors.items():
            daily = getattr(getattr(c, "http", None), "daily", None)
            if daily is None or daily.remaining is None or name in report.blocked:
                continue
            try:
                if daily.exhausted():
                    until = daily.reset_at()
                    why = f"{daily.remaining} of {daily.limit} requests left today, reserve {daily.reserve}"
                    self.store.auth.pause_quota(name, until, why, limit=daily.limit, remaining=daily.remaining)
                    report.blocked[name] = f"daily quota: paused until {until:%Y-%m-%d %H:%M:%S} UTC ({why})"
                    log.warning("daily_quota_paused", connection=name, until=str(until), reason=why)
                else:
                    self.store.auth.note_quota(name, limit=daily.limit, remaining=daily.remaining)
            except Exception:  # noqa: BLE001 - the store may be what failed; the run is recorded anyway
                log.exception("daily_quota_not_recorded", connection=name)

    async def _pull(
        self,
        connectors: Mapping[str, Connector],
        names: Sequence[str],
        *,
        full: bool,
        stop: asyncio.Event,
        progress: ProgressFn | None,
        io: StoreThread,
        prefetched: Mapping[str, Prefetch] | None = None,
    ) -> dict[str, PullReport]:
        async def one(name: str) -> PullReport:
            pages: list[Page] | None = None
            skip: set[str] = set()
            known: dict[str, StagedHash] | None = None  # the staged rows as of now, when just read
            pre = (prefetched or {}).get(name)
            age: float | None = None
            if pre is not None and pre.error is not None:
                # Its listing failed moments ago, after the client's retries: one platform down
                # never stops the others, and is not asked again until the next cycle.
                log.warning("pull_failed", connection=name, error=pre.error)
                return PullReport(name, error=pre.error)
            if pre is not None:
                pages, skip, known = await io(self._usable, name, pre)
                age = round(time.monotonic() - pre.ended, 3)  # its wait for the turn and the lock
            try:
                report = await pull_connection(
                    self.store,
                    name,
                    connectors[name],
                    self.config.mapping(name),
                    full=full,
                    stop=stop,
                    progress=None if progress is None else (lambda conn, n: progress("pull", conn, n)),
                    total=None if progress is None else (lambda conn, n: progress("pull_total", conn, n)),
                    io=io,
                    deletes=DeleteLimits(self.config.deletes.max_share, self.config.deletes.max_count),
                    prefetched=pages,
                    skip=skip,
                    known=known,
                )
                if pages is not None:
                    report.prefetch_age_s = age
                return report
            except ConnectorError as exc:
                # One platform down never stops the others; its staged rows stay as they were.
                log.warning("pull_failed", connection=name, error=str(exc))
                return PullReport(name, error=f"{type(exc).__name__}: {exc}")

        reports = await asyncio.gather(*(one(n) for n in names))
        return {r.connection: r for r in reports}

    def _reconcile(
        self,
        names: Sequence[str],
        connectors: Mapping[str, Connector],
        *,
        run_id: int,
        commit: bool,
        queue: PlanQueue | None,
        replan: bool,
        on_commit: Callable[[], None] | None = None,
        skip: Sequence[str] = (),
    ) -> Plan:
        """Match dirty records into persons, reconcile them and build the plan (nothing for the
        connections in ``skip``, whose pull failed)."""
        return build_plan(
            self.store,
            self.config,
            list(names),
            self.capabilities(connectors),
            run_id=run_id,
            commit=commit,
            queue=queue,
            replan=replan,
            on_commit=on_commit,
            workers=self.config.planning.worker_count(),
            skip=skip,
        )

    def _finish(self, report: CycleReport) -> None:
        if report.kind != "plan":
            metrics.record_run(report.profile, report.status, report.duration_s)
        counts = report.counts()
        if report.run_id is not None:
            status = report.status if report.status in ("ok", "partial", "failed", "interrupted") else "failed"
            try:
                self.store.runs.finish_run(report.run_id, status, counts, report.error)
            except Exception:  # noqa: BLE001 - the store may be what failed; the next start marks it
                log.exception("run_not_recorded", run_id=report.run_id, status=status)
        summary: dict[str, Any] = {
            "profile": report.profile,
            "kind": report.kind,
            "status": report.status,
            "duration_s": report.duration_s,
            "pulled": sum(p.records for p in report.pulls.values()),
            "changed": sum(p.inserted + p.changed for p in report.pulls.values()),
            "quarantined": sum(p.quarantined for p in report.pulls.values()),
        }
        if report.plan is not None:
            kinds: dict[str, int] = {}
            for ops in report.plan.summary().values():
                for k, n in ops.items():
                    kinds[k] = kinds.get(k, 0) + n
            summary.update(planned=kinds, conflicts=len(report.plan.conflicts))
        if report.applied is not None:
            summary.update(write_calls=report.write_calls(), done=report.applied.done, failed=report.applied.failed)
        if report.error:
            summary["error"] = report.error
        log.info("run_finished", run_id=report.run_id, **summary)


def rate_window_owner() -> str:
    """A name for one user of rate windows (this host, this process, this runner)."""
    return f"{socket.gethostname()[:64]}:{os.getpid()}:{secrets.token_hex(4)}"


def load_rate_window(store: Store, name: str, budget: RateBudget, owner: str) -> int:
    """Count in ``budget`` the requests other processes of ours (``store.rate_windows``) sent
    to connection ``name`` within its window: a daemon started just after a backfill or a
    probe would otherwise start from an empty window and overrun the platform's limit (429s
    the headers of a platform like Comm100 never warned of). How many were counted."""
    if budget.limit is None:
        return 0
    try:
        wall, mono = time.time(), time.monotonic()
        since = wall - budget.limit.per_seconds * 1.05
        stamps = store.rate_windows.sent_by_others(name, owner, since)
        counted = budget.count_sent(mono - (wall - t) for t in stamps)
    except Exception:  # noqa: BLE001 - a budget that starts empty is the old behaviour, not a failure
        log.exception("rate_window_not_loaded", connection=name)
        return 0
    if counted:
        log.info("rate_window_loaded", connection=name, requests=counted, window_s=budget.limit.per_seconds)
    return counted


def save_rate_window(
    store: Store, name: str, budget: RateBudget, owner: str, stamps: Sequence[float] | None = None
) -> bool:
    """Record what ``budget`` sent within its window as ``owner``'s row (wall-clock)."""
    if budget.limit is None:
        return False
    try:
        wall, mono = time.time(), time.monotonic()
        stamps = budget.window_stamps() if stamps is None else stamps
        store.rate_windows.save(name, owner, [round(wall - (mono - t), 3) for t in stamps])
    except Exception:  # noqa: BLE001 - the store may be what failed; the run goes on
        log.exception("rate_window_not_saved", connection=name)
        return False
    return True


def _as_current(pull: PullReport) -> bool:
    """Whether a pull's listing is as current as one made under this cycle's lock: not
    prefetched, or prefetched and staged at once (it did not wait behind another cycle) with
    no row skipped as written meanwhile (:data:`PREFETCH_CURRENT_S`)."""
    if not pull.prefetched:
        return True
    return pull.skipped_stale == 0 and pull.prefetch_age_s is not None and pull.prefetch_age_s <= PREFETCH_CURRENT_S


def _verify_updates(connector: Connector, pull: PullReport | None) -> bool:
    """Whether updates to this connection read the contact first (issue 14 A: a write is sent
    only if the remote field is still what it was planned against). Not when this cycle's pull
    was a complete full scan the delete breaker believed: every staged payload is then as of
    this cycle (Acquire, the common case: no extra call); nor when it was a sorted listing that
    caught up (``PullReport.caught_up``: it went back past its cursor and its total matches
    the store, so no change made since is missing; Comm100). Otherwise a contact the pull did not
    list may hold an edit it did not show (an incremental listing that came back short,
    GoHighLevel's search lag), so one GET by id precedes each update of such a contact (a
    contact listed this cycle is current: ``Target.fresh``). Never on a platform that cannot
    be read."""
    caps = connector.capabilities
    if caps.pull_mode is PullMode.LOOKUP_ONLY:
        return False
    trusted = (
        pull is not None
        and (caps.pull_mode is PullMode.FULL_SCAN or (pull.caught_up and caps.listing_current))
        and _as_current(pull)  # a scan read before the turn may be older than the push
        and pull.complete
        and not pull.error
        and not pull.held
        and not pull.resumed
    )
    return not trusted


def _status(report: CycleReport, stop: asyncio.Event) -> str:
    """How a cycle that ran to its end went: ``interrupted`` when a stop was requested,
    ``partial`` when any connection's pull failed, any deletes or creates were held, any breaker
    opened or any write failed or was left for later; else ``ok``."""
    if stop.is_set():
        return "interrupted"
    if report.blocked or any(p.error or p.held for p in report.pulls.values()):
        return "partial"
    for applied in (report.settled, report.applied):
        if applied is None:
            continue
        if any(r.failed or r.deferred or r.stopped or r.held for r in applied.connections.values()):
            return "partial"
    return "ok"


class CircuitOpen(ConfigurationError):
    """A connection's circuit breaker is open: no call is made to it for the rest of the cycle.
    (A ``ConfigurationError``, so the push stops that connection and leaves its rows pending.)"""


class Breaker:
    """One connection's circuit breaker for one cycle: ``limit`` failed calls in a row (the
    platform unavailable after the HTTP layer's retries, unauthorized, a transport error) open it,
    as does a failed pull (:meth:`trip`). A call that gets any answer — a success or a
    record-level error — closes the count again."""

    def __init__(self, name: str, limit: int) -> None:
        self.name = name
        self.limit = max(1, limit)
        self.failures = 0
        self.reason: str | None = None

    def check(self) -> None:
        if self.reason is not None:
            raise CircuitOpen(f"{self.name}: circuit breaker open for this cycle: {self.reason}")

    def trip(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
            log.warning("breaker_open", connection=self.name, reason=reason)

    def success(self) -> None:
        self.failures = 0

    def failure(self, exc: BaseException) -> None:
        if isinstance(exc, (QuotaExhausted, NeedsReauth)):  # no point in asking again this cycle
            self.trip(str(exc))
            return
        self.failures += 1
        if self.failures >= self.limit:
            self.trip(f"{self.failures} calls in a row failed, the last with {type(exc).__name__}: {exc}")


class _Guarded:
    """A connector whose write and lookup calls go through its :class:`Breaker`."""

    _CALLS = frozenset({"create", "update", "upsert", "delete", "add_tags", "remove_tags", "merge", "lookup", "get"})

    def __init__(self, inner: Connector, breaker: Breaker) -> None:
        self._inner = inner
        self._breaker = breaker

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name not in self._CALLS:
            return attr
        breaker = self._breaker

        async def call(*args: Any, **kwargs: Any) -> Any:
            breaker.check()
            try:
                result = await attr(*args, **kwargs)
            except (RecordError, NotImplementedError):
                breaker.success()  # the platform answered: it is up
                raise
            except ConnectorError as exc:
                breaker.failure(exc)
                raise
            except Exception as exc:
                breaker.failure(exc)
                raise
            if name != "get":
                # A read by id (the check before an update) that answers says nothing about
                # the writes: a platform that reads but fails every write still opens.
                breaker.success()
            return result

        return call


def _keys_of(mapping: Any) -> Callable[[Mapping[str, Any]], list[tuple[str, str]]]:
    def keys(payload: Mapping[str, Any]) -> list[tuple[str, str]]:
        return read_keys(mapping, dict(payload))

    return keys


def _snapshot_digest(mapping: Any) -> Callable[[dict[str, Any]], str | None]:
    """The snapshot hash a raw payload would confirm (its non-empty canonical values, as
    reconcile confirms a side it reads); None when the payload does not read cleanly."""

    def digest(payload: dict[str, Any]) -> str | None:
        result = mapping.read(dict(payload))
        if getattr(result, "issues", None):
            return None
        return fields_hash(fields_to_json({k: v for k, v in result.fields.items() if not is_empty(v)}))

    return digest


def _reader(mapping: Any) -> Callable[[Mapping[str, Any]], Any]:
    def read(payload: Mapping[str, Any]) -> Any:
        return mapping.read(dict(payload)).fields

    return read


async def _watch(stop: threading.Event | None, astop: asyncio.Event) -> None:
    """Bridge a thread-world stop event (the daemon's signal handler) into the event loop."""
    while stop is not None and not stop.is_set():
        await asyncio.sleep(0.1)
    astop.set()
