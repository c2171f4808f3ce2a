"""Acquire: emulator wire format and connector behaviour, over in-process HTTP."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from connectors.acquire import AcquireConnector, AcquireEmulator
from connectors.base import ConfigurationError, NotFound, RecordError
from connectors.emulation import Clock, FaultConfig

from helpers import pull_all, request, run

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def make(emu: AcquireEmulator | None = None, **options: Any) -> tuple[AcquireEmulator, AcquireConnector]:
    emu = emu or AcquireEmulator(clock=Clock(T0))
    return emu, AcquireConnector(emu.connection_settings(options=options), emu.transport())


async def raw(emu: AcquireEmulator, method: str, path: str, *, key: str | None = None, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key or emu.credentials['api_key']}"}
    return await request(emu, method, path, headers=headers, **kw)


# ----------------------------------------------------------------- wire format


def test_list_envelope_relations_and_errors() -> None:
    emu = AcquireEmulator(clock=Clock(T0))
    emu.seed(3)

    async def go() -> None:
        r = await raw(emu, "GET", "/crm/objects/contact", params={"limit": 2, "page": 1, "relations": "fields,tags"})
        body = r.json()
        assert r.status_code == 200
        assert body["data"]["counts"] == {"filteredCount": 3}
        item = body["data"]["list"][0]
        assert item["id"] == 1 and item["archive"] == "no" and item["dateCreated"].endswith("Z")
        assert set(item["fields"]) >= {"name", "email", "phone"} and isinstance(item["tags"], list)
        # Without relations the related entities are not included.
        bare = (await raw(emu, "GET", "/crm/objects/contact")).json()["data"]["list"][0]
        assert "fields" not in bare and "tags" not in bare

        missing = await raw(emu, "GET", "/crm/objects/contact/999")
        assert missing.status_code == 400
        assert missing.json()["error"]["type"] == "ERROR_RECORD_NOT_FOUND"

        unauthorized = await raw(emu, "GET", "/crm/objects/contact", key="nope")
        assert unauthorized.status_code == 401
        assert unauthorized.json()["error"]["type"] == "ERROR_UNAUTHORIZED"

        bad = await raw(emu, "POST", "/crm/objects/contact", json={"fields": {"email": "not-an-email"}})
        assert bad.status_code == 400 and bad.json()["error"]["type"] == "ERROR_INVALID_INPUT"

        existing_email = emu.records()[0]["fields"]["email"]
        dup = await raw(emu, "POST", "/crm/objects/contact", json={"fields": {"email": existing_email.upper()}})
        assert dup.status_code == 400 and dup.json()["error"]["type"] == "ERROR_DUPLICATE_RECORD_FOUND"

        too_big = await raw(emu, "GET", "/crm/objects/contact", params={"limit": 101})
        assert too_big.status_code == 400

        created = (await raw(emu, "POST", "/crm/objects/contact", json={"name": "Zed", "email": "z@x.org"})).json()
        assert created["data"]["fields"]["name"] == "Zed" and created["data"]["dateUpdated"] is None
        deleted = await raw(emu, "DELETE", f"/crm/objects/contact/{created['data']['id']}")
        assert deleted.json() == {"data": {"deleted": 1}}

    run(go())


def test_credentials_are_checked() -> None:
    emu = AcquireEmulator()
    with pytest.raises(ConfigurationError):
        AcquireConnector(emu.connection_settings(credentials={}), emu.transport())
    conn = AcquireConnector(emu.connection_settings(credentials={"api_key": SecretStr("wrong-key")}), emu.transport())

    async def go() -> None:
        with pytest.raises(ConfigurationError) as info:
            await pull_all(conn)
        assert "wrong-key" not in str(info.value)
        await conn.aclose()

    run(go())


# ----------------------------------------------------------------- pull


@pytest.mark.parametrize("read_ahead_pages", [0, 1, 3])
def test_full_scan_pages_until_a_short_page(read_ahead_pages: int) -> None:
    emu, conn = make(page_size=5, read_ahead_pages=read_ahead_pages)
    ids = emu.seed(23)

    async def go() -> None:
        pages = await pull_all(conn)
        assert [len(p.records) for p in pages] == [5, 5, 5, 5, 3]
        assert [p.cursor.get("next_page") for p in pages[:-1]] == [2, 3, 4, 5]
        assert not any(p.complete for p in pages[:-1])
        assert pages[-1].complete and pages[-1].full_scan
        got = [r.remote_id for p in pages for r in p.records]
        assert got == ids and all(r.isdigit() for r in got)
        first = pages[0].records[0]
        assert first.payload["fields"]["email"] and first.updated_at is not None
        # Pages read ahead stop at the last page the count promises: no request is wasted, but
        # for page 0 (asked first while the numbering is unknown: acquire.paging_base).
        lists = [e for e in emu.request_log if e.method == "GET" and e.path == "/crm/objects/contact"]
        assert len(lists) == 6
        await conn.aclose()

    run(go())


@pytest.mark.parametrize("read_ahead_pages", [1, 3])
def test_exact_multiple_of_page_size_ends_with_an_empty_page(read_ahead_pages: int) -> None:
    emu, conn = make(page_size=5, read_ahead_pages=read_ahead_pages)
    emu.seed(10)

    async def go() -> None:
        pages = await pull_all(conn)
        assert [len(p.records) for p in pages] == [5, 5, 0]
        assert pages[-1].complete and pages[-1].full_scan
        await conn.aclose()

    run(go())


def test_resumed_scan_is_never_a_full_scan() -> None:
    emu, conn = make(page_size=5)
    ids = emu.seed(12)

    async def go() -> None:
        pages = await pull_all(conn, {"next_page": 2})
        got = [r.remote_id for p in pages for r in p.records]
        assert got == ids[5:]
        assert pages[-1].complete and not pages[-1].full_scan
        await conn.aclose()

    run(go())


def test_a_delete_during_the_scan_forbids_deletion_detection() -> None:
    emu, conn = make(page_size=5)
    ids = emu.seed(12)

    async def go() -> None:
        pages = []
        async for page in conn.pull(None):
            pages.append(page)
            if len(pages) == 1:
                # Offset paging shifts: the record that was 6th is now 5th and is skipped.
                emu.state.delete(int(ids[0]))
        assert pages[-1].complete and not pages[-1].full_scan
        await conn.aclose()

    run(go())


def test_null_date_updated_falls_back_to_date_created() -> None:
    emu, conn = make()

    async def go() -> None:
        result = await conn.create({"fields": {"name": "Ada", "email": "ada@example.org"}})
        assert result.created and result.record is not None
        assert result.record.payload["dateUpdated"] is None
        assert result.record.updated_at == T0
        await conn.aclose()

    run(go())


# ----------------------------------------------------------------- writes


def test_update_sends_only_fields_and_keeps_the_rest() -> None:
    emu, conn = make()
    [rid] = emu.seed(
        [
            {
                "first_name": "Ada",
                "last_name": "Lovelace",
                "email": "ada@example.org",
                "phone": "+14155552671",
                "tags": ["vip"],
                "custom": {"plan": "pro"},
            }
        ]
    )

    async def go() -> None:
        emu.clock.advance(60)
        result = await conn.update(rid, {"fields": {"city": "London"}, "tags": [{"name": "ignored"}]})
        stored = emu.contacts[rid]
        assert stored["fields"]["city"] == "London"
        assert stored["fields"]["plan"] == "pro" and stored["fields"]["email"] == "ada@example.org"
        assert [t["name"] for t in stored["tags"]] == ["vip"]  # tags are read-only
        assert result.record is not None and result.record.payload["fields"]["city"] == "London"
        assert result.record.updated_at == T0.replace(minute=1)
        with pytest.raises(NotFound):
            await conn.update("424242", {"fields": {"city": "X"}})
        with pytest.raises(NotFound):
            await conn.update("not-a-number", {"fields": {"city": "X"}})
        with pytest.raises(RecordError) as info:
            await conn.update(rid, {"fields": {"email": "broken"}})
        assert not isinstance(info.value, NotFound) and info.value.status == 400
        await conn.aclose()

    run(go())


def test_delete_and_get() -> None:
    emu, conn = make()
    ids = emu.seed(2)

    async def go() -> None:
        assert (await conn.get(ids[0])) is not None
        await conn.delete(ids[0])
        assert ids[0] not in emu.contacts and ids[0] in emu.deleted
        assert await conn.get(ids[0]) is None
        with pytest.raises(NotFound):
            await conn.delete(ids[0])
        await conn.aclose()

    run(go())


def test_lookup_by_email_and_by_differently_formatted_phone() -> None:
    emu, conn = make()
    ids = emu.seed(
        [
            {"first_name": "Ada", "email": "ada@example.org", "phone": "+14155552671"},
            {"first_name": "Grace", "email": "grace@example.org", "phone": "+12125550143"},
        ]
    )
    assert emu.contacts[ids[0]]["fields"]["phone"] == "+1 415 555 2671"

    async def go() -> None:
        assert await conn.lookup({"email": "ada@example.org"}) == ids[0]
        assert await conn.lookup({"phone": "+14155552671"}) == ids[0]
        assert await conn.lookup({"email": "nobody@example.org", "phone": "+12125550143"}) == ids[1]
        assert await conn.lookup({"email": "nobody@example.org"}) is None
        # A search hit whose keys differ is not a match (substring "ada@" is in no other email).
        assert await conn.lookup({"email": "da@example.org"}) is None
        await conn.aclose()

    run(go())


# ----------------------------------------------------------------- merge


def test_native_merge_keeps_both_sets_of_details_and_removes_the_sources() -> None:
    emu, conn = make()
    ids = emu.seed(
        [
            {"first_name": "Ada", "email": "ada@example.org", "phone": "+14155552671", "tags": ["vip"]},
            {
                "first_name": "Ada",
                "email": "ada@work.example",
                "phone": "+12125550143",
                "city": "London",
                "tags": ["lead"],
            },
            {"first_name": "Ada", "email": "ADA@example.org"},
        ]
    )
    emu.external_edit(ids[2], {"fields": {"phone": "(415) 555-2671"}})

    async def go() -> None:
        result = await conn.merge(ids[0], ids[1:])
        fields = result.record.payload["fields"]  # type: ignore[union-attr]
        assert fields["email"] == "ada@example.org" and fields["phone"] == "+1 415 555 2671"
        assert fields["otherEmails"] == ["ada@work.example"]  # the same address differently cased is not "differing"
        assert fields["otherPhones"] == ["+1 212 555 0143"]  # the same number differently spelled is not
        assert fields["city"] == "London"  # an empty detail filled from a source
        assert sorted(t["name"] for t in result.record.payload["tags"]) == ["lead", "vip"]  # type: ignore[union-attr]
        assert set(emu.contacts) == {ids[0]}
        assert await conn.get(ids[1]) is None
        # The merged-in email now finds the survivor.
        assert await conn.lookup({"email": "ada@work.example"}) == ids[0]
        with pytest.raises(NotFound):
            await conn.merge(ids[0], [ids[1]])
        await conn.aclose()

    run(go())


def test_merge_without_keeping_details_is_an_option() -> None:
    emu, conn = make(AcquireEmulator(state_options={"merge_keeps_details": False}))
    ids = emu.seed([{"email": "a@example.org"}, {"email": "b@example.org"}])

    async def go() -> None:
        result = await conn.merge(ids[0], [ids[1]])
        assert "otherEmails" not in result.record.payload["fields"]  # type: ignore[union-attr]
        await conn.aclose()

    run(go())


def test_merge_rejects_bad_input() -> None:
    emu = AcquireEmulator()
    ids = emu.seed(2)

    async def go() -> None:
        for body in ({"sourceIds": []}, {"sourceIds": [int(ids[0])]}, {"sourceIds": "x"}, {}):
            r = await raw(emu, "POST", f"/crm/contact/merge/{ids[0]}", json=body)
            assert r.status_code == 400 and r.json()["error"]["type"] == "ERROR_INVALID_INPUT"
        r = await raw(emu, "POST", f"/crm/contact/merge/{ids[0]}", json={"sourceIds": [999]})
        assert r.json()["error"]["type"] == "ERROR_RECORD_NOT_FOUND"
        assert set(emu.contacts) == set(ids)

    run(go())


# ----------------------------------------------------------------- faults


def test_pull_and_writes_survive_injected_faults() -> None:
    faults = FaultConfig(
        rate=0.3, seed=7, kinds=frozenset({"500", "502", "503", "drop", "429_retry_after", "repeat_page", "shift_page"})
    )
    emu = AcquireEmulator(clock=Clock(T0), faults=faults)
    ids = emu.seed(40)
    conn = AcquireConnector(
        emu.connection_settings(options={"page_size": 7, "backoff_base_s": 0.001, "backoff_cap_s": 0.01}),
        emu.transport(),
    )

    async def go() -> None:
        pages = await pull_all(conn)
        got = [r.remote_id for p in pages for r in p.records]
        assert sorted(got, key=int) == ids and len(got) == len(set(got))
        assert pages[-1].complete
        created = []
        for i in range(10):
            created.append(await conn.create({"fields": {"name": f"P{i}", "email": f"p{i}@example.org"}}))
        # Exactly one contact per create, even where a response was lost after the write.
        emails = [c["fields"]["email"] for c in emu.contacts.values()]
        assert sorted(e for e in emails if e.startswith("p")) == sorted(f"p{i}@example.org" for i in range(10))
        assert {c.remote_id for c in created} <= set(emu.contacts)
        result = await conn.merge(created[0].remote_id, [created[1].remote_id])
        assert result.record is not None and created[1].remote_id not in emu.contacts
        assert len(emu.fault_log) > 0
        await conn.aclose()

    run(go())


def test_unique_email_check_follows_every_change_of_an_email() -> None:
    # The unique-email rule answers from an index: an update, an outside edit, a merge and a
    # delete must each leave it matching the contacts as they are.
    emu = AcquireEmulator(clock=Clock(T0))
    seeded = emu.seed_raw({"fields": {"name": "Seed", "email": "Seed@Example.com"}})

    async def go() -> None:
        async def create(email: str) -> httpx.Response:
            return await raw(emu, "POST", "/crm/objects/contact", json={"name": "X", "email": email})

        def duplicate(r: httpx.Response) -> bool:
            return r.status_code == 400 and r.json()["error"]["type"] == "ERROR_DUPLICATE_RECORD_FOUND"

        assert duplicate(await create("SEED@example.com"))
        a = (await create("ada@example.com")).json()["data"]["id"]
        assert duplicate(await create("ADA@example.com"))

        await raw(emu, "PUT", f"/crm/objects/contact/{a}", json={"fields": {"email": "ada.l@example.com"}})
        assert duplicate(await create("ada.l@example.com"))
        b = (await create("ada@example.com")).json()["data"]["id"]  # the old address is free
        # Its own address is not a duplicate of itself.
        assert (
            await raw(emu, "PUT", f"/crm/objects/contact/{a}", json={"email": "ADA.L@example.com"})
        ).status_code == 200

        emu.external_edit(str(a), {"fields": {"email": "countess@example.com"}})
        assert duplicate(await create("countess@example.com"))
        assert (await create("ada.l@example.com")).status_code == 200

        merged = await raw(emu, "POST", f"/crm/contact/merge/{seeded}", json={"sourceIds": [a]})
        assert merged.status_code == 200  # the source is gone: its address is free
        assert (await create("countess@example.com")).status_code == 200
        assert duplicate(await create("seed@example.com"))  # the primary keeps its own

        assert (await raw(emu, "DELETE", f"/crm/objects/contact/{b}")).status_code == 200
        assert (await create("ada@example.com")).status_code == 200

    run(go())


def test_list_pages_follow_creates_and_deletes_in_id_order() -> None:
    # The id-ordered list is kept as contacts come and go (appended, or rebuilt after a removal).
    emu = AcquireEmulator(clock=Clock(T0))
    emu.seed(3)

    async def ids() -> list[int]:
        r = await raw(emu, "GET", "/crm/objects/contact", params={"limit": 100})
        return [c["id"] for c in r.json()["data"]["list"]]

    async def go() -> None:
        assert await ids() == [1, 2, 3]
        await raw(emu, "POST", "/crm/objects/contact", json={"name": "New", "email": "new@example.com"})
        assert await ids() == [1, 2, 3, 4]
        emu.seed_raw({"id": 10, "fields": {"name": "Ten"}})
        emu.seed_raw({"id": 7, "fields": {"name": "Seven"}})  # out of order
        assert await ids() == [1, 2, 3, 4, 7, 10]
        await raw(emu, "DELETE", "/crm/objects/contact/2")
        assert await ids() == [1, 3, 4, 7, 10]
        await raw(emu, "POST", "/crm/objects/contact", json={"name": "Next"})
        assert await ids() == [1, 3, 4, 7, 10, 11]

    run(go())
