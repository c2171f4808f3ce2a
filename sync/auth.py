"""GoHighLevel OAuth tokens held in the store: the provider a connector in OAuth mode asks for
its access token (``connectors.gohighlevel.oauth.TokenProvider``).

* An access token good for more than ``margin_s`` is used as stored (cached per connector).
* Otherwise the provider takes the connection's refresh right (``store.auth.begin_refresh``:
  a row lock on PostgreSQL, a compare-and-swap lease on SQLite), re-reads the tokens under it
  — another process may have rotated them meanwhile, and then there is nothing to spend — and
  only then spends the refresh token and stores the new pair before giving the right back. Two
  processes therefore never spend one refresh token, and the new refresh token is never lost
  between the answer and the store (one transaction, or one compare-and-swap).
* A location connection with ``oauth.agency`` has no refresh token of its own: its token is
  derived again from the agency's (``POST /oauth/locationToken``), under its own right.
* ``invalid_grant`` puts the connection into ``needs_reauth`` (``store.auth``) and raises
  :class:`~connectors.gohighlevel.oauth.NeedsReauth`: its calls stop; the cycle leaves it alone
  until ``contactsync connections authorize`` stores new tokens.

Tokens are registered with the log redaction as they are read; they never appear in a message.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog

from connectors.base import ConfigurationError, RemoteUnavailable
from connectors.gohighlevel.oauth import InvalidGrant, NeedsReauth, OAuthApp, OAuthClient, TokenSet
from sync.logs import register_secret
from sync.store.auth import NEEDS_REAUTH, LostLease, RefreshBusy, StoredTokens, TokenKeyMissing

if TYPE_CHECKING:
    import httpx

    from sync.config import Config
    from sync.store import Store

log = structlog.get_logger("contactsync.auth")

#: Refresh an access token this long before it expires (the SDK uses 30 s; a day-long token
#: gains nothing from waiting to the last minute, and a cycle may run for minutes).
DEFAULT_MARGIN_S = 300.0


def stored(tokens: TokenSet) -> StoredTokens:
    return StoredTokens(
        access_token=tokens.access_token,
        refresh_token=tokens.refresh_token,
        expires_at=tokens.expires_at,
        user_type=tokens.user_type,
        company_id=tokens.company_id,
        location_id=tokens.location_id,
    )


def _remember(tokens: StoredTokens) -> None:
    register_secret(tokens.access_token)
    if tokens.refresh_token:
        register_secret(tokens.refresh_token)


class StoreTokens:
    """The tokens of one connection, from the store (see the module doc)."""

    def __init__(
        self,
        store: Store,
        connection: str,
        client: OAuthClient,
        *,
        agency: StoreTokens | None = None,
        location_id: str | None = None,
        margin_s: float = DEFAULT_MARGIN_S,
        wait_s: float = 30.0,
    ) -> None:
        self.store = store
        self.connection = connection
        self.client = client
        self.agency = agency
        self.location_id = location_id
        self.margin_s = margin_s
        self.wait_s = wait_s
        self._cached: StoredTokens | None = None
        self._lock = asyncio.Lock()
        self.refreshes = 0  # refresh tokens this provider spent (tests)

    async def aclose(self) -> None:
        await self.client.aclose()
        if self.agency is not None:
            await self.agency.aclose()

    async def access_token(self) -> str:
        cached = self._cached
        if cached is not None and cached.fresh(self.margin_s):
            return cached.access_token
        try:
            return await self._access_token()
        except TokenKeyMissing as exc:
            raise ConfigurationError(f"{self.connection}: {exc}") from None
        except (RefreshBusy, LostLease) as exc:  # try again later: the connection waits
            raise RemoteUnavailable(f"{self.connection}: {exc}") from None

    async def _access_token(self) -> str:
        async with self._lock:  # one refresh per process; the store's right covers the rest
            tokens = await asyncio.to_thread(self._load)
            if tokens is None or not tokens.fresh(self.margin_s):
                tokens = await self._refresh()
            self._cached = tokens
            return tokens.access_token

    async def renew(self, rejected: str) -> str:
        """The platform answered 401 to ``rejected``: a token other than it — the stored one if
        another process already replaced it, else a refreshed one whatever its expiry says."""
        try:
            return await self._renew(rejected)
        except TokenKeyMissing as exc:
            raise ConfigurationError(f"{self.connection}: {exc}") from None
        except (RefreshBusy, LostLease) as exc:
            raise RemoteUnavailable(f"{self.connection}: {exc}") from None

    async def _renew(self, rejected: str) -> str:
        async with self._lock:
            cached = self._cached
            if cached is not None and cached.access_token != rejected:
                return cached.access_token
            tokens = await asyncio.to_thread(self._load)
            if tokens is None or tokens.access_token == rejected:
                tokens = await self._refresh(rejected=rejected)
            self._cached = tokens
            return tokens.access_token

    def _load(self) -> StoredTokens | None:
        states = self.store.auth.states([self.connection])
        st = states.get(self.connection)
        if st is not None and st.auth_state == NEEDS_REAUTH:
            raise NeedsReauth(
                f"{self.connection}: needs_reauth ({st.auth_reason}); run contactsync connections authorize"
            )
        tokens = self.store.auth.load(self.connection)
        if tokens is not None:
            _remember(tokens)
        elif self.agency is None:
            raise NeedsReauth(
                f"{self.connection}: no OAuth tokens stored; run contactsync connections authorize "
                f"--connection {self.connection} --code CODE"
            )
        return tokens

    async def _refresh(self, rejected: str | None = None) -> StoredTokens:
        if self.agency is not None:
            return await self._derive()
        try:
            handle = await asyncio.to_thread(self.store.auth.begin_refresh, self.connection, wait_s=self.wait_s)
        except KeyError:
            raise NeedsReauth(
                f"{self.connection}: no OAuth tokens stored; run contactsync connections authorize"
            ) from None
        try:
            current = handle.tokens
            # Another process rotated them while we waited (or, after a 401, replaced the
            # rejected token): nothing to spend.
            if current.fresh(self.margin_s) and current.access_token != rejected:
                _remember(current)
                return current
            if not current.refresh_token:
                raise await self._reauth("no refresh token stored")
            try:
                new = await self.client.refresh(current.refresh_token, current.user_type)
            except InvalidGrant as exc:
                raise await self._reauth(f"refresh token refused: {exc}") from None
            self.refreshes += 1
            fresh = stored(new)
            fresh = StoredTokens(
                **{
                    **fresh.__dict__,
                    "company_id": fresh.company_id or current.company_id,
                    "location_id": fresh.location_id or current.location_id,
                }
            )
            _remember(fresh)
            saved = await asyncio.to_thread(handle.commit, fresh)
            log.info("oauth_refreshed", connection=self.connection, expires_at=str(saved.expires_at))
            return saved
        finally:
            await asyncio.to_thread(handle.release)

    async def _derive(self) -> StoredTokens:
        """A location token derived from the agency's, stored as this connection's."""
        assert self.agency is not None
        agency_token = await self.agency.access_token()
        agency = self.agency._cached
        company = (agency.company_id if agency else None) or self.client.app.company_id
        if not company or not self.location_id:
            raise NeedsReauth(f"{self.connection}: the agency token names no companyId (set oauth.company_id)")
        try:
            new = await self.client.location_token(agency_token, company, self.location_id)
        except InvalidGrant as exc:
            raise await self._reauth(f"location token refused: {exc}") from None
        fresh = stored(new)
        _remember(fresh)
        await asyncio.to_thread(self.store.auth.save, self.connection, fresh)
        return fresh

    async def _reauth(self, reason: str) -> NeedsReauth:
        await asyncio.to_thread(self.store.auth.mark_needs_reauth, self.connection, reason)
        log.warning("oauth_needs_reauth", connection=self.connection, reason=reason)
        return NeedsReauth(f"{self.connection}: needs_reauth ({reason}); run contactsync connections authorize")


def oauth_app(config: Config, name: str) -> OAuthApp | None:
    """The OAuth app of a GoHighLevel connection in OAuth mode (None: token mode). A location
    connection with ``agency`` borrows the agency connection's client credentials."""
    conn = config.connections[name]
    if conn.platform != "gohighlevel":
        return None
    creds = {
        k.removeprefix("oauth."): v.get_secret_value() for k, v in conn.credentials.items() if k.startswith("oauth.")
    }
    if not creds:
        return None
    agency = creds.get("agency")
    if agency and not creds.get("client_id"):
        parent = oauth_app(config, agency)
        if parent is not None:
            creds = {**{"client_id": parent.client_id, "client_secret": parent.client_secret}, **creds}
            creds.setdefault("company_id", parent.company_id or "")
    return OAuthApp(
        client_id=creds.get("client_id", ""),
        client_secret=creds.get("client_secret", ""),
        user_type=creds.get("user_type", "Location"),
        company_id=creds.get("company_id") or None,
        app_id=creds.get("app_id") or None,
        agency=agency or None,
    )


