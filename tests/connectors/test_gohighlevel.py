"""GoHighLevel specifics: the emulator's wire behaviour (auth, versions, validation, headers,
search paging and filters, duplicates, custom fields) and the connector's use of it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from connectors.base import NotFound, RateLimit, RecordError
from connectors.emulation import Clock, RecordingTransport
from connectors.gohighlevel import CONNECTOR, EMULATOR
from connectors.gohighlevel.emulator import GoHighLevelEmulator

from helpers import run

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def headers(
    emulator: GoHighLevelEmulator, version: str | None = "2021-07-28", token: str | None = None
) -> dict[str, str]:
    out = {"Authorization": f"Bearer {token or emulator.credentials['token']}"}
    if version:
        out["Version"] = version
    return out


def call(
    emulator: GoHighLevelEmulator, method: str, path: str, *, hdrs: dict[str, str] | None = None, **kwargs: Any
) -> httpx.Response:
    async def body() -> httpx.Response:
        async with httpx.AsyncClient(transport=emulator.transport(), base_url=emulator.base_url) as client:
            return await client.request(method, path, headers=hdrs if hdrs is not None else headers(emulator), **kwargs)

    return asyncio.run(body())


def search(emulator: GoHighLevelEmulator, **body: Any) -> httpx.Response:
    return call(emulator, "POST", "/contacts/search", json={"locationId": emulator.location_id, **body})


# --------------------------------------------------------------------------- emulator wire


def test_auth_and_version() -> None:
    emulator = EMULATOR()
    r = call(emulator, "GET", "/contacts/x", hdrs=headers(emulator, token="wrong"))
    assert r.status_code == 401 and r.json() == {
        "statusCode": 401,
        "message": "Invalid token: access token is invalid",
        "error": "Unauthorized",
    }
    assert call(emulator, "GET", "/contacts/x", hdrs=headers(emulator, version=None)).status_code == 400
    assert call(emulator, "GET", "/contacts/x", hdrs=headers(emulator, version="2021-04-15")).status_code == 400
    rid = emulator.seed(1)[0]
    assert call(emulator, "GET", f"/contacts/{rid}", hdrs=headers(emulator, version="2021-04-15")).status_code == 200


def test_rate_limit_headers_on_every_response() -> None:
    emulator = EMULATOR(rate_scale=10)
    r = call(emulator, "GET", "/contacts/missing")
    assert r.headers["X-RateLimit-Max"] == "100"
    assert r.headers["X-RateLimit-Interval-Milliseconds"] == "1000"
    assert r.headers["X-RateLimit-Remaining"] == "99"
    assert "X-RateLimit-Daily-Remaining" in r.headers


def test_other_location_is_forbidden() -> None:
    emulator = EMULATOR()
    r = call(emulator, "POST", "/contacts/search", json={"locationId": "elsewhere"})
    assert r.status_code == 403


def test_validation_errors_are_422_lists() -> None:
    emulator = EMULATOR()
    r = call(emulator, "POST", "/contacts/", json={"locationId": emulator.location_id, "email": "nope", "dnd": "yes"})
    assert r.status_code == 422
    assert r.json()["error"] == "Unprocessable Entity"
    assert set(r.json()["message"]) == {"email must be an email", "dnd must be a boolean value"}
    assert search(emulator, pageLimit=501).status_code == 422
    assert search(emulator, page=1, searchAfter=[1, "a"]).status_code == 422
    assert search(emulator, filters=[{"field": "x", "operator": "like", "value": 1}]).status_code == 422
    assert search(emulator, page=21, pageLimit=500).status_code == 400  # past 10,000: use searchAfter


def test_search_filters_sort_and_search_after() -> None:
    emulator = EMULATOR(clock=Clock(T0), search_delay_s=0.0)
    ids = []
    for i in range(6):
        ids += emulator.seed(
            [{"first_name": f"N{i}", "email": f"n{i}@example.org", "tags": ["even"] if i % 2 == 0 else []}]
        )
        emulator.clock.advance(10)
    r = search(emulator, pageLimit=4, sort=[{"field": "dateUpdated", "direction": "asc"}])
    assert r.json()["total"] == 6 and [c["id"] for c in r.json()["contacts"]] == ids[:4]
    after = r.json()["contacts"][-1]["searchAfter"]
    r = search(emulator, pageLimit=4, searchAfter=after, sort=[{"field": "dateUpdated", "direction": "asc"}])
    assert [c["id"] for c in r.json()["contacts"]] == ids[4:]
    r = search(
        emulator,
        pageLimit=10,
        filters=[{"field": "dateUpdated", "operator": "range", "value": {"gte": "2026-01-01T00:00:30.000Z"}}],
    )
    assert {c["id"] for c in r.json()["contacts"]} == set(ids[3:])
    r = search(
        emulator,
        pageLimit=10,
        filters=[
            {
                "group": "OR",
                "filters": [
                    {"field": "tags", "operator": "eq", "value": "even"},
                    {"field": "firstName", "operator": "eq", "value": "n5"},
                ],
            }
        ],
    )
    assert {c["id"] for c in r.json()["contacts"]} == {ids[0], ids[2], ids[4], ids[5]}
    r = search(emulator, pageLimit=2, sort=[{"field": "dateUpdated", "direction": "desc"}])
    assert [c["id"] for c in r.json()["contacts"]] == [ids[5], ids[4]]


def test_search_is_eventually_consistent() -> None:
    emulator = EMULATOR(clock=Clock(T0), search_delay_s=5.0)
    rid = emulator.seed(1)[0]
    emulator.next_search_delay = 5.0
    emulator.external_edit(rid, {"firstName": "Later"})
    assert search(emulator).json()["contacts"][0]["firstName"] != "Later"
    emulator.clock.advance(5)
    assert search(emulator).json()["contacts"][0]["firstName"] == "Later"
    assert call(emulator, "GET", f"/contacts/{rid}").json()["contact"]["firstName"] == "Later"  # get is current


def test_custom_fields_written_by_key_read_by_stable_id() -> None:
    emulator = EMULATOR()
    r = call(
        emulator,
        "POST",
        "/contacts/",
        json={
            "locationId": emulator.location_id,
            "email": "a@example.org",
            "customFields": [{"key": "plan", "field_value": "pro"}],
        },
    )
    fid = emulator.custom_field_ids["plan"]
    assert r.json()["contact"]["customFields"] == [{"id": fid, "value": "pro"}]
    rid = r.json()["contact"]["id"]
    r = call(emulator, "PUT", f"/contacts/{rid}", json={"customFields": [{"id": fid, "field_value": "free"}]})
    assert r.json()["contact"]["customFields"] == [{"id": fid, "value": "free"}]


# --------------------------------------------------------------------------- connector


def test_create_duplicate_links_existing_contact() -> None:
    emulator = EMULATOR()
    rid = emulator.seed([{"first_name": "Ada", "email": "ada@example.org"}])[0]

    async def body() -> None:
        connector = CONNECTOR(emulator.connection_settings(), emulator.transport())
        result = await connector.create({"firstName": "Ada L", "email": "ADA@example.org"})
        assert result.remote_id == rid and not result.created and result.extra == {"duplicate_of": rid}
        await connector.aclose()

    run(body())
    assert len(emulator.contacts) == 1


def test_update_missing_contact_and_delete_twice() -> None:
    emulator = EMULATOR()
    rid = emulator.seed(1)[0]

    async def body() -> None:
        connector = CONNECTOR(emulator.connection_settings(), emulator.transport())
        with pytest.raises(NotFound):
            await connector.update("nope", {"firstName": "X"})
        with pytest.raises(RecordError, match="not updatable"):
            await connector.update(rid, {"favouriteColour": "blue"})
        await connector.delete(rid)
        await connector.delete(rid)  # already gone is done
        assert await connector.get(rid) is None
        await connector.aclose()

    run(body())


def test_update_sends_only_changes_and_clears_with_empty_string() -> None:
    emulator = EMULATOR()
    rid = emulator.seed([{"first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.org", "city": "London"}])[
        0
    ]
    recorder = RecordingTransport(emulator.transport())

    async def body() -> None:
        connector = CONNECTOR(emulator.connection_settings(), recorder)
        await connector.update(rid, {"city": None, "lastName": "King"})
        await connector.aclose()

    run(body())
    (put,) = recorder.sent("PUT", f"/contacts/{rid}")
    assert httpx.Response(200, content=put.content).json() == {"city": "", "lastName": "King"}
    assert "city" not in emulator.contacts[rid] and emulator.contacts[rid]["lastName"] == "King"


def test_incremental_pull_cursor_moves_forward_only() -> None:
    emulator = EMULATOR(clock=Clock(T0), search_delay_s=0.0)
    emulator.seed(5)

    async def body() -> None:
        connector = CONNECTOR(emulator.connection_settings(options={"page_size": 2}), emulator.transport())
        cursors = [p.cursor async for p in connector.pull(None)]
        assert cursors[-1] == {"date_updated": "2026-01-01T00:00:00.000Z"}
        # Nothing changed: the re-read overlap returns records, but the cursor stays put.
        again = [p async for p in connector.pull(cursors[-1])]
        assert again[-1].cursor == cursors[-1] and again[-1].complete
        await connector.aclose()

    run(body())


def test_pull_under_rate_limit_learned_from_headers_only() -> None:
    """No limit configured on the connection: the budget adopts the server's headers."""
    emulator = EMULATOR(rate_limit=RateLimit(4, 0.05))
    emulator.seed(30)

    async def body() -> None:
        settings = emulator.connection_settings(options={"page_size": 2}, rate_limit=None)
        connector = CONNECTOR(settings, emulator.transport())
        connector.http.budget.limit = None  # forget the documented limit too
        n = sum([len(p.records) async for p in connector.pull(None)])
        assert n == 30
        assert connector.http.budget.limit == RateLimit(4, 0.05)
        await connector.aclose()

    run(body())
    assert emulator.count_status(429) == 0


