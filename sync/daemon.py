"""The daemon behind ``contactsync run``: APScheduler 3 ``BlockingScheduler``, one job per sync
profile.

Every job has ``max_instances=1`` (a slow cycle is never overlapped by the next one),
``coalesce=True`` (cycles missed while one ran collapse into one) and an explicit
``misfire_grace_time``. SIGTERM/SIGINT set a stop event that the running cycle checks between
calls — the call in flight finishes and its result is recorded, so the outbox stays consistent
— then the scheduler shuts down and the daemon waits for the running cycle to return.

Scale-out is not the daemon's job: each cycle takes its profile's lock (``sync.store.locks``),
so several daemons on several machines can share one PostgreSQL store.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import FrameType
from typing import Any

import structlog
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MISSED, JobExecutionEvent
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

log = structlog.get_logger("contactsync.daemon")

RunProfile = Callable[[str, threading.Event], Any]


# What signal.signal() takes and returns (typeshed's private signal._HANDLER).
_SignalHandler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


@dataclass(frozen=True)
class ScheduledProfile:
    """When one profile runs: every ``interval_seconds``, or on a 5-field ``cron`` expression."""

    name: str
    interval_seconds: float | None = None
    cron: str | None = None
    misfire_grace_seconds: int = 60
    run_at_start: bool = True

    def trigger(self) -> IntervalTrigger | CronTrigger:
        if self.cron:
            return CronTrigger.from_crontab(self.cron, timezone=UTC)
        return IntervalTrigger(seconds=max(1.0, float(self.interval_seconds or 300.0)), timezone=UTC)


class Daemon:
    """Runs profiles on their schedules until stopped."""

    def __init__(
        self,
        profiles: Sequence[ScheduledProfile],
        run_profile: RunProfile,
        *,
        services: Sequence[Any] = (),
    ) -> None:
        """``services``: objects with ``start()`` and ``stop(timeout)`` (the HTTP listener, the
        inbox drain) started before the scheduler and stopped, in reverse, when it stops."""
        if not profiles:
            raise ValueError("no sync profile to run")
        self.profiles = list(profiles)
        self.run_profile = run_profile
        self.services = list(services)
        self.stop_event = threading.Event()
        self._idle = threading.Condition()
        self._running = 0
        # One worker per profile: profiles run side by side, a profile never beside itself.
        self.scheduler = BlockingScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=len(self.profiles))},
            timezone=UTC,
        )
        self.scheduler.add_listener(self._on_event, EVENT_JOB_ERROR | EVENT_JOB_MISSED)
        for p in self.profiles:
            self.scheduler.add_job(
                self._job,
                trigger=p.trigger(),
                args=[p.name],
                id=f"profile:{p.name}",
                name=f"sync profile {p.name}",
                max_instances=1,
                coalesce=True,
                misfire_grace_time=p.misfire_grace_seconds,
                next_run_time=datetime.now(UTC) if p.run_at_start else None,
                replace_existing=True,
            )

    def _job(self, profile: str) -> None:
        if self.stop_event.is_set():
            return
        with self._idle:
            self._running += 1
        try:
            self.run_profile(profile, self.stop_event)
        except Exception:  # noqa: BLE001 - a failed cycle is logged; the schedule goes on
            log.exception("cycle_failed", profile=profile)
        finally:
            with self._idle:
                self._running -= 1
                self._idle.notify_all()

    def _on_event(self, event: JobExecutionEvent) -> None:
        if event.code == EVENT_JOB_MISSED:
            log.warning("cycle_missed", job=event.job_id, scheduled=str(event.scheduled_run_time))

    def stop(self, *_: Any) -> None:
        """Ask the daemon to stop: the running cycle winds down after its in-flight calls."""
        if self.stop_event.is_set():
            return
        self.stop_event.set()
        log.info("daemon_stopping")
        # shutdown(wait=False) from a signal handler: the main loop wakes and start() returns;
        # waiting for the running cycle happens in run(), outside the handler.
        threading.Thread(target=self.scheduler.shutdown, kwargs={"wait": False}, daemon=True).start()

    def run(self, *, install_signals: bool = True) -> int:
        """Block until SIGTERM/SIGINT (or :meth:`stop`); return the exit code."""
        previous: dict[signal.Signals, _SignalHandler] = {}
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, self._on_signal)
        log.info("daemon_started", profiles=[p.name for p in self.profiles])
        started: list[Any] = []
        try:
            for service in self.services:
                service.start()
                started.append(service)
            self.scheduler.start()
        finally:
            self.stop_event.set()  # the services' work (a webhook cycle) winds down too
            for service in reversed(started):
                try:
                    service.stop(2.0)
                except Exception:  # noqa: BLE001 - stopping the others matters more
                    log.exception("service_stop_failed", service=type(service).__name__)
            with self._idle:
                while self._running:
                    self._idle.wait(timeout=1.0)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        log.info("daemon_stopped")
        return 0

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("signal_received", signal=signal.Signals(signum).name)
        self.stop()
