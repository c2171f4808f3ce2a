"""Issue 15 for GoHighLevel and DM Champ: every inferred behaviour is a switch of the emulator,
the connector is right under each variant (no duplicate, no lost value), and the probe reports
the variant the emulator runs. Real HTTP through httpx transports to the emulators."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

import httpx
import pytest

from connectors.base import RateLimit
from connectors.dmchamp import DmChampConnector, DmChampEmulator
from connectors.dmchamp import behaviours as dm_bh
from connectors.dmchamp.api import PLACEHOLDER_EMAIL
from connectors.dmchamp.probe import probe as dm_probe
from connectors.gohighlevel import CONNECTOR as GHL_CONNECTOR
from connectors.gohighlevel import EMULATOR as GHL_EMULATOR
from connectors.gohighlevel import behaviours as ghl_bh
from connectors.gohighlevel.emulator import GoHighLevelEmulator
from connectors.gohighlevel.probe import probe as ghl_probe
from connectors.probing import check_variants

from helpers import request, run

GHL_CASES = [(b.name, v) for b in ghl_bh.BEHAVIOURS for v in b.variants]
DM_CASES = [(b.name, v) for b in dm_bh.BEHAVIOURS for v in b.variants]


def ghl(variants: dict[str, str] | None = None, **kw: Any) -> GoHighLevelEmulator:
    return GHL_EMULATOR(rate_limit=False, search_delay_s=0.0, variants=variants or {}, **kw)


def ghl_connector(emu: GoHighLevelEmulator, behaviours: dict[str, str] | None = None, **options: Any) -> Any:
    settings = emu.connection_settings(options=options, behaviours=behaviours or {})
    return GHL_CONNECTOR(settings, emu.transport())


def dm(variants: dict[str, str] | None = None) -> DmChampEmulator:
    return DmChampEmulator(variants=variants or {}, rate_limit=False)


def dm_connector(emu: DmChampEmulator, behaviours: dict[str, str] | None = None) -> DmChampConnector:
    return DmChampConnector(emu.connection_settings(behaviours=behaviours or {}), emu.transport())


def test_variants_are_validated() -> None:
    with pytest.raises(ValueError, match="unknown behaviour"):
        ghl({"gohighlevel.nope": "x"})
    with pytest.raises(ValueError, match="unknown variant"):
        dm({dm_bh.DUPLICATE_CREATE: "418"})
    assert set(check_variants(ghl_bh.BEHAVIOURS, {})) == {b.name for b in ghl_bh.BEHAVIOURS}


# --------------------------------------------------------------------------- GoHighLevel


@pytest.mark.parametrize(("behaviour", "variant"), GHL_CASES)
def test_ghl_connector_is_right_under_every_variant(behaviour: str, variant: str) -> None:
    """Create (twice for one person: never two contacts), update, a full and an incremental
    pull, under one variant, with the connector configured as shipped (nothing measured)."""
    emu = ghl({behaviour: variant})
    other = emu.seed([{"first_name": "Other", "email": "other@example.test"}])[0]

    async def go() -> None:
        conn = ghl_connector(emu)
        first = await conn.create({"firstName": "Ada", "email": "ada@example.test", "phone": "+14155557181"})
        assert first.created
        # The same person again (a search that had not shown the first yet): adopted, not doubled.
        again = await conn.create({"firstName": "Ada", "email": "ada@example.test"})
        assert again.remote_id == first.remote_id and not again.created
        await conn.update(first.remote_id, {"lastName": "Lovelace"})
        pages = [p async for p in conn.pull(None)]
        ids = [r.remote_id for p in pages for r in p.records]
        assert sorted(ids) == sorted([first.remote_id, other])
        emu.clock.advance(5)
        await conn.update(first.remote_id, {"city": "London"})
        later = [p async for p in conn.pull(pages[-1].cursor)]
        assert first.remote_id in [r.remote_id for p in later for r in p.records]

    if behaviour == ghl_bh.DUPLICATE_CREATE and variant == "allowed":
        # A location keeping duplicates: only a measured behaviour makes the connector look first.
        async def measured() -> None:
            conn = ghl_connector(emu, {behaviour: variant})
            first = await conn.create({"firstName": "Ada", "email": "ada@example.test"})
            again = await conn.create({"firstName": "Ada", "email": "ada@example.test"})
            assert again.remote_id == first.remote_id and not again.created

        run(measured())
        assert [c["email"] for c in emu.records()].count("ada@example.test") == 1
        return
    run(go())
    ada = [c for c in emu.records() if c.get("email") == "ada@example.test"]
    assert len(ada) == 1 and ada[0]["lastName"] == "Lovelace" and ada[0]["city"] == "London"
    assert ada[0]["phone"] == "+14155557181"


def test_ghl_version_variants_on_the_wire() -> None:
    for variant, ok in {
        "both": {"2021-07-28", "2021-04-15", "v3"},
        "2021-07-28": {"2021-07-28", "2021-04-15"},
        "v3": {"v3"},
    }.items():
        emu = ghl({ghl_bh.VERSION: variant})
        rid = emu.seed(1)[0]
        for version in ("2021-07-28", "2021-04-15", "v3"):
            hdrs = {"Authorization": f"Bearer {emu.credentials['token']}", "Version": version}
            status = run(request(emu, "GET", f"/contacts/{rid}", headers=hdrs)).status_code
            assert (status == 200) == (version in ok), (variant, version, status)


def test_ghl_search_count_and_date_filter_on_the_wire() -> None:
    hdrs = lambda e: {"Authorization": f"Bearer {e.credentials['token']}", "Version": "2021-07-28"}  # noqa: E731
    for variant in ("total", "count"):
        emu = ghl({ghl_bh.SEARCH_COUNT: variant})
        emu.seed(3)
        body = run(
            request(emu, "POST", "/contacts/search", json={"locationId": emu.location_id}, headers=hdrs(emu))
        ).json()
        assert body[variant] == 3 and ({"total", "count"} - {variant}).isdisjoint(body)
    for variant, good, bad in (
        ("iso", "2026-01-01T00:00:00.000Z", 1767225600000),
        ("epoch_ms", 1767225600000, "2026-01-01T00:00:00.000Z"),
    ):
        emu = ghl({ghl_bh.DATE_FILTER: variant})
        for value, status in ((good, 200), (bad, 422)):
            f = [{"field": "dateUpdated", "operator": "range", "value": {"gte": value}}]
            r = run(
                request(
                    emu,
                    "POST",
                    "/contacts/search",
                    json={"locationId": emu.location_id, "filters": f},
                    headers=hdrs(emu),
                )
            )
            assert r.status_code == status, (variant, value, r.text)


def test_ghl_429_sends_each_rate_limit_header_once() -> None:
    emu = GHL_EMULATOR(rate_limit=RateLimit(1, 60.0))
    rid = emu.seed(1)[0]
    hdrs = {"Authorization": f"Bearer {emu.credentials['token']}", "Version": "2021-07-28"}

    async def go() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=emu.transport(), base_url=emu.base_url) as client:
            return [await client.get(f"/contacts/{rid}", headers=hdrs) for _ in range(2)]

    ok, limited = run(go())
    assert ok.status_code == 200 and limited.status_code == 429
    for response in (ok, limited):
        names = [k.lower() for k, _ in response.headers.multi_items() if k.lower().startswith("x-ratelimit")]
        assert sorted(names) == sorted(set(names)) and len(names) == 5, names


def test_ghl_custom_fields_are_discovered_and_never_written_as_raw_ids() -> None:
    emu = ghl()
    plan_id = emu.add_custom_field("plan", "Plan")
    rid = emu.insert_person({"first_name": "Ada", "email": "ada@example.test", "custom": {"plan": "pro"}})
    assert emu.contacts[rid]["customFields"] == [{"id": plan_id, "value": "pro"}]

    async def go() -> None:
        conn = ghl_connector(emu)  # no custom_field_ids configured: discovered from the location
        record = await conn.get(rid)
        assert record is not None
        assert record.payload["customFields"] == [{"id": plan_id, "value": "pro", "key": "plan"}]
        # Named by key, by fieldKey or by name: the location's id is sent.
        for key in ("plan", "contact.plan", "Plan"):
            await conn.update(rid, {"customFields": [{"key": key, "field_value": f"v-{key}"}]})
            assert emu.contacts[rid]["customFields"] == [{"id": plan_id, "value": f"v-{key}"}]
        # A raw id of another location (looks like one, resolves to nothing) is never sent.
        before = dict(emu.custom_field_ids)
        await conn.update(rid, {"customFields": [{"key": "nGisiWgNZqITZMjtgUeR", "field_value": "x"}]})
        assert emu.custom_field_ids == before
        assert "nGisiWgNZqITZMjtgUeR" in conn.unresolved_custom_fields

    run(go())


# --------------------------------------------------------------------------- DM Champ


@pytest.mark.parametrize(("behaviour", "variant"), DM_CASES)
def test_dmchamp_connector_never_duplicates_under_any_variant(behaviour: str, variant: str) -> None:
    """A number already on the account, typed in the DM Champ UI without its "+": the connector's
    create adopts it (both spellings looked up), and a second create of the same person too."""
    emu = dm({behaviour: variant})
    existing = emu.seed_raw({"phoneNumber": "14155557181", "firstName": "Ada", "lastName": "Unknown"})

    async def go() -> None:
        conn = dm_connector(emu)
        first = await conn.create({"phoneNumber": "+14155557181", "firstName": "Ada", "lastName": "Lovelace"})
        assert first.remote_id == existing and not first.created
        fresh = await conn.create({"phoneNumber": "+14155550199", "firstName": "Bo"})
        assert fresh.created
        again = await conn.create({"phoneNumber": "+14155550199", "firstName": "Bo", "lastName": "B"})
        assert again.remote_id == fresh.remote_id and not again.created
        assert await conn.lookup({"phone": "+14155557181"}) == existing
        if variant == "placeholder":
            # The placeholder a create may be given is never a key to find someone by.
            assert await conn.lookup({"email": PLACEHOLDER_EMAIL}) is None

    run(go())
    phones = sorted(c["phoneNumber"].lstrip("+") for c in emu.records())
    assert phones == ["14155550199", "14155557181"]
    assert emu.contacts[existing]["lastName"] == "Lovelace"


def test_dmchamp_duplicate_answers_on_the_wire() -> None:
    for variant, status in (("409", 409), ("400", 400), ("200_existing", 200)):
        emu = dm({dm_bh.DUPLICATE_CREATE: variant})
        emu.seed_raw({"phoneNumber": "+14155557181"})
        r = run(
            request(
                emu,
                "POST",
                "/contacts",
                params={"apiKey": emu.credentials["api_key"]},
                json={"phoneNumber": "+14155557181"},
            )
        )
        assert r.status_code == status and "already exists" in r.text.lower(), (variant, r.text)


# --------------------------------------------------------------------------- probes


@pytest.mark.parametrize(("behaviour", "variant"), GHL_CASES)
def test_ghl_probe_reports_the_variant_the_emulator_runs(behaviour: str, variant: str) -> None:
    emu = ghl({behaviour: variant})
    others = emu.seed(3)
    untouched = {rid: dict(emu.contacts[rid]) for rid in others}
    marker = secrets.token_hex(4)

    async def go() -> dict[str, str]:
        conn = ghl_connector(emu)
        findings = await ghl_probe(conn, marker=marker)
        assert all(f.evidence for f in findings)
        return {f.behaviour: f.variant for f in findings}

    found = run(go())
    assert found == emu.variants, (found, emu.variants)
    # Cleaned up; nobody else touched.
    assert dict(emu.contacts) == untouched
    assert all(marker in str(c.get("lastName")) for c in emu.deleted.values())


@pytest.mark.parametrize(("behaviour", "variant"), DM_CASES)
def test_dmchamp_probe_reports_the_variant_the_emulator_runs(behaviour: str, variant: str) -> None:
    emu = dm({behaviour: variant})
    emu.seed_raw({"phoneNumber": "+14155557181", "firstName": "Ada"})
    untouched = {rid: dict(c) for rid, c in emu.contacts.items()}
    marker = secrets.token_hex(4)

    async def go() -> dict[str, str]:
        findings = await dm_probe(dm_connector(emu), marker=marker)
        # DM Champ cannot delete: every finding says what is left.
        assert all("left on the account" in f.evidence for f in findings)
        return {f.behaviour: f.variant for f in findings}

    assert run(go()) == emu.variants
    left = {rid: c for rid, c in emu.contacts.items() if rid not in untouched}
    assert len(left) == 1 and next(iter(left.values()))["lastName"] == marker
    assert all(emu.contacts[rid] == c for rid, c in untouched.items())


def test_measured_behaviours_are_used() -> None:
    """A measured Version and date format are sent from the first request."""
    emu = ghl({ghl_bh.VERSION: "v3", ghl_bh.DATE_FILTER: "epoch_ms"})
    emu.seed(2)

    async def go() -> None:
        conn = ghl_connector(emu, {ghl_bh.VERSION: "v3", ghl_bh.DATE_FILTER: "epoch_ms"})
        assert conn.version == "v3"
        pages = [p async for p in conn.pull({"date_updated": (emu.clock.now() - timedelta(days=1)).isoformat()})]
        assert sum(len(p.records) for p in pages) == 2

    run(go())
    assert emu.count_status(400) == 0 and emu.count_status(422) == 0
