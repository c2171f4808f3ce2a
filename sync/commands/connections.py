"""``contactsync connections authorize`` and ``discover``: GoHighLevel OAuth (marketplace apps).

* ``authorize --connection NAME --code CODE``: exchange an authorization code (what the
  marketplace's redirect delivers after an install) for the connection's first tokens, stored
  encrypted in the store (``CONTACTSYNC_TOKEN_KEY``); a connection in ``needs_reauth`` is
  cleared by it.
* ``discover``: with an agency (``oauth.user_type: Company``) connection's token, list the
  locations the app is installed on (``GET /oauth/installedLocations``) and print a connection
  entry for each one not configured yet (``oauth: {agency: NAME}``, ``options.location_id``):
  YAML to paste, or with ``--write`` added to the config file (the old file kept as ``.bak``).
"""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path
from typing import Any

import httpx
import yaml

from connectors.gohighlevel.oauth import OAuthClient
from sync.auth import oauth_app, oauth_client, stored, token_provider
from sync.commands.common import CommandError, check_connection, open_store
from sync.config import Config
from sync.store import Store


def _oauth_connection(config: Config, name: str) -> None:
    check_connection(config, name)
    if oauth_app(config, name) is None:
        raise CommandError(
            f"connection {name!r} is not a GoHighLevel connection in OAuth mode (credentials: oauth: {{client_id, client_secret}})",
            2,
        )


def authorize(
    config: Config,
    name: str,
    code: str,
    *,
    redirect_uri: str | None = None,
    store: Store | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> str:
    """Exchange ``code`` for connection ``name``'s first tokens and store them; a summary line
    (never a token)."""
    _oauth_connection(config, name)
    app = oauth_app(config, name)
    assert app is not None
    if app.agency and not app.client_id:
        raise CommandError(f"{name} takes its tokens from its agency connection {app.agency!r}: authorize that one", 2)
    own = store is None
    store = store or open_store(config)
    try:
        from sync.store.auth import _fernet

        try:
            _fernet()  # refuse before spending the code
        except Exception as exc:  # noqa: BLE001 - TokenKeyMissing: one clear message
            raise CommandError(str(exc), 2) from None

        async def exchange() -> Any:
            client = oauth_client(config, name, transport=transport)
            try:
                return await client.exchange_code(code, redirect_uri=redirect_uri)
            finally:
                await client.aclose()

        tokens = asyncio.run(exchange())
        saved = store.auth.save(name, stored(tokens))
    finally:
        if own:
            store.close()
    where = f" location {saved.location_id}" if saved.location_id else ""
    company = f" company {saved.company_id}" if saved.company_id else ""
    return f"{name}: authorized ({saved.user_type}{company}{where}); access token expires {saved.expires_at:%Y-%m-%d %H:%M:%S} UTC"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")[:50] or "location"


def discover(
    config: Config,
    agency: str | None = None,
    *,
    store: Store | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    """The installed locations of ``agency``'s app: ``(agency name, {connection name: entry}
    for those not configured yet, every location listed)``."""
    if agency is None:
        agencies = [
            n for n in config.connections if (app := oauth_app(config, n)) is not None and app.user_type == "Company"
        ]
        if len(agencies) != 1:
            raise CommandError(
                "name the agency connection with --connection (an oauth connection with user_type: Company); "
                f"found {', '.join(agencies) or 'none'}",
                2,
            )
        agency = agencies[0]
    _oauth_connection(config, agency)
    app = oauth_app(config, agency)
    assert app is not None
    if app.user_type != "Company":
        raise CommandError(f"{agency}: discover needs an agency connection (oauth.user_type: Company)", 2)
    own = store is None
    store = store or open_store(config)
    try:

        async def listing() -> list[dict[str, Any]]:
            provider = token_provider(config, store, agency, transports={agency: transport} if transport else None)
            client: OAuthClient = provider.client
            try:
                token = await provider.access_token()
                stored_tokens = store.auth.load(agency)
                company = (stored_tokens.company_id if stored_tokens else None) or app.company_id
                if not company:
                    raise CommandError(f"{agency}: no companyId known (set oauth.company_id)", 2)
                return await client.installed_locations(token, company, app.app_id)
            finally:
                await provider.aclose()

        locations = asyncio.run(listing())
    finally:
        if own:
            store.close()
    known = {
        str(config.options(n).get("location_id"))
        for n, c in config.connections.items()
        if c.platform == "gohighlevel" and config.options(n).get("location_id")
    }
    base = config.connections[agency]
    entries: dict[str, Any] = {}
    for loc in locations:
        lid = str(loc.get("_id") or loc.get("id") or "")
        if not lid or lid in known:
            continue
        name = f"ghl-{_slug(str(loc.get('name') or lid))}"
        while name in config.connections or name in entries:
            name = f"{name}-{lid[:6]}"
        entries[name] = {
            "platform": "gohighlevel",
            "base_url": base.base_url,
            "credentials": {"oauth": {"agency": agency}},
            "options": {"location_id": lid},
        }
    return agency, entries, locations


def render(entries: dict[str, Any], locations: list[dict[str, Any]]) -> str:
    """The YAML to add under ``connections:`` (with each location's name as a comment)."""
    names = {str(loc.get("_id") or loc.get("id")): loc.get("name") for loc in locations}
    out = []
    for name, entry in entries.items():
        lid = entry["options"]["location_id"]
        out.append(f"# {names.get(lid) or lid}")
        out.append(yaml.safe_dump({name: entry}, sort_keys=False).rstrip())
    return "\n".join(out)


def write(config_path: Path, entries: dict[str, Any]) -> Path:
    """Add ``entries`` to the config file's ``connections`` (the old file kept beside it as
    ``.bak``; the file is written again from its parsed YAML, so comments are not kept)."""
    doc = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    doc.setdefault("connections", {}).update(entries)
    backup = config_path.with_name(config_path.name + ".bak")
    shutil.copyfile(config_path, backup)
    config_path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return backup
