"""The official GoHighLevel SDK (PyPI ``gohighlevel-api-client`` 3.x, import ``highlevel``), used
unchanged against the emulator over a loopback socket: only its base URL is pointed there (the
class attribute ``HighLevel.BASE_URL``, read when the client is built, as PLATFORMS.md says).
The SDK sends ``Version: v3`` on every call; the emulator must take it, as the connector's
2021-07-28 (variant ``both``), and answer what the SDK reads.

Then the same session under each ``gohighlevel.version`` variant: the SDK works where v3 is
taken and is refused (400) where only the dated version is."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from connectors.gohighlevel import EMULATOR
from connectors.gohighlevel import behaviours as bh
from connectors.loopback import LoopbackEmulators

highlevel = pytest.importorskip("highlevel")
from highlevel import HighLevel  # noqa: E402
from highlevel.error import GHLError  # noqa: E402


async def _session(ghl: Any, location_id: str) -> dict[str, Any]:
    created = await ghl.contacts.create_contact(
        {
            "locationId": location_id,
            "firstName": "Ada",
            "lastName": "Lovelace",
            "email": "ada@example.test",
            "phone": "+14155557181",
            "companyName": "Analytical Engines",
        }
    )
    contact_id = created["contact"]["id"]
    got = await ghl.contacts.get_contact(contact_id=contact_id)
    updated = await ghl.contacts.update_contact(contact_id, {"city": "London", "tags": ["vip"]})
    found = await ghl.contacts.search_contacts_advanced(
        {
            "locationId": location_id,
            "pageLimit": 10,
            "filters": [{"field": "email", "operator": "eq", "value": "ada@example.test"}],
        }
    )
    deleted = await ghl.contacts.delete_contact(contact_id=contact_id)
    return {"id": contact_id, "got": got, "updated": updated, "found": found, "deleted": deleted}


def _run_sdk(monkeypatch: pytest.MonkeyPatch, variant: str) -> tuple[Any, dict[str, Any] | BaseException]:
    with LoopbackEmulators(
        {"ghl": lambda url: EMULATOR(base_url=url, search_delay_s=0.0, variants={bh.VERSION: variant})}
    ) as served:
        emulator = served.emulators["ghl"]
        monkeypatch.setattr(HighLevel, "BASE_URL", served.urls["ghl"])
        ghl = HighLevel(private_integration_token=emulator.credentials["token"])

        async def go() -> dict[str, Any]:
            try:
                return await _session(ghl, emulator.location_id)  # type: ignore[attr-defined]
            finally:
                await ghl.http_client.aclose()

        try:
            result: dict[str, Any] | BaseException = asyncio.run(go())
        except GHLError as exc:
            result = exc
        return emulator, result


@pytest.mark.parametrize("variant", ["both", "v3"])
def test_official_sdk_create_get_update_search_delete(monkeypatch: pytest.MonkeyPatch, variant: str) -> None:
    emulator, result = _run_sdk(monkeypatch, variant)
    assert isinstance(result, dict), result
    contact_id = result["id"]
    assert result["got"]["contact"]["email"] == "ada@example.test"
    assert result["got"]["contact"]["phone"] == "+14155557181"
    assert result["updated"]["contact"]["city"] == "London" and result["updated"]["contact"]["tags"] == ["vip"]
    # The answers read as the SDK's own v3 response models.
    from highlevel.services.contacts.models import contacts as models

    assert models.UpdateContactsSuccessfulResponseDtoV3.model_validate(result["updated"]).succeeded is True
    assert models.ContactsByIdSuccessfulResponseDtoV3.model_validate(result["got"]).contact["id"] == contact_id
    assert [c["id"] for c in result["found"]["contacts"]] == [contact_id]
    # The deleted contact is gone from the emulator's own view, and was there with every value.
    assert result["deleted"] == {"succeded": True}
    assert contact_id not in emulator.contacts
    gone = emulator.deleted[contact_id]
    assert (gone["companyName"], gone["city"]) == ("Analytical Engines", "London")
    # Every call carried the SDK's own Version header and was answered 2xx.
    statuses = [e.status for e in emulator.request_log]
    assert statuses and all(200 <= s < 300 for s in statuses), statuses


def test_official_sdk_is_refused_where_only_the_dated_version_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    emulator, result = _run_sdk(monkeypatch, "2021-07-28")
    assert isinstance(result, GHLError), result
    assert emulator.count_status(400) >= 1 and not emulator.contacts
