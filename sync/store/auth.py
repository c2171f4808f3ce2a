"""OAuth tokens and connection states: ``store.auth``.

**Tokens** (GoHighLevel marketplace mode) live in ``oauth_tokens``, encrypted at rest with
Fernet under the key in the environment variable ``CONTACTSYNC_TOKEN_KEY`` (refused without it:
:class:`TokenKeyMissing`). Nothing here logs a token; :class:`StoredTokens` hides them in its repr.

**Rotation** spends a refresh token once, whatever the number of processes:
:meth:`ConnectionAuth.begin_refresh` returns a :class:`RefreshHandle` holding the connection's
refresh right, with the tokens re-read under it (another process may have rotated them while
this one waited: then there is nothing to spend). ``handle.commit(new)`` stores the new pair and
releases it. On PostgreSQL the right is a row lock (``SELECT ... FOR UPDATE`` in a transaction of
its own, committed with the new tokens); on SQLite a lease taken by a compare-and-swap
``UPDATE`` (the lease expires, so a process that died holding it does not block for ever) and
given back by a compare-and-swap on the lease owner and version.

**States** (``connection_states``): ``needs_reauth`` (a refresh token refused with
``invalid_grant``; cleared when new tokens are stored by ``authorize``) and a daily-quota pause
until a time. :meth:`ConnectionAuth.blocked` says which connections a cycle must leave alone.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, insert, select, text, update

from sync.store.models import ConnectionState, OAuthToken, utcnow

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.orm import Session

    from sync.store.db import Sessions

TOKEN_KEY_ENV = "CONTACTSYNC_TOKEN_KEY"
NEEDS_REAUTH = "needs_reauth"


class TokenKeyMissing(RuntimeError):
    """No (valid) Fernet key in ``CONTACTSYNC_TOKEN_KEY``: tokens are never stored in clear."""


class RefreshBusy(RuntimeError):
    """Another process held the refresh right longer than we were willing to wait."""


class LostLease(RuntimeError):
    """The refresh lease expired and another process took it before we stored the new tokens."""


def _fernet() -> Any:
    from cryptography.fernet import Fernet

    key = os.environ.get(TOKEN_KEY_ENV, "").strip()
    if not key:
        raise TokenKeyMissing(
            f"{TOKEN_KEY_ENV} is not set: OAuth tokens are stored encrypted and need a Fernet key. "
            "Generate one with: python -c 'from cryptography.fernet import Fernet; "
            f"print(Fernet.generate_key().decode())' and export it as {TOKEN_KEY_ENV}"
        )
    try:
        return Fernet(key.encode())
    except (ValueError, TypeError):
        raise TokenKeyMissing(f"{TOKEN_KEY_ENV} is not a Fernet key (32 url-safe base64-encoded bytes)") from None


def _encrypt(value: str | None) -> str | None:
    return None if value is None else _fernet().encrypt(value.encode()).decode()


def _decrypt(value: str | None) -> str | None:
    from cryptography.fernet import InvalidToken

    if value is None:
        return None
    try:
        return str(_fernet().decrypt(value.encode()).decode())
    except InvalidToken:
        raise TokenKeyMissing(
            f"the stored OAuth tokens do not decrypt with the key in {TOKEN_KEY_ENV} (was the key changed?); "
            "run `contactsync connections authorize` again"
        ) from None


@dataclass(frozen=True)
class StoredTokens:
    """A connection's tokens as stored (decrypted). The repr never shows a token."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expires_at: datetime
    user_type: str = "Location"
    company_id: str | None = None
    location_id: str | None = None
    version: int = 0

    def fresh(self, margin_s: float, now: datetime | None = None) -> bool:
        """Whether the access token is good for at least ``margin_s`` more seconds."""
        return self.expires_at - timedelta(seconds=margin_s) > (now or datetime.now(UTC))


@dataclass(frozen=True)
class ConnectionStatus:
    """A connection's row of ``connection_states``."""

    connection: str
    auth_state: str
    auth_reason: str | None
    quota_paused_until: datetime | None
    quota_reason: str | None
    daily_limit: int | None
    daily_remaining: int | None


def _tokens_of(row: Any) -> StoredTokens:
    return StoredTokens(
        access_token=_decrypt(row.access_token) or "",
        refresh_token=_decrypt(row.refresh_token),
        expires_at=row.expires_at,
        user_type=row.user_type,
        company_id=row.company_id,
        location_id=row.location_id,
        version=row.version,
    )


def _values(tokens: StoredTokens) -> dict[str, Any]:
    return {
        "access_token": _encrypt(tokens.access_token),
        "refresh_token": _encrypt(tokens.refresh_token),
        "expires_at": tokens.expires_at,
        "user_type": tokens.user_type,
        "company_id": tokens.company_id,
        "location_id": tokens.location_id,
    }


