"""The four-platform fleet that the end-to-end and crash tests and ``bench/cycle.py`` sync: one
emulator per platform under its connection name, people typed the way each platform's users
type them, outside edits of a last name, and a configuration file for the fleet.

Emulator plumbing, like :mod:`connectors.loopback`: it imports no engine module (the caller
loads the configuration file it writes)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from connectors.emulation import Emulator
from connectors.loopback import emulator_config

# Connection name -> platform.
CONNECTIONS = {"acquire": "acquire", "dmchamp": "dmchamp", "ghl": "gohighlevel", "comm100": "comm100"}


def typed_for(name: str, person: dict[str, Any]) -> dict[str, Any]:
    """The same person as the users of connection ``name`` type them (email case, phone format)."""
    p = dict(person)
    n = p["phone"][-10:]
    if name == "acquire":
        p["email"] = p["email"].capitalize()
        p["phone"] = f"({n[:3]}) {n[3:6]}-{n[6:]}"
    elif name == "comm100":
        p["email"] = p["email"].upper()
        p["phone"] = f"{n[:3]}-{n[3:6]}-{n[6:]}"
    return p


def last_name_edit(name: str, first: str, last: str) -> dict[str, Any]:
    """Raw changes that set a contact's last name on connection ``name`` (Acquire holds one
    full name; Comm100 keeps its full name beside the parts)."""
    if name == "acquire":
        return {"fields": {"name": f"{first} {last}"}}
    if name == "comm100":
        return {"lastName": last, "name": f"{first} {last}"}
    return {"lastName": last}


def write_config(
    emulators: Mapping[str, Emulator],
    urls: Mapping[str, str],
    store_url: str,
    directory: Path,
    *,
    file_name: str = "contactsync.yaml",
    **kwargs: Any,
) -> Path:
    """Write the configuration for ``emulators`` served at ``urls`` (see
    :func:`connectors.loopback.emulator_config`, which takes ``kwargs``) to ``directory``, its
    secrets beside it; the file's path."""
    cfg = emulator_config(emulators, urls, store_url, secrets_dir=directory / "secrets", **kwargs)
    path = directory / file_name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path
