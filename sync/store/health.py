"""What health checks and metrics read from the store at scrape time: one short read-only
transaction per scrape (the ``/metrics`` gauges, ``/readyz``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import func, select, text

from sync.store.models import Conflict, Outbox, OutboxStatus, Run

if TYPE_CHECKING:
    from sync.store.db import Sessions


@dataclass(frozen=True)
class LastRun:
    """A profile's latest finished run (plans excluded)."""

    id: int
    status: str
    finished_at: datetime
    error: str | None


@dataclass
class HealthSnapshot:
    """The store's side of the sync's health, read in one transaction."""

    #: per connection: outbox rows pending (waiting to be sent, failed ones included: both are due
    #: again) and the creation time of the oldest of them.
    outbox_pending: dict[str, int] = field(default_factory=dict)
    outbox_oldest_pending: dict[str, datetime] = field(default_factory=dict)
    #: per connection: when the latest run whose pull of it succeeded started (the data staged
    #: from it is at least that fresh).
    last_pull: dict[str, datetime] = field(default_factory=dict)
    #: per profile: when its latest ``ok`` cycle or backfill finished; and its latest finished run.
    last_success: dict[str, datetime] = field(default_factory=dict)
    last_run: dict[str, LastRun] = field(default_factory=dict)
    conflicts_open: int = 0


class HealthQueries:
    """Read-only health queries: the repository ``store.health``."""

    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions

    def ping(self) -> None:
        """Raise when the store cannot answer a trivial query."""
        with self._sessions() as s:
            s.execute(text("SELECT 1"))

    def snapshot(self, *, look_back: int = 200) -> HealthSnapshot:
        """Every health figure at once (the latest ``look_back`` runs are read for the per-
        connection pull times and per-profile outcomes)."""
        out = HealthSnapshot()
        waiting = (OutboxStatus.PENDING.value, OutboxStatus.FAILED.value)
        with self._sessions() as s:
            for conn, n, oldest in s.execute(
                select(Outbox.connection, func.count(), func.min(Outbox.created_at))
                .where(Outbox.status.in_(waiting))
                .group_by(Outbox.connection)
            ):
                out.outbox_pending[conn] = int(n)
                if oldest is not None:
                    out.outbox_oldest_pending[conn] = oldest
            out.conflicts_open = int(
                s.scalar(
                    select(func.count())
                    .select_from(Conflict)
                    .where(Conflict.needs_review.is_(True), Conflict.resolved_at.is_(None))
                )
                or 0
            )
            runs = s.scalars(
                select(Run).where(Run.status != "running", Run.kind != "plan").order_by(Run.id.desc()).limit(look_back)
            ).all()
            for run in runs:
                if run.finished_at is None:
                    continue
                if run.profile not in out.last_run:
                    out.last_run[run.profile] = LastRun(run.id, run.status, run.finished_at, run.error)
                if run.status == "ok" and run.profile not in out.last_success:
                    out.last_success[run.profile] = run.finished_at
                for conn, pull in ((run.counts or {}).get("pull") or {}).items():
                    if conn in out.last_pull or not isinstance(pull, dict):
                        continue
                    if not pull.get("error") and not pull.get("skipped"):
                        out.last_pull[conn] = run.started_at
            # Connections whose outbox is empty still get a series (0).
        return out