class RefreshHandle:
    """The right to spend one connection's refresh token (see the module doc). ``tokens``:
    as stored when the right was taken. :meth:`commit` stores the rotated pair; :meth:`release`
    (idempotent) gives the right back without storing anything."""

    def __init__(self, auth: ConnectionAuth, connection: str, tokens: StoredTokens) -> None:
        self._auth = auth
        self.connection = connection
        self.tokens = tokens
        self.done = False

    def commit(self, new: StoredTokens) -> StoredTokens:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError


class _RowLockHandle(RefreshHandle):
    """PostgreSQL: the row stays locked (FOR UPDATE) in ``conn``'s open transaction."""

    def __init__(self, auth: ConnectionAuth, connection: str, tokens: StoredTokens, conn: Connection) -> None:
        super().__init__(auth, connection, tokens)
        self._conn = conn

    def commit(self, new: StoredTokens) -> StoredTokens:
        values = _values(new)
        self._conn.execute(
            update(OAuthToken)
            .where(OAuthToken.connection == self.connection)
            .values(**values, version=OAuthToken.version + 1, updated_at=utcnow())
        )
        self._conn.commit()
        self.done = True
        self._conn.close()
        return StoredTokens(**{**new.__dict__, "version": self.tokens.version + 1})

    def release(self) -> None:
        if not self.done:
            self.done = True
            try:
                self._conn.rollback()
            finally:
                self._conn.close()


class _LeaseHandle(RefreshHandle):
    """SQLite (and any store): a lease row taken and given back by compare-and-swap."""

    def __init__(self, auth: ConnectionAuth, connection: str, tokens: StoredTokens, owner: str) -> None:
        super().__init__(auth, connection, tokens)
        self._owner = owner

    def commit(self, new: StoredTokens) -> StoredTokens:
        with self._auth.session() as s:
            done = s.execute(
                update(OAuthToken)
                .where(
                    OAuthToken.connection == self.connection,
                    OAuthToken.lease_owner == self._owner,
                    OAuthToken.version == self.tokens.version,
                )
                .values(
                    **_values(new),
                    version=self.tokens.version + 1,
                    lease_owner=None,
                    lease_until=None,
                    updated_at=utcnow(),
                )
                .execution_options(synchronize_session=False)
            )
            if done.rowcount != 1:  # type: ignore[attr-defined]
                raise LostLease(f"{self.connection}: the refresh lease was lost before the new tokens were stored")
        self.done = True
        return StoredTokens(**{**new.__dict__, "version": self.tokens.version + 1})

    def release(self) -> None:
        if self.done:
            return
        self.done = True
        with self._auth.session() as s:
            s.execute(
                update(OAuthToken)
                .where(OAuthToken.connection == self.connection, OAuthToken.lease_owner == self._owner)
                .values(lease_owner=None, lease_until=None)
                .execution_options(synchronize_session=False)
            )