def test_duplicate_check_follows_every_change_of_email_and_phone() -> None:
    # The duplicate rule answers from indexes: updates, outside edits, a refused create and a
    # delete must each leave them matching the contacts as they are.
    emulator = EMULATOR()

    def duplicate(**q: str) -> Any:
        r = call(emulator, "GET", "/contacts/search/duplicate", params={"locationId": emulator.location_id, **q})
        contact = r.json()["contact"]
        return contact and contact["id"]

    def create(**body: Any) -> httpx.Response:
        return call(emulator, "POST", "/contacts/", json={"locationId": emulator.location_id, **body})

    a = create(firstName="Ada", email="Ada@Example.com", phone="+1 415 555 2671").json()["contact"]["id"]
    assert duplicate(email="ada@example.com") == a and duplicate(number="(415) 555-2671") == a

    call(emulator, "PUT", f"/contacts/{a}", json={"email": "ada.l@example.com", "phone": "+14155550199"})
    assert duplicate(email="ada@example.com") is None and duplicate(number="+14155552671") is None
    assert duplicate(email="ADA.L@example.com") == a and duplicate(number="+14155550199") == a
    # The old values are free again; the new ones are taken.
    assert create(firstName="Other", email="ada@example.com").status_code == 201
    taken = create(firstName="Copy", phone="+14155550199")
    assert taken.status_code == 400 and taken.json()["meta"]["contactId"] == a

    emulator.external_edit(a, {"email": "countess@example.com"})
    assert duplicate(email="ada.l@example.com") is None and duplicate(email="countess@example.com") == a

    # A create refused half-way (an unknown custom field) stores nothing and indexes nothing.
    emulator.auto_custom_fields = False
    refused = create(firstName="Bad", email="bad@example.com", customFields=[{"key": "nope", "field_value": "x"}])
    assert refused.status_code == 422 and duplicate(email="bad@example.com") is None

    assert call(emulator, "DELETE", f"/contacts/{a}").status_code == 200
    assert duplicate(email="countess@example.com") is None and duplicate(number="+14155550199") is None


