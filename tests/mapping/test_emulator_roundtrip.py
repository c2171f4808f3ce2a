"""The shipped mappings against the platform emulators over HTTP (in-process ASGI): what a
mapping writes, the platform accepts, and reading it back gives the canonical values again
(``fit``); an update built by ``changes`` lands; re-reading after the echo plans nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from connectors.registry import connector_class, emulator_class
from sync.mapping import FieldMapping, load_mapping

CONTACT: dict[str, Any] = {
    "first_name": "Ada",
    "last_name": "King Lovelace",
    "emails": ("ada@example.com", "ada@analytical.org"),
    "phones": ("+14155552671", "+442079460958"),
    "company": "Analytical Engines",
    "address.line": "12 St James's Square",
    "address.city": "London",
    "address.state": "LDN",
    "address.postal_code": "10001",
    "address.country": "GB",
    "website": "https://ada.example.com",
    "timezone": "Europe/London",
    "tags": frozenset({"vip", "lead"}),
    "do_not_disturb": False,
    "identities": frozenset({"twitter:ada", "externalid:A-1"}),
    "custom.plan": "gold",
}
UPDATE: dict[str, Any] = {
    "last_name": "Byron",
    "emails": ("ada@analytical.org", "countess@example.com"),
    "phones": ("+14155552671",),
    "address.city": "Paris",
    "tags": frozenset({"vip", "customer"}),
    "identities": frozenset({"twitter:ada"}),
    "custom.plan": "platinum",
}


def _mapping(platform: str, emulator: Any) -> FieldMapping:
    # GoHighLevel reads custom fields back by id: the location's ids name the keys.
    ids = {v: k for k, v in getattr(emulator, "custom_field_ids", {}).items()}
    override = {"fields": {"custom.*": {"ids": ids}}} if platform == "gohighlevel" else None
    return load_mapping(platform, override=override)


def _wanted(mapping: FieldMapping, fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in mapping.fit(fields).items() if k in mapping.readable or k.startswith("custom.")}


async def _round_trip(platform: str) -> None:
    emulator = emulator_class(platform)(rate_limit=False)
    if platform == "gohighlevel":
        emulator.add_custom_field("plan")  # defined in the location (the connector writes known fields only)
    connector = connector_class(platform)(emulator.connection_settings(), transport=emulator.transport())
    try:
        mapping = _mapping(platform, emulator)
        created = await connector.create(mapping.write(CONTACT))
        record = await connector.get(created.remote_id)
        assert record is not None
        mapping = _mapping(platform, emulator)
        read = mapping.read(record.payload)
        assert read.issues == []
        wanted = _wanted(mapping, CONTACT)
        assert {k: read.fields.get(k) for k in wanted} == wanted

        changes = mapping.changes(UPDATE, record.payload)
        assert changes
        await connector.update(created.remote_id, changes)
        if mapping.endpoint_fields:
            add, remove = mapping.tag_changes(UPDATE, record.payload)
            await connector.add_tags(created.remote_id, add)
            await connector.remove_tags(created.remote_id, remove)
        record = await connector.get(created.remote_id)
        assert record is not None
        mapping = _mapping(platform, emulator)
        after = mapping.read(record.payload).fields
        expected = _wanted(mapping, {**CONTACT, **UPDATE})
        assert {k: after.get(k) for k in expected} == expected
        # The echo of our own write is no change: nothing to send.
        assert mapping.changes(after, record.payload) == {}
        assert mapping.changes(expected, record.payload) == {}
    finally:
        await connector.aclose()


@pytest.mark.parametrize("platform", ["acquire", "gohighlevel", "comm100"])
def test_mapping_round_trips_through_the_emulator(platform: str) -> None:
    asyncio.run(_round_trip(platform))


def test_dmchamp_create_carries_the_mapped_body() -> None:
    async def go() -> None:
        emulator = emulator_class("dmchamp")(rate_limit=False)
        connector = connector_class("dmchamp")(emulator.connection_settings(), transport=emulator.transport())
        mapping = load_mapping("dmchamp")
        try:
            payload = mapping.write({**CONTACT, "identities": frozenset({"externalid:A-1"})})
            assert payload["phoneNumber"] == "+14155552671" and payload["externalId"] == "A-1"
            created = await connector.create(payload)
            stored = emulator.contacts[created.remote_id]
            assert mapping.read(stored).fields["phones"] == ("+14155552671",)
            changes = mapping.changes({"first_name": "Bo", "phones": ("+15555550000",)}, payload)
            assert changes == {"firstName": "Bo"}
            await connector.update(created.remote_id, changes)
            assert emulator.contacts[created.remote_id]["firstName"] == "Bo"
        finally:
            await connector.aclose()

    asyncio.run(go())
