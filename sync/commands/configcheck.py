"""``contactsync config check --remote``: what only the platforms can tell about a config.

GoHighLevel: the location's custom fields (``GET /locations/{id}/customFields``), and every
custom field the config names (``options.custom_field_ids``, the mapping's ``ids``, ``custom.<key>``
in the mapping overrides or the conflict policy) that resolves to none of them. Such a key is
written by key (GoHighLevel makes a new field of it, or refuses it) and never as a raw id.
"""

from __future__ import annotations

import asyncio
from typing import Any

from connectors.registry import connector_class
from sync.config import Config


def _named_keys(cfg: Config, name: str) -> set[str]:
    conn = cfg.connections[name]
    keys = {str(k) for k in (conn.options.get("custom_field_ids") or {})}
    fields = (conn.mapping_overrides or {}).get("fields") or {}
    entry = fields.get("custom.*") if isinstance(fields, dict) else None
    if isinstance(entry, dict) and isinstance(entry.get("ids"), dict):
        keys |= {str(v) for v in entry["ids"].values()}
    names = [*fields] if isinstance(fields, dict) else []
    names += [*cfg.conflicts.fields]
    keys |= {n.removeprefix("custom.") for n in names if n.startswith("custom.") and n != "custom.*"}
    return keys


async def _check_one(cfg: Config, name: str) -> tuple[list[str], bool]:
    connector: Any = connector_class("gohighlevel")(cfg.connection_settings(name))
    try:
        found = await connector.discover_custom_fields()
        lines = [
            f"connections.{name}: custom fields of location {connector.location_id}: "
            + (", ".join(f"{k} ({v})" for k, v in sorted(found.items())) or "none")
        ]
        ok = True
        for key in sorted(_named_keys(cfg, name)):
            if connector.resolve_custom_field(key) is None:
                ok = False
                lines.append(
                    f"connections.{name}: custom field {key!r} named by the config is not a field of the location "
                    "(define it in GoHighLevel, or fix the name); it is never written as a raw id"
                )
        return lines, ok
    finally:
        await connector.aclose()


def remote_check(cfg: Config) -> tuple[list[str], bool]:
    """Lines to print and whether everything resolved."""
    lines: list[str] = []
    ok = True
    for name, conn in cfg.connections.items():
        if conn.platform != "gohighlevel":
            continue
        out, fine = asyncio.run(_check_one(cfg, name))
        lines += out
        ok = ok and fine
    return lines, ok
