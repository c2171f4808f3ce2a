"""The webhook inbox (``store.inbox``): deliveries the listener accepted, durable before it
answers 200, drained by the daemon (``sync.serve.drain``).

A delivery is written in one short transaction that also refuses a repeated ``webhookId``
(a replay) and a full inbox (backpressure: the listener answers 429 and the platform retries).
Processed rows stay, marked, until they are older than the replay window, so a replayed
delivery is still recognised; :meth:`Inbox.purge` drops them after.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from sync.store.models import RemoteRecord, WebhookEvent, utcnow

if TYPE_CHECKING:
    from sync.store.db import Sessions

_CHUNK = 500

Verdict = Literal["stored", "replay", "full"]


@dataclass(frozen=True)
class InboxEvent:
    """One accepted delivery: which contact of which connection changed, and how."""

    id: int
    source: str
    webhook_id: str
    connection: str
    event_type: str
    remote_id: str
    payload: dict[str, Any]
    event_at: datetime
    received_at: datetime


class Inbox:
    """The webhook inbox; each call is a transaction of its own."""

    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions

    def session(self) -> AbstractContextManager[Session]:
        return self._sessions()

    def add(
        self,
        *,
        source: str,
        webhook_id: str,
        connection: str,
        event_type: str,
        remote_id: str,
        payload: dict[str, Any],
        event_at: datetime,
        max_depth: int,
    ) -> Verdict:
        """Store one delivery unless its ``webhook_id`` was seen before (``replay``) or the
        inbox already holds ``max_depth`` unprocessed events (``full``)."""
        try:
            with self.session() as s:
                seen = s.execute(
                    select(WebhookEvent.id).where(WebhookEvent.source == source, WebhookEvent.webhook_id == webhook_id)
                ).first()
                if seen is not None:
                    return "replay"
                depth = s.execute(
                    select(func.count()).select_from(WebhookEvent).where(WebhookEvent.processed_at.is_(None))
                ).scalar_one()
                if int(depth) >= max_depth:
                    return "full"
                s.add(
                    WebhookEvent(
                        source=source,
                        webhook_id=webhook_id,
                        connection=connection,
                        event_type=event_type,
                        remote_id=remote_id,
                        payload=payload,
                        event_at=event_at,
                        received_at=utcnow(),
                    )
                )
                s.flush()
        except IntegrityError:
            return "replay"  # the same delivery stored by a concurrent request meanwhile
        return "stored"

    def depth(self) -> int:
        """Events not processed yet."""
        with self.session() as s:
            n = s.execute(
                select(func.count()).select_from(WebhookEvent).where(WebhookEvent.processed_at.is_(None))
            ).scalar_one()
            return int(n)

    def pending(self, connections: Sequence[str] | None = None, *, limit: int = 1000) -> list[InboxEvent]:
        """Unprocessed events (of ``connections``; all when None), oldest first."""
        with self.session() as s:
            q = select(WebhookEvent).where(WebhookEvent.processed_at.is_(None))
            if connections is not None:
                q = q.where(WebhookEvent.connection.in_(list(connections)))
            rows = s.execute(q.order_by(WebhookEvent.id).limit(limit)).scalars().all()
            return [
                InboxEvent(
                    id=r.id,
                    source=r.source,
                    webhook_id=r.webhook_id,
                    connection=r.connection,
                    event_type=r.event_type,
                    remote_id=r.remote_id,
                    payload=dict(r.payload or {}),
                    event_at=r.event_at,
                    received_at=r.received_at,
                )
                for r in rows
            ]

    def mark_processed(self, ids: Sequence[int]) -> int:
        """Mark events processed (their contacts were re-read and staged)."""
        n = 0
        now = utcnow()
        with self.session() as s:
            for start in range(0, len(ids), _CHUNK):
                result = s.execute(
                    update(WebhookEvent)
                    .where(WebhookEvent.id.in_(list(ids[start : start + _CHUNK])))
                    .values(processed_at=now)
                    .execution_options(synchronize_session=False)
                )
                n += int(result.rowcount or 0)  # type: ignore[attr-defined]  # DML gives a CursorResult
        return n

    def purge(self, received_before: datetime) -> int:
        """Drop processed events received before ``received_before`` (past the replay window:
        a delivery that old is refused by its timestamp anyway)."""
        with self.session() as s:
            result = s.execute(
                delete(WebhookEvent)
                .where(WebhookEvent.processed_at.is_not(None), WebhookEvent.received_at < received_before)
                .execution_options(synchronize_session=False)
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def live_records(self, connection: str, remote_ids: Sequence[str]) -> set[str]:
        """Which of ``remote_ids`` are staged for ``connection`` and not deleted (a delete
        signal for a contact never staged has nothing to act on)."""
        out: set[str] = set()
        with self.session() as s:
            for start in range(0, len(remote_ids), _CHUNK):
                out.update(
                    str(r)
                    for (r,) in s.execute(
                        select(RemoteRecord.remote_id).where(
                            RemoteRecord.connection == connection,
                            RemoteRecord.remote_id.in_(list(remote_ids[start : start + _CHUNK])),
                            RemoteRecord.deleted_at.is_(None),
                        )
                    )
                )
        return out
