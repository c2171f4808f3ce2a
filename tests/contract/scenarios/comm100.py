"""Comm100 contract data: emails and extra phones are contact identities; ``name`` is required
on every write (the connector reads it when an update lacks it)."""

from __future__ import annotations

from typing import Any

from connectors.base import PullMode

from . import JSON, Scenario, subset_of


def _identity(kind: str, value: str) -> JSON:
    return {"contactIdentityType": kind, "value": value}


def _keys(payload: JSON) -> dict[str, str]:
    keys = {"email": "", "phone": ""}
    for ident in payload.get("contactIdentities", []):
        kind = "email" if ident["contactIdentityType"] == "Email" else "phone"
        keys[kind] = keys[kind] or ident["value"]
    return keys


def _applied(record: JSON, changes: JSON) -> bool:
    """Profile keys by value; identities by (type, value), ignoring server-assigned ids."""
    profile = {k: v for k, v in changes.items() if k != "contactIdentities"}
    if not subset_of(profile, record):
        return False
    if "contactIdentities" not in changes:
        return True

    def pairs(items: Any) -> set[tuple[str, str]]:
        return {(i["contactIdentityType"].lower(), i["value"].lower()) for i in items or []}

    return pairs(changes["contactIdentities"]) <= pairs(record.get("contactIdentities"))


def _stored(changes: JSON, variants: dict[str, str]) -> JSON:
    """Under comm100.undocumented_fields=ignored only the documented body keys are stored."""
    if variants.get("comm100.undocumented_fields") != "ignored":
        return changes
    return {k: v for k, v in changes.items() if k in ("name", "firstName", "lastName", "contactIdentities")}


SCENARIO = Scenario(
    platform="comm100",
    settings_options={"page_size": 5, "overlap_seconds": 1.0},
    expected={
        "pull_mode": PullMode.SORTED_SCAN,
        "can_merge": False,
        "can_delete": True,
        "deletes_detectable": True,
        "lookup_keys": ("email", "phone"),
    },
    creates=[
        {
            "name": "Ada Lovelace",
            "firstName": "Ada",
            "lastName": "Lovelace",
            "phone": "+14155552671",
            "contactIdentities": [_identity("Email", "ada@example.org"), _identity("SMS", "+14155552671")],
        },
        {
            "name": "Grace Hopper",
            "firstName": "Grace",
            "lastName": "Hopper",
            "contactIdentities": [_identity("Email", "grace@example.org"), _identity("SMS", "+12125550143")],
        },
        {
            "name": "Alan Turing",
            "firstName": "Alan",
            "lastName": "Turing",
            "city": "Wilmslow",
            "contactIdentities": [_identity("Email", "alan@example.org")],
        },
    ],
    keys_of_create=_keys,
    update={"company": "Analytical Engines", "city": "London"},
    edit={"firstName": "Edited"},
    applied=_applied,
    stored=_stored,
)
