"""Comm100: emulator wire format and the sorted-scan connector, over in-process HTTP."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from connectors.base import ConfigurationError, NotFound, RateLimit, RecordError
from connectors.comm100 import Comm100Connector, Comm100Emulator
from connectors.comm100.state import ZERO_GUID
from connectors.emulation import Clock, FaultConfig

from helpers import pull_all, request, run

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TOKEN = "c100-token-xyz"


def emulator(**kw: Any) -> Comm100Emulator:
    kw.setdefault("clock", Clock(T0))
    kw.setdefault("rate_scale", 1000.0)
    return Comm100Emulator(**kw)


def connect(emu: Comm100Emulator, **kw: Any) -> Comm100Connector:
    return Comm100Connector(emu.connection_settings(**kw), emu.transport())


async def raw(emu: Comm100Emulator, method: str, path: str, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {emu.credentials['token']}", **kw.pop("headers", {})}
    return await request(emu, method, path, headers=headers, **kw)


def person(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "first_name": f"P{i}",
        "last_name": "Test",
        "email": f"p{i}@example.org",
        "phone": f"+1415555{i:04d}",
        **extra,
    }


def ident(kind: str, value: str) -> dict[str, str]:
    return {"contactIdentityType": kind, "value": value}


# ----------------------------------------------------------------- wire format


def test_list_envelope_paging_and_identities() -> None:
    emu = emulator()
    emu.seed([person(i) for i in range(5)])

    async def go() -> None:
        r = await raw(emu, "GET", "/global/contacts", params={"pageSize": 2, "include": "contactIdentity"})
        body = r.json()
        assert body["total"] == 5 and len(body["contacts"]) == 2 and body["previousPage"] is None
        assert body["nextPage"].startswith("http://") and "pageIndex=2" in body["nextPage"]
        contact = body["contacts"][0]
        assert contact["mergeToContactId"] == ZERO_GUID
        assert contact["contactIdentities"][0]["contactIdentityType"] == "Email"
        assert contact["contactIdentities"][0]["contactId"] == contact["id"]
        # Fractions of seven digits and a Z, as in the docs.
        assert contact["createTime"] == "2026-01-01T00:00:00.0000000Z"
        last = (await raw(emu, "GET", "/global/contacts", params={"pageSize": 2, "pageIndex": 3})).json()
        assert len(last["contacts"]) == 1 and last["nextPage"] is None and "pageIndex=2" in last["previousPage"]
        bare = (await raw(emu, "GET", "/global/contacts")).json()["contacts"][0]
        assert "contactIdentities" not in bare
        assert (await raw(emu, "GET", "/global/contacts", params={"pageSize": 101})).status_code == 400
        assert (await raw(emu, "GET", "/global/contacts", params={"sortBy": "email"})).status_code == 400

    run(go())


def test_search_parameters() -> None:
    emu = emulator()
    emu.seed_raw(
        {
            "name": "Vincent",
            "company": "Comm100",
            "alias": "Vinc",
            "contactIdentities": [ident("Twitter", "1361654692588728354"), ident("Email", "v@example.org")],
        }
    )
    emu.seed_raw({"name": "Other", "contactIdentities": [ident("SMS", "+14155552671")]})

    async def go() -> None:
        async def names(**params: Any) -> list[str]:
            r = await raw(emu, "GET", "/global/contacts", params=params)
            return [c["name"] for c in r.json()["contacts"]]

        assert await names(contactIdentityValue="V@EXAMPLE.ORG") == ["Vincent"]
        assert await names(contactIdentityValueSearch="555") == ["Other"]
        assert await names(contactKeywords="vinc") == ["Vincent"]
        assert await names(contactKeywords="comm1") == ["Vincent"]
        assert await names(contactIdentityType="twitter") == ["Vincent"]
        assert await names(contactIdentityType="SMS", contactIdentityValue="v@example.org") == []

    run(go())


def test_create_update_delete_status_codes_and_validation() -> None:
    emu = emulator()

    async def go() -> None:
        missing_name = await raw(emu, "POST", "/global/contacts", json={"firstName": "Ada"})
        assert missing_name.status_code == 400
        assert missing_name.json()["errors"][0]["field"] == "name"
        bad_type = await raw(
            emu, "POST", "/global/contacts", json={"name": "A", "contactIdentities": [ident("Fax", "1")]}
        )
        assert bad_type.status_code == 400
        created = await raw(
            emu,
            "POST",
            "/global/contacts",
            json={"name": "Ada", "firstName": "Ada", "contactIdentities": [ident("Email", "a@x.org")]},
        )
        assert created.status_code == 201
        cid = created.json()["id"]
        assert "contactIdentities" not in created.json()
        dup = await raw(
            emu, "POST", "/global/contacts", json={"name": "B", "contactIdentities": [ident("email", "A@x.org")]}
        )
        assert dup.status_code == 400  # an identity belongs to one contact
        no_name = await raw(emu, "PUT", f"/global/contacts/{cid}", json={"firstName": "Augusta"})
        assert no_name.status_code == 400
        put = await raw(emu, "PUT", f"/global/contacts/{cid}", json={"name": "Ada L", "company": "AE"})
        assert put.status_code == 200 and put.json()["firstName"] == "Ada"  # absent keys unchanged
        gone = await raw(emu, "DELETE", f"/global/contacts/{cid}")
        assert gone.status_code == 204 and gone.content == b""
        assert (await raw(emu, "GET", f"/global/contacts/{cid}")).status_code == 404
        assert (await raw(emu, "DELETE", f"/global/contacts/{cid}")).status_code == 404

    run(go())


def test_put_replaces_is_an_option() -> None:
    emu = emulator(state_options={"put_replaces": True})
    cid = emu.seed_raw({"name": "Ada", "firstName": "Ada", "company": "AE"})

    async def go() -> None:
        await raw(emu, "PUT", f"/global/contacts/{cid}", json={"name": "Ada"})
        assert emu.contacts[cid]["company"] is None and emu.contacts[cid]["firstName"] is None

    run(go())


# ----------------------------------------------------------------- auth


def test_bearer_and_basic_auth() -> None:
    emu = emulator(credentials={"token": TOKEN, "agent_email": "agent@example.org", "api_key": "k-123"}, site_id="2345")
    emu.seed(2)

    async def go() -> None:
        bearer = connect(emu, credentials={"token": SecretStr(TOKEN)})
        assert len([r for p in await pull_all(bearer) for r in p.records]) == 2
        basic = connect(emu, credentials={"agent_email": SecretStr("agent@example.org"), "api_key": SecretStr("k-123")})
        assert len([r for p in await pull_all(basic) for r in p.records]) == 2
        wrong_site = connect(
            emu,
            credentials={"agent_email": SecretStr("agent@example.org"), "api_key": SecretStr("k-123")},
            options={"site_id": "9"},
        )
        with pytest.raises(ConfigurationError) as info:
            await pull_all(wrong_site)
        assert "k-123" not in str(info.value)
        for c in (bearer, basic, wrong_site):
            await c.aclose()
        # Basic credentials without a site id are refused up front.
        with pytest.raises(ConfigurationError):
            Comm100Connector(
                emu.connection_settings(
                    credentials={"agent_email": SecretStr("a@b.org"), "api_key": SecretStr("k")},
                    options={"site_id": ""},
                )
            )
        with pytest.raises(ConfigurationError):
            Comm100Connector(emu.connection_settings(credentials={}))
        header = "Basic " + base64.b64encode(b"agent@example.org:k-123").decode()
        no_site = await raw(emu, "GET", "/global/contacts", headers={"Authorization": header})
        assert no_site.status_code == 401 and no_site.json()["code"] == 401

    run(go())


# ----------------------------------------------------------------- pull


def test_sorted_scan_stops_at_the_cursor_and_moves_it_only_at_the_end() -> None:
    emu = emulator()
    ids = []
    for i in range(40):  # one contact per second: T0 .. T0+39s
        ids += emu.seed([person(i)])
        emu.clock.advance(1)
    conn = connect(emu, options={"page_size": 5, "overlap_seconds": 10})

    async def go() -> None:
        first = await pull_all(conn)
        assert len(first) == 8 and first[-1].complete and first[-1].full_scan
        assert all(p.cursor == {"since": None} for p in first[:-1])
        cursor = first[-1].cursor
        assert cursor == {"since": (T0 + timedelta(seconds=39)).isoformat()}

        emu.clock.advance(3600)
        for rid in ids[30:33]:
            emu.external_edit(rid, {"company": "Edited"})
        emu.clock.advance(60)
        emu.external_edit(ids[5], {"company": "Edited later"})
        before = len(emu.request_log)
        second = await pull_all(conn, cursor)
        got = [r.remote_id for p in second for r in p.records]
        # Newest first; then the unchanged ones inside the 10 s overlap (T0+29s .. T0+39s);
        # the scan stops at the first older record, on the third page.
        assert got == [ids[5], ids[32], ids[31], ids[30], *ids[39:32:-1], ids[29]]
        assert len(emu.request_log) - before == 3
        assert second[-1].complete and not second[-1].full_scan
        assert second[-1].cursor == {"since": (T0 + timedelta(seconds=3700)).isoformat()}

        # Nothing changed: a pull reads one page and returns only the overlap window's records.
        third = await pull_all(conn, second[-1].cursor)
        assert [r.remote_id for p in third for r in p.records] == [ids[5]]
        await conn.aclose()

    run(go())


def test_intermediate_pages_keep_the_old_cursor() -> None:
    emu = emulator()
    emu.seed([person(i) for i in range(12)])
    conn = connect(emu, options={"page_size": 5, "overlap_seconds": 0})

    async def go() -> None:
        start = {"since": (T0 - timedelta(days=1)).isoformat()}
        emu.clock.advance(10)
        for rid in list(emu.contacts)[:12]:
            emu.external_edit(rid, {"title": "Dr"})
            emu.clock.advance(1)
        pages = await pull_all(conn, start)
        assert [len(p.records) for p in pages] == [5, 5, 2]
        assert [p.cursor for p in pages[:-1]] == [start, start]
        newest = max(r.updated_at for p in pages for r in p.records)
        assert pages[-1].cursor == {"since": newest.isoformat()}
        await conn.aclose()

    run(go())


def test_merges_and_deletes_are_seen_as_such() -> None:
    emu = emulator()
    ids = emu.seed([person(i) for i in range(6)])
    conn = connect(emu, options={"page_size": 5, "overlap_seconds": 0})

    async def go() -> None:
        first = await pull_all(conn)
        emu.clock.advance(60)
        emu.merge_contacts(ids[0], ids[1])  # an agent merges in the console
        await conn.delete(ids[2])
        second = await pull_all(conn, first[-1].cursor)
        by_id = {r.remote_id: r for p in second for r in p.records}
        assert by_id[ids[1]].merged_into == ids[0] and not by_id[ids[1]].deleted
        assert by_id[ids[2]].deleted and by_id[ids[2]].merged_into is None
        survivor = by_id[ids[0]]
        assert {i["value"] for i in survivor.payload["contactIdentities"]} == {"p0@example.org", "p1@example.org"}
        # Hidden from plain lists, still readable by id so the pointer can be followed.
        plain = (await raw(emu, "GET", "/global/contacts")).json()
        assert {c["id"] for c in plain["contacts"]} == set(ids) - {ids[1], ids[2]}
        assert (await conn.get(ids[1])).merged_into == ids[0]  # type: ignore[union-attr]
        assert await conn.get(ids[2]) is None
        assert await conn.lookup({"email": "p1@example.org"}) == ids[0]
        await conn.aclose()

    run(go())


def test_hard_delete_option_shows_as_absence_in_a_full_scan() -> None:
    emu = emulator(state_options={"soft_delete": False})
    ids = emu.seed(4)
    conn = connect(emu)

    async def go() -> None:
        await conn.delete(ids[0])
        pages = await pull_all(conn)
        assert {r.remote_id for p in pages for r in p.records} == set(ids[1:])
        assert pages[-1].full_scan
        await conn.aclose()

    run(go())


def test_timestamps_without_a_zone_are_utc() -> None:
    emu = emulator(state_options={"utc_suffix": False})
    emu.seed(3)
    conn = connect(emu)

    async def go() -> None:
        pages = await pull_all(conn)
        record = pages[-1].records[0]
        assert not record.payload["lastUpdatedTime"].endswith("Z")
        assert record.updated_at == T0
        await conn.aclose()

    run(go())


# ----------------------------------------------------------------- writes


def test_update_reads_the_name_when_it_is_not_sent() -> None:
    emu = emulator()
    [cid] = emu.seed([person(1)])
    conn = connect(emu)

    async def go() -> None:
        before = len(emu.request_log)
        result = await conn.update(cid, {"company": "AE", "mergeToContactId": "ignored", "lastUpdatedTime": "x"})
        calls = [(e.method, e.status) for e in emu.request_log[before:]]
        assert calls == [("GET", 200), ("PUT", 200)]  # read first: the PUT is a full representation
        assert emu.contacts[cid]["name"] == "P1 Test" and emu.contacts[cid]["company"] == "AE"
        assert emu.contacts[cid]["mergeToContactId"] == ZERO_GUID
        # The result is the contact as held after the write (the response, identities as read).
        assert result.remote_id == cid and result.record is not None
        assert result.record.payload["company"] == "AE" and result.record.payload["contactIdentities"]
        before = len(emu.request_log)
        await conn.update(cid, {"name": "Ada", "company": "AE2"})
        assert [e.method for e in emu.request_log[before:]] == ["GET", "PUT"]  # PUT semantics unknown
        measured = Comm100Connector(
            emu.connection_settings(behaviours={"comm100.put_semantics": "merge"}), emu.transport()
        )
        before = len(emu.request_log)
        await measured.update(cid, {"name": "Ada", "company": "AE3"})
        assert [e.method for e in emu.request_log[before:]] == ["PUT"]  # measured merge: one request
        await measured.aclose()
        with pytest.raises(NotFound):
            await conn.update("00000000-0000-0000-0000-00000000abcd", {"company": "X"})
        with pytest.raises(RecordError):
            await conn.update(cid, {"name": "Ada", "contactIdentities": [ident("Pager", "1")]})
        await conn.aclose()

    run(go())


def test_read_back_option_returns_the_written_contact_with_its_identities() -> None:
    emu = emulator()
    [cid] = emu.seed([person(1)])
    conn = connect(emu, options={"read_back": True})

    async def go() -> None:
        before = len(emu.request_log)
        result = await conn.update(cid, {"name": "Ada", "company": "AE"})
        assert [e.method for e in emu.request_log[before:]] == ["GET", "PUT"]
        assert result.record is not None and result.record.payload["contactIdentities"]
        assert result.record.payload["company"] == "AE"
        created = await conn.create({"firstName": "Grace", "contactIdentities": [ident("Email", "g@example.org")]})
        assert created.created and created.record is not None
        assert created.record.payload["contactIdentities"][0]["value"] == "g@example.org"
        await conn.aclose()

    run(go())


def test_create_derives_a_name_and_lookup_confirms_identities() -> None:
    emu = emulator()
    conn = connect(emu)

    async def go() -> None:
        before = len(emu.request_log)
        result = await conn.create(
            {
                "firstName": "Ada",
                "lastName": "Lovelace",
                "contactIdentities": [ident("Email", "Ada@Example.org"), ident("SMS", "+14155552671")],
            }
        )
        # Not read back (the default): the response, with the identities sent.
        assert result.created and result.record is not None
        assert len(result.record.payload["contactIdentities"]) == 2
        assert [e.method for e in emu.request_log[before:]] == ["POST"]
        assert emu.contacts[result.remote_id]["name"] == "Ada Lovelace"
        assert await conn.lookup({"email": "ada@example.org"}) == result.remote_id
        assert await conn.lookup({"phone": "+14155552671"}) == result.remote_id
        assert await conn.lookup({"email": "nobody@example.org", "phone": "+12125550143"}) is None
        await conn.aclose()

    run(go())


def test_native_merge_is_off_unless_chosen() -> None:
    emu = emulator()
    ids = emu.seed(2)
    conn = connect(emu)
    assert not conn.capabilities.can_merge

    async def go() -> None:
        with pytest.raises(NotImplementedError):
            await conn.merge(ids[0], [ids[1]])
        await conn.aclose()

    run(go())


@pytest.mark.parametrize("read_back", [False, True])
@pytest.mark.parametrize("via", ["put", "endpoint"])
def test_native_merge_options(via: str, read_back: bool) -> None:
    emu = emulator(merge_endpoint=via == "endpoint")
    ids = emu.seed([person(i) for i in range(3)])
    conn = connect(emu, options={"merge_via": via, "read_back": read_back})
    assert conn.capabilities.can_merge

    async def go() -> None:
        result = await conn.merge(ids[0], [ids[1], ids[2]])
        assert result.remote_id == ids[0]
        assert (result.record is not None) == read_back
        survivor = result.record.payload if result.record is not None else emu.contacts[ids[0]]
        values = {i["value"] for i in survivor["contactIdentities"]}
        assert values == {"p0@example.org", "p1@example.org", "p2@example.org"}
        assert set(emu.contacts) == {ids[0]}
        assert {emu.deleted[i]["mergeToContactId"] for i in ids[1:]} == {ids[0]}
        await conn.aclose()

    run(go())


# ----------------------------------------------------------------- limits and faults


def test_documented_rate_limit_gives_429_and_the_budget_avoids_it() -> None:
    emu = emulator(rate_limit=RateLimit(5, 0.2))
    emu.seed(3)

    async def go() -> None:
        statuses = [(await raw(emu, "GET", "/global/contacts")).status_code for _ in range(7)]
        assert statuses.count(429) >= 1
        body = (await raw(emu, "GET", "/global/contacts")).json()
        assert body["code"] == 429
        await asyncio.sleep(0.25)
        conn = connect(emu, max_concurrency=4)
        before = emu.count_status(429)
        await asyncio.gather(*(conn.get(rid) for rid in list(emu.contacts) * 4))
        assert emu.count_status(429) == before
        await conn.aclose()

    run(go())
    assert Comm100Emulator.documented_rate_limit == RateLimit(300, 300.0)
    assert Comm100Connector.capabilities.rate_limit == RateLimit(300, 300.0)


def test_pull_under_faults_is_complete() -> None:
    faults = FaultConfig(rate=0.4, seed=5, kinds=frozenset({"500", "drop", "repeat_page", "shift_page"}))
    emu = emulator(faults=faults)
    ids = emu.seed([person(i) for i in range(33)])
    conn = connect(emu, options={"page_size": 4, "backoff_base_s": 0.001, "backoff_cap_s": 0.01}, max_retries=10)

    async def go() -> None:
        pages = await pull_all(conn)
        got = [r.remote_id for p in pages for r in p.records]
        assert sorted(got) == sorted(ids) and len(got) == len(set(got))
        assert any(f.kind in ("repeat_page", "shift_page") for f in emu.fault_log)
        await conn.aclose()

    run(go())


def test_lookup_finds_a_primary_phone_among_recent_contacts() -> None:
    emu = emulator()
    emu.seed([person(i) for i in range(3)])  # primary phones live in "phone", not in identities
    conn = connect(emu)

    async def go() -> None:
        rid = (await conn.create({"name": "Phone Only", "phone": "+1 (212) 555-0143"})).remote_id
        assert await conn.lookup({"phone": "+12125550143"}) == rid
        assert await conn.lookup({"phone": "+19175550000"}) is None
        await conn.aclose()

    run(go())


def test_put_of_merge_target_must_name_a_live_contact() -> None:
    emu = emulator()
    a, b = emu.seed(2)

    async def go() -> None:
        r = await raw(emu, "PUT", f"/global/contacts/{a}", json={"name": "A", "mergeToContactId": str(a)[::-1]})
        assert r.status_code == 400 and r.json()["errors"][0]["field"] == "mergeToContactId"
        r = await raw(emu, "PUT", f"/global/contacts/{a}", json={"name": "A", "mergeToContactId": a})
        assert r.status_code == 400  # not into itself
        r = await raw(emu, "PUT", f"/global/contacts/{a}", json={"name": "A", "mergeToContactId": b})
        assert r.status_code == 200 and r.json()["mergeToContactId"] == b
        assert a in emu.deleted and b in emu.contacts

    run(go())


@pytest.mark.parametrize("paging", ["ignored_oldest_first", "ignored_arbitrary"])
def test_an_incremental_pull_whose_order_does_not_hold_scans_everything_with_a_warning(paging: str) -> None:
    """comm100.list_paging ignored: the server pages its own way (nextPage links) in its own
    order. The pull sees the order is not newest-first, warns, and reads every page: an agent's
    edit of an old contact is not missed; measured, it scans everything without looking."""
    from structlog.testing import capture_logs

    emu = emulator(variants={"comm100.list_paging": paging})
    ids = emu.seed([person(i) for i in range(60)])
    emu.clock.advance(3600)
    conn = connect(emu)

    async def go() -> None:
        first = await pull_all(conn)
        assert {r.remote_id for p in first for r in p.records} == set(ids)
        emu.clock.advance(3600)
        emu.external_edit(ids[7], {"firstName": "Edited", "name": "Edited Test"})
        with capture_logs() as logs:
            second = await pull_all(conn, first[-1].cursor)
        got = [r.remote_id for p in second for r in p.records]
        assert ids[7] in got and len(got) == len(set(got)) == 60
        assert second[-1].complete and second[-1].full_scan
        assert any(e["event"] == "comm100.order_not_held" for e in logs), logs
        measured = Comm100Connector(
            emu.connection_settings(behaviours={"comm100.list_paging": paging}), emu.transport()
        )
        again = await pull_all(measured, second[-1].cursor)
        assert len({r.remote_id for p in again for r in p.records}) == 60
        await measured.aclose()
        await conn.aclose()

    run(go())


def test_a_sorted_pull_still_stops_early_where_the_order_holds() -> None:
    emu = emulator()
    ids = emu.seed([person(i) for i in range(25)])
    emu.clock.advance(3600)
    later = emu.seed([person(i) for i in range(25, 30)])
    emu.clock.advance(3600)
    conn = connect(emu, options={"page_size": 5})

    async def go() -> None:
        first = await pull_all(conn)
        emu.clock.advance(3600)
        emu.external_edit(ids[3], {"firstName": "Edited", "name": "Edited Test"})
        second = await pull_all(conn, first[-1].cursor)
        got = [r.remote_id for p in second for r in p.records]
        # The edit, and the records within the overlap of the cursor; then it stops.
        assert got[0] == ids[3] and set(got) == {ids[3], *later} and not second[-1].full_scan
        await conn.aclose()

    run(go())