def test_search_views_stay_sorted_as_contacts_change() -> None:
    # Sorted views are kept in order change by change instead of being rebuilt per search.
    emulator = EMULATOR(clock=Clock(T0), search_delay_s=0)
    ids = emulator.seed(6)
    for direction in ("asc", "desc"):  # both views built before the changes
        first = search(emulator, pageLimit=100, sort=[{"field": "dateUpdated", "direction": direction}]).json()
        assert first["total"] == 6
    for step, rid in enumerate([ids[3], ids[0], ids[5]], start=1):
        emulator.clock.advance(step)
        emulator.external_edit(rid, {"firstName": f"Edit{step}"})
    call(emulator, "DELETE", f"/contacts/{ids[1]}")

    def order(direction: str) -> list[str]:
        r = search(emulator, pageLimit=100, sort=[{"field": "dateUpdated", "direction": direction}]).json()
        return [c["id"] for c in r["contacts"]]

    fresh = EMULATOR(clock=Clock(T0), search_delay_s=0)
    fresh._visible = dict(emulator._visible)  # the same contacts, views built from scratch
    for direction in ("asc", "desc"):
        expected = [
            c["id"]
            for c in search(fresh, pageLimit=100, sort=[{"field": "dateUpdated", "direction": direction}]).json()[
                "contacts"
            ]
        ]
        assert order(direction) == expected
    assert order("desc")[:3] == [ids[5], ids[0], ids[3]]
