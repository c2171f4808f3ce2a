"""Acquire contract data: raw payloads carry everything writable under ``fields``."""

from __future__ import annotations

from connectors.base import PullMode

from . import JSON, Scenario


def _keys(payload: JSON) -> dict[str, str]:
    fields = payload.get("fields", {})
    return {"email": fields.get("email", ""), "phone": fields.get("phone", "")}


def _stored(changes: JSON, variants: dict[str, str]) -> JSON:
    """Under acquire.custom_attributes=ignored a new custom attribute is not stored."""
    if variants.get("acquire.custom_attributes") != "ignored" or not isinstance(changes.get("fields"), dict):
        return changes
    standard = ("name", "email", "phone", "city", "state", "countryId")
    return {**changes, "fields": {k: v for k, v in changes["fields"].items() if k in standard}}


SCENARIO = Scenario(
    platform="acquire",
    settings_options={"page_size": 5},
    expected={
        "pull_mode": PullMode.FULL_SCAN,
        "can_merge": True,
        "can_delete": True,
        "can_upsert": False,
        "tags_via_endpoint": False,
        "deletes_detectable": True,
        "rate_limit": None,
    },
    creates=[
        {"fields": {"name": "Ada Lovelace", "email": "ada@example.org", "phone": "+14155552671", "plan": "pro"}},
        {"fields": {"name": "Grace Hopper", "email": "grace@example.org", "phone": "+12125550143"}},
        {"fields": {"name": "Alan Turing", "email": "alan@example.org", "city": "Wilmslow"}},
    ],
    keys_of_create=_keys,
    update={"fields": {"city": "London", "plan": "enterprise"}},
    edit={"fields": {"name": "Edited Name"}},
    stored=_stored,
)
