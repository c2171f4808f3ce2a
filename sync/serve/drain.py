"""The inbox drain: a daemon thread that turns stored webhook events into focused cycles.

Woken by the listener after each stored event (and every ``poll_s`` anyway, for events another
process's listener stored), it waits ``debounce_s`` to gather the burst, then, per profile,
re-reads the changed contacts and runs a cycle for the persons they touch
(:meth:`sync.cycle.CycleRunner.run_hints`) under the profile's lock — shared with the scheduled
cycles, so a webhook cycle never runs beside one. When the lock is held the events stay
pending and the drain tries again shortly. Events are marked processed once their contacts are
staged: a crash after that leaves the persons dirty for the next cycle, and a crash before it
leaves the events pending.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import structlog

from sync.config import Config
from sync.cycle import CycleReport, CycleRunner
from sync.detect.hints import HintReport
from sync.store import Store

log = structlog.get_logger("contactsync.drain")


class InboxDrain:
    """``InboxDrain(runner, store, config).start()`` … ``.stop()``; ``notify()`` wakes it."""

    def __init__(
        self,
        runner: CycleRunner,
        store: Store,
        config: Config,
        *,
        stop: threading.Event | None = None,
        debounce_s: float | None = None,
        poll_s: float = 1.0,
        retry_s: float = 0.25,
        batch: int = 2000,
        on_cycle: Callable[[CycleReport], None] | None = None,
    ) -> None:
        self.runner = runner
        self.store = store
        self.config = config
        self.stop_event = stop or threading.Event()
        settings = config.webhooks.gohighlevel
        self.debounce_s = settings.debounce_s if debounce_s is None else debounce_s
        self.replay_window_s = settings.max_age_s
        self.poll_s = poll_s
        self.retry_s = retry_s
        self.batch = batch
        self.on_cycle = on_cycle
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._purged_at = 0.0
        self.cycles = 0

    def notify(self) -> None:
        """An event was stored: drain soon (after the debounce window)."""
        self._wake.set()

    def start(self) -> InboxDrain:
        self._thread = threading.Thread(target=self._loop, name="inbox-drain", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 4.0) -> None:
        self.stop_event.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            self._wake.wait(self.poll_s)
            if self.stop_event.is_set():
                break
            if self._wake.is_set() and self.debounce_s > 0:
                self.stop_event.wait(self.debounce_s)  # gather the burst
            self._wake.clear()
            try:
                again = self.drain_once()
            except Exception:  # noqa: BLE001 - logged; the events stay pending, tried again
                log.exception("drain_failed")
                again = True
            if again:
                self.stop_event.wait(self.retry_s)
                self._wake.set()

    def drain_once(self) -> bool:
        """Process the pending events once; True when some are left for a retry (a profile's
        lock was held elsewhere, or more than one batch was waiting)."""
        self._purge()
        events = self.store.inbox.pending(limit=self.batch)
        if not events:
            return False
        left = len(events) >= self.batch
        profiles = self.config.effective_profiles()
        enabled = set(self.config.enabled_connections())
        claimed: set[int] = set()
        for profile, p in profiles.items():
            if self.stop_event.is_set():
                return False
            members = {c for c in (p.connections or []) if c in enabled}
            mine = [e for e in events if e.connection in members and e.id not in claimed]
            if not mine:
                continue
            hints: dict[str, list[str]] = {}
            for e in mine:
                hints.setdefault(e.connection, []).append(e.remote_id)
            ids = [e.id for e in mine]

            def staged(_reports: dict[str, HintReport], ids: list[int] = ids) -> None:
                self.store.inbox.mark_processed(ids)

            report = self.runner.run_hints(profile, hints, stop=self.stop_event, on_staged=staged)
            if report.status == "skipped":
                left = True
                continue
            claimed.update(ids)
            self.cycles += 1
            log.info(
                "webhook_cycle",
                profile=profile,
                events=len(mine),
                status=report.status,
                duration_s=report.duration_s,
                hints=report.extra.get("hints"),
            )
            if self.on_cycle is not None:
                self.on_cycle(report)
        # Events of connections no profile syncs: nothing to do with them.
        orphans = [e.id for e in events if not any(e.connection in (p.connections or []) for p in profiles.values())]
        if orphans:
            self.store.inbox.mark_processed(orphans)
        return left

    def _purge(self) -> None:
        now = time.monotonic()
        if now - self._purged_at < 60.0:
            return
        self._purged_at = now
        # Twice the window: a delivery older than the window is refused as stale anyway.
        cutoff = datetime.now(UTC) - timedelta(seconds=2 * self.replay_window_s)
        self.store.inbox.purge(cutoff)