def oauth_client(
    config: Config, name: str, *, transport: httpx.AsyncBaseTransport | None = None, base_url: str | None = None
) -> OAuthClient:
    app = oauth_app(config, name)
    if app is None:
        raise ValueError(f"connection {name!r} is not in GoHighLevel OAuth mode")
    conn = config.connections[name]
    return OAuthClient(
        base_url or conn.base_url, app, transport=transport, version=config.options(name).get("version", "2021-07-28")
    )


def token_provider(
    config: Config,
    store: Store,
    name: str,
    *,
    transports: dict[str, Any] | None = None,
    base_urls: dict[str, str] | None = None,
    margin_s: float = DEFAULT_MARGIN_S,
) -> StoreTokens:
    """The store-backed token provider of connection ``name`` (and of its agency, if any)."""
    transports = transports or {}
    base_urls = base_urls or {}
    app = oauth_app(config, name)
    assert app is not None
    client = oauth_client(config, name, transport=transports.get(name), base_url=base_urls.get(name))
    agency = None
    if app.agency:
        if app.agency not in config.connections:
            raise NeedsReauth(f"{name}: oauth.agency names no connection ({app.agency!r})")
        agency = token_provider(
            config, store, app.agency, transports=transports, base_urls=base_urls, margin_s=margin_s
        )
    options = config.options(name)
    margin = float(options.get("refresh_margin_s", margin_s))
    return StoreTokens(store, name, client, agency=agency, location_id=options.get("location_id"), margin_s=margin)


def now() -> datetime:
    return datetime.now(UTC)
