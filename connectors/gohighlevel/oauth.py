"""GoHighLevel OAuth (marketplace apps): the token endpoints, and what a connector in OAuth mode
asks of whoever holds its tokens.

* ``POST /oauth/token`` (form-encoded): ``grant_type`` ``authorization_code`` (with ``code``)
  or ``refresh_token`` (with ``refresh_token``), ``client_id``, ``client_secret``, ``user_type``
  ``Company`` or ``Location``. Access tokens live a day (``expires_in`` seconds), refresh tokens a
  year, and every refresh answers a *new* refresh token: the old one is spent.
* ``POST /oauth/locationToken`` (form-encoded ``companyId``, ``locationId``; an agency
  (Company) bearer token): a Location token for one of the agency's locations.
* ``GET /oauth/installedLocations`` (``companyId``, ``appId``, ``isInstalled=true``; an agency
  token): the locations the app is installed on.

A refused refresh token (``400 {"error": "invalid_grant"}``) raises :class:`InvalidGrant`; the
connection then needs a new authorization (:class:`NeedsReauth`). The calls here go straight
through their own ``httpx.AsyncClient`` (no rate budget: a connection refreshes once a day) and
never log a token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import httpx

from connectors.base import ConfigurationError, RemoteUnavailable

TOKEN = "/oauth/token"
LOCATION_TOKEN = "/oauth/locationToken"
INSTALLED_LOCATIONS = "/oauth/installedLocations"
USER_TYPES = ("Company", "Location")


class InvalidGrant(ConfigurationError):
    """The platform refused the code or refresh token (``invalid_grant``)."""


class NeedsReauth(ConfigurationError):
    """The connection has no usable tokens: ``contactsync connections authorize`` again."""


@dataclass(frozen=True)
class TokenSet:
    """What a token endpoint answered. The repr never shows a token."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False)
    expires_at: datetime
    user_type: str = "Location"
    company_id: str | None = None
    location_id: str | None = None
    scope: str | None = None


class TokenProvider(Protocol):
    """Whoever holds a connection's tokens (``sync.auth.StoreTokens``: the store)."""

    async def access_token(self) -> str:
        """A current access token, refreshed first when it expires soon."""
        ...

    async def renew(self, rejected: str) -> str:
        """The platform refused ``rejected`` (401): a new access token."""
        ...


@dataclass(frozen=True)
class OAuthApp:
    """A marketplace app's client credentials and the user type its tokens are for."""

    client_id: str = field(repr=False)
    client_secret: str = field(repr=False)
    user_type: str = "Location"
    company_id: str | None = None
    app_id: str | None = None
    agency: str | None = None  # a connection whose Company token derives this one's


def _token_set(body: Any, user_type: str, now: datetime) -> TokenSet:
    if not isinstance(body, dict):
        raise RemoteUnavailable("gohighlevel oauth: the token answer is not a JSON object")
    access = body.get("access_token") or body.get("accessToken")
    if not access:
        raise RemoteUnavailable("gohighlevel oauth: the token answer carries no access_token")
    expires_in = body.get("expires_in") or body.get("expiresIn") or 86399
    return TokenSet(
        access_token=str(access),
        refresh_token=body.get("refresh_token") or body.get("refreshToken"),
        expires_at=now + timedelta(seconds=float(expires_in)),
        user_type=str(body.get("userType") or user_type),
        company_id=body.get("companyId"),
        location_id=body.get("locationId"),
        scope=body.get("scope"),
    )


class OAuthClient:
    """The OAuth endpoints of one GoHighLevel base URL."""

    def __init__(
        self,
        base_url: str,
        app: OAuthApp,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        version: str = "2021-07-28",
        timeout_s: float = 30.0,
    ) -> None:
        self.app = app
        self.version = version
        self._client = httpx.AsyncClient(base_url=base_url, transport=transport, timeout=timeout_s)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def _send(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"Accept": "application/json", "Version": self.version, **kwargs.pop("headers", {})}
        try:
            response = await self._client.request(method, path, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise RemoteUnavailable(f"gohighlevel {method} {path}: {type(exc).__name__}") from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 400:
            error = body.get("error") if isinstance(body, dict) else None
            message = body.get("error_description") or body.get("message") if isinstance(body, dict) else None
            what = f"gohighlevel {method} {path}: HTTP {response.status_code}: {error or ''} {message or ''}".strip()
            if error == "invalid_grant":
                raise InvalidGrant(what)
            if response.status_code in (401, 403) or error in ("invalid_client", "unauthorized_client"):
                raise ConfigurationError(what)
            if response.status_code in (429,) or response.status_code >= 500:
                raise RemoteUnavailable(what)
            raise ConfigurationError(what)
        return body

    async def _token(self, form: dict[str, str], user_type: str) -> TokenSet:
        now = datetime.now(UTC)
        body = await self._send(
            "POST",
            TOKEN,
            data={"client_id": self.app.client_id, "client_secret": self.app.client_secret, **form},
        )
        return _token_set(body, user_type, now)

    async def exchange_code(self, code: str, *, redirect_uri: str | None = None) -> TokenSet:
        """The first tokens, from an authorization code (``grant_type=authorization_code``)."""
        form = {"grant_type": "authorization_code", "code": code, "user_type": self.app.user_type}
        if redirect_uri:
            form["redirect_uri"] = redirect_uri
        return await self._token(form, self.app.user_type)

    async def refresh(self, refresh_token: str, user_type: str | None = None) -> TokenSet:
        """Spend ``refresh_token`` for a new pair. Raises :class:`InvalidGrant` when refused."""
        user_type = user_type or self.app.user_type
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token, "user_type": user_type}
        return await self._token(form, user_type)

    async def location_token(self, agency_token: str, company_id: str, location_id: str) -> TokenSet:
        """A Location token derived from an agency (Company) token."""
        now = datetime.now(UTC)
        body = await self._send(
            "POST",
            LOCATION_TOKEN,
            data={"companyId": company_id, "locationId": location_id},
            headers={"Authorization": f"Bearer {agency_token}"},
        )
        tokens = _token_set(body, "Location", now)
        return TokenSet(
            **{**tokens.__dict__, "location_id": tokens.location_id or location_id, "company_id": company_id}
        )

    async def installed_locations(self, agency_token: str, company_id: str, app_id: str | None) -> list[dict[str, Any]]:
        """The locations the app is installed on: ``[{"_id", "name", "address", ...}]``."""
        params = {"companyId": company_id, "isInstalled": "true"}
        if app_id:
            params["appId"] = app_id
        body = await self._send(
            "GET", INSTALLED_LOCATIONS, params=params, headers={"Authorization": f"Bearer {agency_token}"}
        )
        locations = body.get("locations") if isinstance(body, dict) else None
        return [dict(loc) for loc in locations or [] if isinstance(loc, dict)]