class ConnectionAuth:
    """The repository ``store.auth``: OAuth tokens and connection states."""

    def __init__(self, sessions: Sessions, engine: Engine) -> None:
        self._sessions = sessions
        self._engine = engine
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"

    def session(self) -> AbstractContextManager[Session]:
        return self._sessions.begin()

    # -- tokens

    def load(self, connection: str) -> StoredTokens | None:
        """The connection's tokens (decrypted), or None when none are stored."""
        with self.session() as s:
            row = s.execute(select(OAuthToken).where(OAuthToken.connection == connection)).scalar_one_or_none()
            return None if row is None else _tokens_of(row)

    def has_tokens(self, connection: str) -> bool:
        with self.session() as s:
            return (
                s.execute(select(OAuthToken.connection).where(OAuthToken.connection == connection)).first() is not None
            )

    def raw_row(self, connection: str) -> dict[str, Any] | None:
        """The stored row as it is in the database (ciphertext): for tests and diagnostics."""
        with self.session() as s:
            row = s.execute(select(OAuthToken.__table__).where(OAuthToken.connection == connection)).mappings().first()
            return dict(row) if row else None

    def save(self, connection: str, tokens: StoredTokens) -> StoredTokens:
        """Store a first (or replacement) pair, as ``authorize`` does, and clear
        ``needs_reauth``. Raises :class:`TokenKeyMissing` without a key."""
        values = _values(tokens)
        with self.session() as s:
            row = s.execute(select(OAuthToken).where(OAuthToken.connection == connection)).scalar_one_or_none()
            version = (row.version if row else 0) + 1
            if row is None:
                s.execute(
                    insert(OAuthToken).values(connection=connection, version=version, updated_at=utcnow(), **values)
                )
            else:
                s.execute(
                    update(OAuthToken)
                    .where(OAuthToken.connection == connection)
                    .values(**values, version=version, lease_owner=None, lease_until=None, updated_at=utcnow())
                    .execution_options(synchronize_session=False)
                )
            self._state(s, connection, auth_state="ok", auth_reason=None)
        return StoredTokens(**{**tokens.__dict__, "version": version})

    def forget(self, connection: str) -> None:
        with self.session() as s:
            s.execute(delete(OAuthToken).where(OAuthToken.connection == connection))

    def begin_refresh(self, connection: str, *, wait_s: float = 30.0, lease_s: float = 60.0) -> RefreshHandle:
        """Take the right to spend ``connection``'s refresh token (waiting up to ``wait_s`` for
        another process holding it); the handle's ``tokens`` are re-read under it. Raises
        KeyError when no tokens are stored, :class:`RefreshBusy` when the wait runs out."""
        _fernet()  # no key, no refresh (and nothing locked)
        if self._engine.dialect.name == "postgresql":
            conn = self._engine.connect()
            try:
                conn.execute(text("SELECT set_config('lock_timeout', :t, true)"), {"t": f"{int(wait_s * 1000)}ms"})
                row = conn.execute(
                    select(OAuthToken.__table__).where(OAuthToken.connection == connection).with_for_update()
                ).first()
            except Exception as exc:
                conn.rollback()
                conn.close()
                if "lock timeout" in str(exc).lower() or "LockNotAvailable" in type(getattr(exc, "orig", exc)).__name__:
                    raise RefreshBusy(f"{connection}: another process is refreshing its tokens") from None
                raise
            if row is None:
                conn.rollback()
                conn.close()
                raise KeyError(connection)
            return _RowLockHandle(self, connection, _tokens_of(row), conn)
        deadline = time.monotonic() + wait_s
        while True:
            now = utcnow()
            with self.session() as s:
                got = s.execute(
                    update(OAuthToken)
                    .where(
                        OAuthToken.connection == connection,
                        (OAuthToken.lease_until.is_(None)) | (OAuthToken.lease_until < now),
                    )
                    .values(lease_owner=self.owner, lease_until=now + timedelta(seconds=lease_s))
                    .execution_options(synchronize_session=False)
                ).rowcount  # type: ignore[attr-defined]
                if got == 1:
                    leased = s.execute(select(OAuthToken).where(OAuthToken.connection == connection)).scalar_one()
                    tokens = _tokens_of(leased)
                    return _LeaseHandle(self, connection, tokens, self.owner)
                exists = s.execute(select(OAuthToken.connection).where(OAuthToken.connection == connection)).first()
            if exists is None:
                raise KeyError(connection)
            if time.monotonic() >= deadline:
                raise RefreshBusy(f"{connection}: another process is refreshing its tokens")
            time.sleep(0.05)

    # -- states

    def _state(self, s: Session, connection: str, **values: Any) -> None:
        row = s.get(ConnectionState, connection)
        if row is None:
            s.add(ConnectionState(connection=connection, auth_state="ok", updated_at=utcnow()))
            s.flush()
        s.execute(
            update(ConnectionState)
            .where(ConnectionState.connection == connection)
            .values(**values, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )

    def mark_needs_reauth(self, connection: str, reason: str) -> None:
        """Put the connection in ``needs_reauth`` (its writes stop until ``authorize``)."""
        with self.session() as s:
            self._state(s, connection, auth_state=NEEDS_REAUTH, auth_reason=reason)

    def pause_quota(
        self, connection: str, until: datetime, reason: str, *, limit: int | None = None, remaining: int | None = None
    ) -> None:
        """Pause the connection until ``until`` (its daily quota is spent)."""
        with self.session() as s:
            self._state(
                s,
                connection,
                quota_paused_until=until,
                quota_reason=reason,
                daily_limit=limit,
                daily_remaining=remaining,
            )

    def note_quota(self, connection: str, *, limit: int | None, remaining: int | None) -> None:
        """Remember the last daily figures a connection's responses reported."""
        with self.session() as s:
            self._state(s, connection, daily_limit=limit, daily_remaining=remaining)

    def states(self, names: list[str] | None = None) -> dict[str, ConnectionStatus]:
        with self.session() as s:
            q = select(ConnectionState)
            if names is not None:
                q = q.where(ConnectionState.connection.in_(names))
            return {
                r.connection: ConnectionStatus(
                    r.connection,
                    r.auth_state,
                    r.auth_reason,
                    r.quota_paused_until,
                    r.quota_reason,
                    r.daily_limit,
                    r.daily_remaining,
                )
                for r in s.execute(q).scalars()
            }

    def blocked(self, names: list[str], now: datetime | None = None) -> dict[str, str]:
        """Connections a cycle must leave alone, with the reason: ``needs_reauth``, or a
        daily-quota pause not yet over."""
        now = now or utcnow()
        out: dict[str, str] = {}
        for name, st in self.states(names).items():
            if st.auth_state == NEEDS_REAUTH:
                out[name] = f"needs_reauth: {st.auth_reason or 'the platform refused its refresh token'}"
            elif st.quota_paused_until is not None and st.quota_paused_until > now:
                out[name] = f"daily quota: paused until {st.quota_paused_until.strftime('%Y-%m-%d %H:%M:%S')} UTC" + (
                    f" ({st.quota_reason})" if st.quota_reason else ""
                )
        return out
