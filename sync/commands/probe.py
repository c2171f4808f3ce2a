"""``contactsync probe``: measure, on each connection's real account, which variant of each
inferred behaviour it runs (``connectors/<platform>/probe.py``), print the findings and record
them in the store; cycles then hand them to the connector (``ConnectionSettings.behaviours``).

Each platform's probe creates throwaway contacts marked in their name
(``contactsync-probe-<random>``), reads, edits and deletes them, and touches no other contact
(it only lists them). A platform without a probe module is skipped, saying so.
"""

from __future__ import annotations

import asyncio
import importlib
import secrets
from collections.abc import Sequence
from typing import Any

from rich.console import Console

from connectors.http import RateBudget
from connectors.probing import Finding
from connectors.registry import connector_class
from sync.commands.common import CommandError, open_store
from sync.config import Config
from sync.cycle import load_rate_window, rate_window_owner, save_rate_window
from sync.store import Store


def probe_module(platform: str) -> Any | None:
    """``connectors.<platform>.probe``, or None when the platform has none (yet)."""
    try:
        return importlib.import_module(f"connectors.{platform}.probe")
    except ModuleNotFoundError as exc:
        if exc.name != f"connectors.{platform}.probe":
            raise
        return None


async def probe_connection(
    config: Config, name: str, *, transport: Any = None, store: Store | None = None
) -> list[Finding] | None:
    """The findings of the probe of connection ``name`` (None: its platform has no probe).
    With ``store``, the probe's requests count in the connection's rate window as the other
    processes' do (``store.rate_windows``): the daemon started next knows them."""
    platform = config.connections[name].platform
    module = probe_module(platform)
    if module is None:
        return None
    connector = connector_class(platform)(config.connection_settings(name), transport)
    budget = getattr(getattr(connector, "http", None), "budget", None)
    owner = rate_window_owner()
    if store is not None and isinstance(budget, RateBudget):
        load_rate_window(store, name, budget, owner)
    try:
        marker = f"contactsync-probe-{secrets.token_hex(4)}"
        findings: list[Finding] = await module.probe(connector, marker=marker)
        return findings
    finally:
        await connector.aclose()
        if store is not None and isinstance(budget, RateBudget):
            save_rate_window(store, name, budget, owner)


def run_probe(
    config: Config,
    *,
    connections: Sequence[str] | None = None,
    yes: bool = False,
    console: Console | None = None,
    transports: dict[str, Any] | None = None,
) -> dict[str, list[Finding] | None]:
    """Probe the connections (all enabled ones by default), record and print the findings."""
    console = console or Console()
    if not yes:
        raise CommandError(
            "contactsync probe creates, edits and deletes throwaway contacts (named contactsync-probe-...) "
            "on every probed account; run it again with --yes to go ahead",
            2,
        )
    names = list(connections or config.enabled_connections())
    unknown = [n for n in names if n not in config.connections]
    if unknown:
        raise CommandError(f"unknown connection(s): {', '.join(unknown)}", 2)
    store = open_store(config)
    out: dict[str, list[Finding] | None] = {}
    failed: list[str] = []
    try:
        for name in names:
            platform = config.connections[name].platform
            try:
                findings = asyncio.run(
                    probe_connection(config, name, transport=(transports or {}).get(name), store=store)
                )
            except Exception as exc:  # noqa: BLE001 - one connection's failure is reported, the others go on
                console.print(f"{name} ({platform}): probe failed: {type(exc).__name__}: {exc}", highlight=False)
                failed.append(name)
                continue
            out[name] = findings
            if findings is None:
                console.print(f"{name} ({platform}): skipped, no probe for {platform} yet", highlight=False)
                continue
            store.behaviours.record_findings(name, [(f.behaviour, f.variant, f.evidence) for f in findings])
            console.print(f"{name} ({platform}): {len(findings)} behaviours measured and recorded", highlight=False)
            for f in findings:
                console.print(f"  {f.behaviour} = {f.variant}   ({f.evidence})", highlight=False)
    finally:
        store.close()
    if failed:
        raise CommandError(f"probe failed on {', '.join(failed)}", 1)
    return out
