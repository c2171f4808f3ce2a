"""DM Champ contract data: a lookup-only platform keyed by phone number (no read API, so the
probe checks existence through the contact's tags)."""

from __future__ import annotations

from typing import Any

from connectors.base import Connector, PullMode, RawRecord

from . import JSON, Scenario


def _keys(payload: JSON) -> dict[str, str]:
    return {"phone": payload.get("phoneNumber", ""), "email": payload.get("email", "")}


async def _probe(connector: Connector, record: RawRecord) -> Any:
    return await connector.exists(record.remote_id)  # type: ignore[attr-defined]


SCENARIO = Scenario(
    platform="dmchamp",
    expected={
        "pull_mode": PullMode.LOOKUP_ONLY,
        "can_delete": False,
        "can_merge": False,
        "can_upsert": True,
        "deletes_detectable": False,
        "required_for_create": ("phones",),
        "lookup_keys": ("phone", "email"),
    },
    creates=[
        {"phoneNumber": "+14155552671", "firstName": "Ada", "lastName": "Lovelace", "email": "ada@example.org"},
        {"phoneNumber": "+12125550143", "firstName": "Grace", "lastName": "Hopper", "email": "grace@example.org"},
        {"phoneNumber": "+447700900123", "firstName": "Alan", "lastName": "Turing", "do_not_disturb": True},
    ],
    keys_of_create=_keys,
    update={"lastName": "King", "do_not_disturb": True},
    edit={"firstName": "Edited"},
    probe=_probe,
)
