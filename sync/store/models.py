"""SQLAlchemy 2 typed models of the staging store (DESIGN.md, "Data model").

The same models serve SQLite (default, a file) and PostgreSQL (production, scale-out); the
Alembic migrations in ``migrations/`` build them identically on both. Constraint names follow
one naming convention so batch-mode migrations on SQLite can address them.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# JSON on SQLite, JSONB on PostgreSQL.
JSONType = JSON().with_variant(JSONB(), "postgresql")
# Integer primary keys: 64-bit on PostgreSQL; SQLite needs plain INTEGER for rowid aliasing.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both stores (SQLite keeps no zone: store naive UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use UTC-aware datetimes")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Partial-index predicates (migration 0002). SQLite has no boolean type and uses a partial index
# only when the query repeats its predicate: ``dirty = 1`` is what SQLAlchemy renders there for
# ``.where(table.c.dirty)`` (``dirty`` on PostgreSQL). Never filter with ``.is_(True)`` (``IS 1``).
# Typed as Index's ``**dialect_kw: Any`` so unpacking them cannot bind to its named parameters.
_ONLY_DIRTY: dict[str, Any] = {"sqlite_where": text("dirty = 1"), "postgresql_where": text("dirty")}
_ONLY_MERGED: dict[str, Any] = {
    "sqlite_where": text("merged_into IS NOT NULL"),
    "postgresql_where": text("merged_into IS NOT NULL"),
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    # DeclarativeBase types ``__table__`` as any FromClause (a class may be mapped to a subquery);
    # every model here is declared with ``__tablename__``, so it is a Table (insert, update,
    # delete and ``.indexes`` need one).
    __table__: ClassVar[Table]


class OutboxStatus(str, enum.Enum):
    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    DONE = "done"
    FAILED = "failed"  # record-level error; retried on later runs with backoff
    EXCLUDED = "excluded"  # cannot go there (reason in last_error), e.g. no phone for DM Champ
    SUPERSEDED = "superseded"  # a newer plan replaced this intent before it was sent
    # A create whose outcome cannot be checked (a lost response, and no key or marker the
    # platform can be searched by): never sent again blind; a human decides (reason in last_error).
    HELD = "held"
    # A failed write an operator gave up on (web page "skip"): never sent (reason in last_error).
    SKIPPED = "skipped"


class RemoteRecord(Base):
    """A record as last pulled from (or written to) one connection."""

    __tablename__ = "remote_records"
    __table_args__ = (
        UniqueConstraint("connection", "remote_id"),
        Index("ix_remote_records_person_id", "person_id"),
        # Only dirty rows: nearly empty between runs, so finding what changed is a look-up.
        Index("ix_remote_records_dirty", "dirty", **_ONLY_DIRTY),
        # Only merged rows: the records merged into a given one, without a connection scan.
        Index("ix_remote_records_merged_into", "connection", "merged_into", **_ONLY_MERGED),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    connection: Mapped[str] = mapped_column(String(64))
    remote_id: Mapped[str] = mapped_column(String(128))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)
    payload_hash: Mapped[str] = mapped_column(String(64))
    remote_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    merged_into: Mapped[str | None] = mapped_column(String(128))
    person_id: Mapped[int | None] = mapped_column(ForeignKey("persons.id", ondelete="SET NULL"))
    # Set when the payload changed (or the record is new) and matching/reconcile has not run.
    dirty: Mapped[bool] = mapped_column(Boolean, default=True)
    # Values that did not normalize, with reasons: [{"field", "kind", "reason"}].
    invalid: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType)
    # The id of the full scan that last saw this record (deletion detection).
    last_scan: Mapped[int | None] = mapped_column(Integer)


class IdentityKey(Base):
    """A normalized matching key of a record: (kind, value) → record."""

    __tablename__ = "identity_keys"
    __table_args__ = (
        Index("ix_identity_keys_kind_value", "kind", "value"),
        Index("ix_identity_keys_record_id", "record_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    record_id: Mapped[int] = mapped_column(ForeignKey("remote_records.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(64))  # email | phone | identity:<type>
    value: Mapped[str] = mapped_column(String(320))


class Person(Base):
    """The golden record: one human, with stable id across runs."""

    __tablename__ = "persons"
    # Only dirty persons: the ones waiting for reconcile, without scanning the table.
    __table_args__ = (Index("ix_persons_dirty", "dirty", **_ONLY_DIRTY),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    fields: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    version: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Set when this person was folded into another (a merge); kept so old ids resolve.
    merged_into: Mapped[int | None] = mapped_column(BigInteger)
    dirty: Mapped[bool] = mapped_column(Boolean, default=True)


class Snapshot(Base):
    """The canonical values last confirmed for a person on a connection (the archive)."""

    __tablename__ = "snapshots"

    person_id: Mapped[int] = mapped_column(ForeignKey("persons.id", ondelete="CASCADE"), primary_key=True)
    connection: Mapped[str] = mapped_column(String(64), primary_key=True)
    fields: Mapped[dict[str, Any]] = mapped_column(JSONType)
    hash: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Cursor(Base):
    """Per connection: the pull position and a resumable backfill checkpoint."""

    __tablename__ = "cursors"

    connection: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    checkpoint: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    full_scan_id: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Outbox(Base):
    """One planned remote write; the row (intent) is committed before the call is made."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_status_connection", "status", "connection"),
        Index("ix_outbox_person_id", "person_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[int | None] = mapped_column(BigInteger)
    connection: Mapped[str] = mapped_column(String(64))
    person_id: Mapped[int | None] = mapped_column(BigInteger)
    op: Mapped[str] = mapped_column(String(32))  # create|update|delete|merge|add_tags|remove_tags|exclude
    remote_id: Mapped[str | None] = mapped_column(String(128))  # target (None for create)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)  # raw platform payload
    fields: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)  # canonical values it confirms
    status: Mapped[str] = mapped_column(String(16), default=OutboxStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    result_remote_id: Mapped[str | None] = mapped_column(String(128))
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # What the write was planned against (migration 0004): the person's version once the plan
    # that queued it was saved, and the remote values (canonical JSON) of the fields it writes
    # as they stood then. A row whose person moved on, or whose target no longer holds its
    # base, is stale: superseded and re-planned, never sent.
    person_version: Mapped[int | None] = mapped_column(Integer)
    base: Mapped[dict[str, Any] | None] = mapped_column(JSONType)


class Conflict(Base):
    """A real conflict: competing values, their sources and times, the decision and the rule."""

    __tablename__ = "conflicts"
    __table_args__ = (Index("ix_conflicts_person_id", "person_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[int | None] = mapped_column(BigInteger)
    person_id: Mapped[int] = mapped_column(BigInteger)
    field: Mapped[str] = mapped_column(String(128))
    # [{"connection", "value", "updated_at"}]
    candidates: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    decision: Mapped[Any] = mapped_column(JSONType)
    rule: Mapped[str] = mapped_column(String(64))
    needs_review: Mapped[bool] = mapped_column(Boolean, default=False)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    resolved_by: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class MatchReview(Base):
    """A matching question kept for a person to answer: an ambiguous weak-key match or a
    duplicate on one platform."""

    __tablename__ = "match_reviews"
    __table_args__ = (UniqueConstraint("kind", "key"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32))  # ambiguous_match | duplicate
    key: Mapped[str] = mapped_column(String(400))  # what ties them: "phone:+1555..." / connection
    # [{"connection", "remote_id", "person_id"}]
    records: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    detail: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="open")  # open | resolved
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Quarantine(Base):
    """A payload that could not be staged (malformed), with its reason; nothing is dropped."""

    __tablename__ = "quarantine"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    connection: Mapped[str] = mapped_column(String(64))
    remote_id: Mapped[str | None] = mapped_column(String(128))
    raw: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class HeldDelete(Base):
    """A delete a full scan implied but the circuit breaker did not believe (too many records
    missing at once, or a scan that shares no id with the store's view): nothing is marked
    deleted or propagated until ``contactsync deletes approve`` (or ``reject`` drops it)."""

    __tablename__ = "held_deletes"
    __table_args__ = (UniqueConstraint("connection", "remote_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    connection: Mapped[str] = mapped_column(String(64))
    remote_id: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text)
    held_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class Run(Base):
    """Every cycle or backfill: start, end, status and counts (the canonical log line)."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    profile: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # cycle | backfill | plan
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(16), default="running")  # running|ok|partial|failed|interrupted
    counts: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    error: Mapped[str | None] = mapped_column(Text)


class MatchDecision(Base):
    """A person's answer to an ambiguous match (migration 0010): the weak key ``(kind, value)``
    either links every record holding it into one person (``link``: matching treats it as a
    strong key) or never joins anyone (``apart``: matching ignores it). ``applied_at`` is NULL
    until a committed match run has read the answer (migration 0012): until then the echo
    check leaves the dirty mark of a linked key's records alone."""

    __tablename__ = "match_decisions"
    __table_args__ = (UniqueConstraint("kind", "value"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(64))
    value: Mapped[str] = mapped_column(String(320))
    decision: Mapped[str] = mapped_column(String(16))  # link | apart
    decided_by: Mapped[str] = mapped_column(String(128))
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    review_id: Mapped[int | None] = mapped_column(BigId)
    applied_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class OAuthToken(Base):
    """A connection's OAuth tokens (GoHighLevel marketplace mode), encrypted at rest (Fernet, key
    from ``CONTACTSYNC_TOKEN_KEY``). ``version`` moves with every rotation; ``lease_owner`` /
    ``lease_until`` let one process at a time spend the refresh token (``sync.store.auth``)."""

    __tablename__ = "oauth_tokens"

    connection: Mapped[str] = mapped_column(String(64), primary_key=True)
    access_token: Mapped[str] = mapped_column(Text)  # Fernet ciphertext
    refresh_token: Mapped[str | None] = mapped_column(Text)  # Fernet ciphertext
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    user_type: Mapped[str] = mapped_column(String(16), default="Location")
    company_id: Mapped[str | None] = mapped_column(String(128))
    location_id: Mapped[str | None] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer, default=1)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ConnectionState(Base):
    """Why a connection is held back across runs: ``auth_state`` ``needs_reauth`` (its refresh
    token was refused) and a daily-quota pause until ``quota_paused_until``."""

    __tablename__ = "connection_states"

    connection: Mapped[str] = mapped_column(String(64), primary_key=True)
    auth_state: Mapped[str] = mapped_column(String(16), default="ok")  # ok | needs_reauth
    auth_reason: Mapped[str | None] = mapped_column(Text)
    quota_paused_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    quota_reason: Mapped[str | None] = mapped_column(Text)
    daily_limit: Mapped[int | None] = mapped_column(Integer)
    daily_remaining: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class WebhookEvent(Base):
    """A webhook delivery accepted by the listener (``sync.serve``), waiting for the daemon to
    re-read its contact. Kept after it is processed (``processed_at``) until it is older than
    the replay window, so a repeated ``webhookId`` is recognised; purged after."""

    __tablename__ = "webhook_inbox"
    __table_args__ = (
        UniqueConstraint("source", "webhook_id"),
        Index("ix_webhook_inbox_pending", "processed_at", "connection"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(32))  # the platform that sent it (gohighlevel)
    webhook_id: Mapped[str] = mapped_column(String(128))
    connection: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(64))
    remote_id: Mapped[str] = mapped_column(String(128))
    payload: Mapped[Any] = mapped_column(JSONType)
    event_at: Mapped[datetime] = mapped_column(UTCDateTime())
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ProbeFinding(Base):
    """What ``contactsync probe`` measured on one connection: the variant of one inferred
    behaviour (``connectors/<platform>/behaviours.py``), with its evidence. Handed to the
    connector as ``ConnectionSettings.behaviours``."""

    __tablename__ = "probe_findings"

    connection: Mapped[str] = mapped_column(String(64), primary_key=True)
    behaviour: Mapped[str] = mapped_column(String(128), primary_key=True)
    variant: Mapped[str] = mapped_column(String(64))
    evidence: Mapped[str] = mapped_column(Text)
    measured_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class UnwritableField(Base):
    """A canonical field a write to this connection did not hold (the platform ignored or
    changed it; write verification): read from the connection, never written to it again."""

    __tablename__ = "unwritable_fields"

    connection: Mapped[str] = mapped_column(String(64), primary_key=True)
    field: Mapped[str] = mapped_column(String(128), primary_key=True)
    evidence: Mapped[str] = mapped_column(Text)
    detected_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class RateWindow(Base):
    """The requests one process sent to a connection within its rate limit's window (wall-clock
    stamps, epoch seconds), so the next process to use the connection — a daemon started after
    a backfill or a probe — counts them in its own budget instead of starting from an empty
    window. One row per connection and process (``owner``)."""

    __tablename__ = "rate_windows"

    connection: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(128), primary_key=True)
    stamps: Mapped[list[float]] = mapped_column(JSONType)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
