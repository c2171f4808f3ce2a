"""GoHighLevel contract data."""

from __future__ import annotations

from connectors.base import PullMode
from connectors.emulation import Emulator

from . import JSON, Scenario


def _lagged_edit(emulator: Emulator, remote_id: str, changes: JSON, delay: float) -> None:
    emulator.next_search_delay = delay  # type: ignore[attr-defined]
    emulator.external_edit(remote_id, changes)


def _keys(payload: JSON) -> dict[str, str]:
    return {"email": payload.get("email", ""), "phone": payload.get("phone", "")}


SCENARIO = Scenario(
    platform="gohighlevel",
    emulator_kwargs={"search_delay_s": 5.0},
    settings_options={"page_size": 7},
    expected={
        "pull_mode": PullMode.CHANGE_FEED,
        "can_merge": False,
        "can_upsert": True,
        "tags_via_endpoint": True,
        "deletes_detectable": False,
    },
    creates=[
        {
            "firstName": "Ada",
            "lastName": "Lovelace",
            "email": "ada@example.org",
            "phone": "+14155552671",
            "tags": ["vip"],
        },
        {"firstName": "Grace", "lastName": "Hopper", "email": "grace@example.org", "phone": "+12125550143"},
        {"firstName": "Alan", "lastName": "Turing", "email": "alan@example.org", "city": "Wilmslow"},
    ],
    keys_of_create=_keys,
    update={"lastName": "King", "city": "London"},
    edit={"firstName": "Edited"},
    tags_of=lambda record: set(record.get("tags", [])),
    lagged_edit=_lagged_edit,
)
