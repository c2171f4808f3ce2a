"""The run log: every cycle, backfill or plan, with its start, end, status and counts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from sync.store.models import Run, utcnow

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from sqlalchemy.orm import Session

    from sync.store.db import Sessions

RUN_STATUSES = ("running", "ok", "partial", "failed", "interrupted")


@dataclass(frozen=True)
class RunInfo:
    """One row of the run log."""

    id: int
    profile: str
    kind: str
    started_at: datetime
    finished_at: datetime | None
    status: str
    counts: dict[str, Any]
    error: str | None


class Runs:
    """Run-log operations: the repository ``store.runs``."""

    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions

    def session(self) -> AbstractContextManager[Session]:
        return self._sessions.begin()

    def start_run(self, profile: str, kind: str) -> int:
        """Log the start of a run (``kind``: cycle | backfill | plan) and return its id."""
        with self.session() as s:
            run = Run(profile=profile, kind=kind, status="running", counts={}, started_at=utcnow())
            s.add(run)
            s.flush()
            return run.id

    def finish_run(self, run_id: int, status: str, counts: dict[str, Any], error: str | None = None) -> None:
        """Log the end of a run. ``error`` must already be free of secrets."""
        if status not in RUN_STATUSES[1:]:
            raise ValueError(f"a run finishes as one of {RUN_STATUSES[1:]}, not {status!r}")
        with self.session() as s:
            run = s.get(Run, run_id)
            if run is None:
                raise KeyError(f"no run {run_id}")
            run.status = status
            run.counts = dict(counts)
            run.error = error
            run.finished_at = utcnow()

    def interrupt_stale(self, profile: str, reason: str) -> list[int]:
        """Mark the profile's runs still ``running`` as ``interrupted`` with ``reason``; call it
        only under the profile's lock (then no live process runs them). Returns their ids."""
        with self.session() as s:
            ids = list(s.scalars(select(Run.id).where(Run.profile == profile, Run.status == "running")))
            if ids:
                s.execute(
                    update(Run)
                    .where(Run.id.in_(ids))
                    .values(status="interrupted", error=reason, finished_at=utcnow())
                    .execution_options(synchronize_session=False)
                )
            return ids

    def recent_runs(self, limit: int = 20) -> list[RunInfo]:
        """The latest runs, newest first."""
        with self.session() as s:
            rows = s.execute(select(Run).order_by(Run.id.desc()).limit(limit)).scalars().all()
            return [
                RunInfo(r.id, r.profile, r.kind, r.started_at, r.finished_at, r.status, dict(r.counts or {}), r.error)
                for r in rows
            ]
