"""Who may see the page, and forms that cannot be forged.

* **Authentication.** The token is a secret from the config: ``http.auth_token`` when the
  listener's section has one, else ``web.auth_token``. When a token is configured every request
  must present it — ``Authorization: Bearer <token>``, or the session cookie the login form
  sets (an HMAC of the token, never the token itself). Without a token only loopback clients
  are served; anyone else gets 403 with what to configure (``contactsync serve`` refuses to
  listen off loopback without one).
* **CSRF.** Every form carries a hidden ``csrf`` field: an HMAC, under a key of this process,
  of a random id kept in a ``SameSite=Strict`` cookie. A POST whose field does not match its
  cookie is refused (403) before anything is read or written.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from sync.config import Config

SESSION_COOKIE = "contactsync_session"
CSRF_COOKIE = "contactsync_csrf"
CSRF_FIELD = "csrf"


def configured_token(config: Config) -> str | None:
    """The page's token: the listener's ``http.auth_token`` if that section exists and has
    one, else ``web.auth_token``."""
    http = getattr(config, "http", None)
    for section in (http, config.web):
        token = getattr(section, "auth_token", None) if section is not None else None
        if token is None:
            continue
        value = token.get_secret_value() if hasattr(token, "get_secret_value") else str(token)
        if value:
            return str(value)
    return None


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class Guard:
    """Authentication and CSRF checks for one app (one key per process)."""

    token: str | None
    key: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    @classmethod
    def from_config(cls, config: Config) -> Guard:
        return cls(configured_token(config))

    # -- authentication --------------------------------------------------------------------

    def session_value(self) -> str:
        assert self.token is not None
        return hmac.new(self.token.encode(), b"contactsync-web-session", hashlib.sha256).hexdigest()

    def token_ok(self, presented: str | None) -> bool:
        if self.token is None or not presented:
            return False
        return hmac.compare_digest(presented.encode(), self.token.encode())

    def authenticated(self, request: Request) -> bool:
        """Whether the request may see the page (see the module docstring)."""
        if self.token is None:
            return is_loopback(request.client.host if request.client else None)
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer ") and self.token_ok(auth[7:].strip()):
            return True
        cookie = request.cookies.get(SESSION_COOKIE)
        if not cookie:
            return False
        return hmac.compare_digest(cookie.encode(), self.session_value().encode())

    # -- CSRF ------------------------------------------------------------------------------

    def csrf_id(self, request: Request) -> tuple[str, bool]:
        """The request's CSRF id and whether it is new (then set it as a cookie)."""
        sid = request.cookies.get(CSRF_COOKIE)
        if sid and 16 <= len(sid) <= 128:
            return sid, False
        return secrets.token_urlsafe(24), True

    def csrf_token(self, sid: str) -> str:
        return hmac.new(self.key, sid.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, request: Request, form: Any) -> bool:
        sid = request.cookies.get(CSRF_COOKIE)
        sent = form.get(CSRF_FIELD) if form is not None else None
        if not sid or not isinstance(sent, str) or not sent:
            return False
        return hmac.compare_digest(sent.encode(), self.csrf_token(sid).encode())
