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
import time
from collections.abc import Callable, Mapping, Sequence
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

from sync.adaptive import AdaptivePolicy

log = structlog.get_logger("contactsync.daemon")

RunProfile = Callable[[str, threading.Event], Any]


# What signal.signal() takes and returns (typeshed's private signal._HANDLER).
_SignalHandler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


@dataclass(frozen=True)
class ScheduledProfile:
    """When one profile runs: every ``interval_seconds``, or on a 5-field ``cron`` expression.
    ``poller``: adaptive polls between full cycles (:class:`AdaptivePoller`)."""

    name: str
    interval_seconds: float | None = None
    cron: str | None = None
    misfire_grace_seconds: int = 60
    run_at_start: bool = True
    poller: AdaptivePoller | None = None

    def trigger(self) -> IntervalTrigger | CronTrigger:
        if self.cron:
            return CronTrigger.from_crontab(self.cron, timezone=UTC)
        return IntervalTrigger(seconds=max(1.0, float(self.interval_seconds or 300.0)), timezone=UTC)


#: What one poll saw of one connection: ``(changes, requests)``, or ``(changes, requests,
#: seconds)`` with the time the polling itself took (else the whole poll is timed).
PollResult = tuple[int, int] | tuple[int, int, float]
#: One poll: ``(profile, connections due, stop)`` -> per connection a :data:`PollResult`
#: (None: nothing was done, e.g. a full cycle held the profile's lock).
PollFn = Callable[[str, list[str], threading.Event], "Mapping[str, PollResult] | None"]
#: What is left of a connection's daily budget and the seconds to its reset (None: unknown).
BudgetFn = Callable[[str], "tuple[int | None, float | None]"]


class AdaptivePoller:
    """Adaptive polls of one profile's connections between its full cycles: each connection
    has an :class:`~sync.adaptive.AdaptivePolicy` and a due time; a short tick polls the
    connections that are due in one focused cycle (``only`` those pulled) and folds what each
    pull saw into its policy. Full cycles stay the safety net; both take the profile's lock, so
    a poll that meets a running cycle is skipped (and tried at the next tick).

    ``lanes`` (connection -> lane name) puts connections in lanes the daemon ticks on threads
    of their own: a long poll (a full scan of every page) then never delays the quick ones of
    another lane. One lane by default."""

    def __init__(
        self,
        policies: Mapping[str, AdaptivePolicy],
        poll: PollFn,
        *,
        budget: BudgetFn | None = None,
        clock: Callable[[], float] = time.monotonic,
        lanes: Mapping[str, str] | None = None,
    ) -> None:
        self.policies = dict(policies)
        self.poll = poll
        self.budget = budget
        self.clock = clock
        now = clock()
        self.due = {name: now + p.interval for name, p in self.policies.items()}
        self.lanes = {name: str((lanes or {}).get(name, "default")) for name in self.policies}
        self.polls = 0
        self._guard = threading.Lock()  # due times and counts, updated from each lane's thread

    def nudge(self, name: str) -> None:
        """Activity on ``name`` seen another way (a webhook of it): poll it at its floor from
        now on (deliveries can be lost; polling finds the lost ones)."""
        with self._guard:
            policy = self.policies.get(name)
            if policy is None:
                return
            self.due[name] = min(self.due[name], self.clock() + policy.nudge())

    def lane_names(self) -> list[str]:
        """The lanes, each ticked on a thread of its own."""
        return sorted(set(self.lanes.values())) or ["default"]

    @property
    def tick_s(self) -> float:
        """How often to look for due connections."""
        shortest = min((p.min_interval_s for p in self.policies.values()), default=5.0)
        return max(0.1, min(shortest / 2, 5.0))

    def due_now(self, lane: str | None = None) -> list[str]:
        now = self.clock()
        with self._guard:
            return sorted(n for n, t in self.due.items() if t <= now and (lane is None or self.lanes[n] == lane))

    def tick(self, profile: str, stop: threading.Event, lane: str | None = None) -> list[str]:
        """Poll the connections that are due (of ``lane``; all with None); the ones polled."""
        due = self.due_now(lane)
        if not due or stop.is_set():
            return []
        started = self.clock()
        results = self.poll(profile, due, stop)
        if results is None:
            return []
        now = self.clock()
        with self._guard:
            self.polls += 1
            for name in due:
                policy = self.policies[name]
                result = results.get(name, (0, 1))
                changes, requests = result[0], result[1]
                took = result[2] if len(result) > 2 else now - started
                remaining, reset = self.budget(name) if self.budget else (None, None)
                interval = policy.observe(
                    changes, requests, daily_remaining=remaining, seconds_to_reset=reset, seconds=took
                )
                self.due[name] = now + interval
                log.debug(
                    "adaptive_poll", connection=name, changes=changes, requests=requests, next_s=round(interval, 2)
                )
        return due


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
        # Adaptive polls run on a thread of their own per profile (a tick that finds nothing
        # due costs nothing; a poll longer than a tick simply delays the next one).
        self._poll_threads = [
            threading.Thread(
                target=self._poll_loop, args=(p.name, p.poller, lane), name=f"poll:{p.name}:{lane}", daemon=True
            )
            for p in self.profiles
            if p.poller is not None
            for lane in p.poller.lane_names()
        ]

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

    def _poll_loop(self, profile: str, poller: AdaptivePoller, lane: str) -> None:
        while not self.stop_event.wait(poller.tick_s):
            try:
                poller.tick(profile, self.stop_event, lane)
            except Exception:  # noqa: BLE001 - a failed poll is logged; the polls go on
                log.exception("poll_failed", profile=profile)

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
        for thread in self._poll_threads:
            thread.start()
        started: list[Any] = []
        try:
            for service in self.services:
                service.start()
                started.append(service)
            self.scheduler.start()
        finally:
            self.stop_event.set()  # the scheduler has stopped: so do the polls and the services' work
            for thread in self._poll_threads:
                thread.join()  # the stop event ends each loop after its poll in flight
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
