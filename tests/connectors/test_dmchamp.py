"""DM Champ: emulator wire format and the lookup-only connector, over in-process HTTP."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from connectors.base import ConfigurationError, NotFound, PullMode, RecordError
from connectors.dmchamp import DmChampConnector, DmChampEmulator
from connectors.emulation import FaultConfig

from helpers import request, run

KEY = "dmc-secret-key-123"


def emulator(**state_options: Any) -> DmChampEmulator:
    return DmChampEmulator(credentials={"api_key": KEY}, state_options=state_options)


def connect(emu: DmChampEmulator, transport: httpx.AsyncBaseTransport | None = None, **kw: Any) -> DmChampConnector:
    return DmChampConnector(emu.connection_settings(**kw), transport or emu.transport())


async def raw(emu: DmChampEmulator, method: str, path: str, *, key: str = KEY, **kw: Any) -> httpx.Response:
    params = {**kw.pop("params", {}), "apiKey": key}
    return await request(emu, method, path, params=params, **kw)


ADA = {"phoneNumber": "+14155552671", "firstName": "Ada", "lastName": "Lovelace", "email": "ada@example.org"}


# ----------------------------------------------------------------- wire format


def test_documented_responses() -> None:
    emu = emulator()

    async def go() -> None:
        created = await raw(emu, "POST", "/contacts", json={"phoneNumber": "+14155552671"})
        assert created.status_code == 200
        data = created.json()["data"]
        assert created.json()["success"] is True and data["message"] == "Successfully created new contact"
        stored = emu.contacts[data["contactId"]]
        # Documented defaults.
        assert (stored["firstName"], stored["lastName"]) == ("Unknown", "Unknown")
        assert stored["is_bot_active"] is True and stored["do_not_disturb"] is False

        found = await raw(emu, "GET", "/contacts", params={"phoneNumber": "+14155552671"})
        assert found.json() == {"success": True, "contactId": data["contactId"]}
        missing = await raw(emu, "GET", "/contacts", params={"email": "nobody@example.org"})
        assert missing.status_code == 404 and missing.json()["success"] is False
        assert (await raw(emu, "GET", "/contacts")).status_code == 400

        updated = await raw(emu, "PUT", f"/contacts/{data['contactId']}", json={"firstName": "Ada"})
        assert updated.json() == {"success": True, "message": "Contact updated successfully"}
        assert (await raw(emu, "PUT", "/contacts/nope", json={"firstName": "X"})).status_code == 404

        assert (await raw(emu, "GET", f"/contacts/tags/{data['contactId']}")).json() == []
        assert (await raw(emu, "GET", "/contacts/tags/nope")).status_code == 404

        unauthorized = await raw(emu, "GET", "/contacts", key="wrong", params={"email": "a@b.org"})
        assert unauthorized.status_code == 401 and unauthorized.json() == "Unauthorized"

    run(go())


def test_create_validation() -> None:
    emu = emulator()

    async def go() -> None:
        for body in (
            {},
            {"firstName": "Ada"},
            {"phoneNumber": "4155552671"},
            {"phoneNumber": 14155552671},
            {"phoneNumber": "+14155552671", "email": "broken"},
            {"phoneNumber": "+14155552671", "is_bot_active": "yes"},
        ):
            r = await raw(emu, "POST", "/contacts", json=body)
            assert r.status_code == 400 and "error" in r.json(), body
        # A bad list id creates nothing (lists are validated first).
        r = await raw(emu, "POST", "/contacts", json={**ADA, "listIds": ["missing"]})
        assert r.status_code == 404 and emu.contacts == {}
        emu.add_list("l1", "Leads")
        r = await raw(emu, "POST", "/contacts", json={**ADA, "listId": "l1"})
        assert emu.list_members("l1") == {r.json()["data"]["contactId"]}

    run(go())


@pytest.mark.parametrize("policy", ["reject", "ignore"])
def test_update_of_other_keys_is_rejected_or_ignored(policy: str) -> None:
    emu = emulator(extra_update_keys=policy)
    cid = emu.seed_raw(dict(ADA))

    async def go() -> None:
        r = await raw(emu, "PUT", f"/contacts/{cid}", json={"lastName": "King", "phoneNumber": "+12125550143"})
        if policy == "reject":
            assert r.status_code == 400 and emu.contacts[cid]["lastName"] == "Lovelace"
        else:
            assert r.status_code == 200 and emu.contacts[cid]["lastName"] == "King"
        assert emu.contacts[cid]["phoneNumber"] == "+14155552671"

    run(go())


# ----------------------------------------------------------------- connector


def test_capabilities_and_no_pull() -> None:
    emu = emulator()
    emu.seed(3)
    conn = connect(emu)
    caps = conn.capabilities
    assert caps.pull_mode is PullMode.LOOKUP_ONLY and not caps.can_delete and not caps.deletes_detectable
    assert caps.required_for_create == ("phones",) and caps.lookup_keys == ("phone", "email")
    assert caps.updatable_fields == frozenset({"firstName", "lastName", "email", "is_bot_active", "do_not_disturb"})

    async def go() -> None:
        assert [p async for p in conn.pull(None)] == []
        assert emu.request_log == []
        with pytest.raises(NotImplementedError):
            await conn.get("anything")
        with pytest.raises(NotImplementedError):
            await conn.delete("anything")
        await conn.aclose()

    run(go())


def test_lookup_tries_phone_then_email() -> None:
    emu = emulator()
    a = emu.seed_raw(dict(ADA))
    b = emu.seed_raw({"phoneNumber": "+12125550143", "email": "grace@example.org"})
    conn = connect(emu)

    async def go() -> None:
        assert await conn.lookup({"phone": "+14155552671", "email": "grace@example.org"}) == a
        assert await conn.lookup({"phone": "+19999999999", "email": "GRACE@example.org"}) == b
        assert await conn.lookup({"phone": "+19999999999"}) is None
        assert await conn.lookup({}) is None
        await conn.aclose()

    run(go())


@pytest.mark.parametrize("policy", ["error", "return_existing"])
def test_create_never_makes_a_second_contact(policy: str) -> None:
    emu = emulator(on_duplicate_phone=policy)
    conn = connect(emu)

    async def go() -> None:
        first = await conn.create(dict(ADA))
        # What we sent, plus the documented defaults of what we did not (issue 15).
        defaults = {"do_not_disturb": False, "is_bot_active": True}
        assert first.created and first.record is not None and first.record.payload == {**defaults, **ADA}
        again = await conn.create({**ADA, "firstName": "Augusta", "instagramId": "ada"})
        assert not again.created and again.remote_id == first.remote_id and again.extra == {"existing": True}
        assert len(emu.contacts) == 1
        # The existing contact got the updatable keys of the second payload, nothing else.
        stored = emu.contacts[first.remote_id]
        assert stored["firstName"] == "Augusta" and "instagramId" not in stored
        await conn.aclose()

    run(go())


class _RacingTransport(httpx.AsyncBaseTransport):
    """Forwards to the emulator, but lets another client create the same phone number just
    before our POST /contacts arrives (the race between our lookup and our create)."""

    def __init__(self, emu: DmChampEmulator) -> None:
        self.emu = emu
        self.inner = emu.transport()
        self.rival: str | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == "/contacts" and self.rival is None:
            self.rival = self.emu.seed_raw({"phoneNumber": "+14155552671", "firstName": "Rival"})
        return await self.inner.handle_async_request(request)


@pytest.mark.parametrize("policy", ["error", "return_existing"])
def test_create_racing_another_creator_adopts_the_winner(policy: str) -> None:
    emu = emulator(on_duplicate_phone=policy)
    transport = _RacingTransport(emu)
    conn = connect(emu, transport)

    async def go() -> None:
        result = await conn.create(dict(ADA))
        assert result.remote_id == transport.rival and not result.created
        assert len(emu.contacts) == 1 and emu.contacts[result.remote_id]["firstName"] == "Ada"
        await conn.aclose()

    run(go())


def test_create_requires_a_phone_number() -> None:
    emu = emulator()
    conn = connect(emu)

    async def go() -> None:
        with pytest.raises(RecordError):
            await conn.create({"firstName": "Ada", "email": "ada@example.org"})
        assert emu.request_log == []
        await conn.aclose()

    run(go())


def test_update_sends_only_updatable_keys() -> None:
    emu = emulator()
    cid = emu.seed_raw(dict(ADA))
    conn = connect(emu)

    async def go() -> None:
        result = await conn.update(cid, {"lastName": "King", "do_not_disturb": True, "phoneNumber": "+1212"})
        assert result.extra == {"dropped": ["phoneNumber"]} and result.record is None
        stored = emu.contacts[cid]
        assert (stored["lastName"], stored["do_not_disturb"], stored["phoneNumber"]) == ("King", True, "+14155552671")
        with pytest.raises(NotFound):
            await conn.update("missing", {"lastName": "X"})
        before = len(emu.request_log)
        await conn.update(cid, {"phoneNumber": "+1212"})
        assert len(emu.request_log) == before  # nothing writable: no call
        await conn.aclose()

    run(go())


def test_lists_and_tags() -> None:
    emu = emulator()
    cid = emu.seed_raw({**ADA, "tags": ["vip", "lead"]})
    emu.add_list("l1")
    conn = connect(emu)

    async def go() -> None:
        assert await conn.tags(cid) == ["vip", "lead"]
        assert await conn.exists(cid) and not await conn.exists("missing")
        await conn.add_to_list(cid, "l1")
        assert emu.list_members("l1") == {cid}
        await conn.remove_from_list(cid, "l1")
        assert emu.list_members("l1") == set()
        with pytest.raises(NotFound):
            await conn.add_to_list(cid, "nope")
        await conn.aclose()

    run(go())


# ----------------------------------------------------------------- secrets and faults


def test_the_api_key_never_reaches_logs_or_errors(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    faults = FaultConfig(rate=0.5, seed=3, kinds=frozenset({"500", "drop", "429"}))
    emu = DmChampEmulator(credentials={"api_key": KEY}, faults=faults)
    conn = connect(emu, options={"backoff_base_s": 0.001, "backoff_cap_s": 0.005}, max_retries=2)
    bad = connect(emu, credentials={"api_key": SecretStr(KEY + "x")})
    errors: list[str] = []

    async def go() -> None:
        for i in range(8):
            try:
                await conn.create({"phoneNumber": f"+1415555{i:04d}", "firstName": "P"})
                await conn.lookup({"email": f"p{i}@example.org"})
            except Exception as exc:  # noqa: BLE001 - every error text is checked below
                errors.append(f"{exc!r} {exc}")
        try:
            await bad.lookup({"phone": "+14155550000"})
        except ConfigurationError as exc:
            errors.append(f"{exc!r} {exc}")
        await conn.aclose()
        await bad.aclose()

    with caplog.at_level(logging.DEBUG):
        run(go())
    out = capsys.readouterr()
    text = "\n".join([caplog.text, out.out, out.err, *errors])
    assert any("HTTP Request" in r.getMessage() for r in caplog.records)  # httpx did log the URLs
    assert KEY not in text
    assert len(emu.fault_log) > 0 and any("ConfigurationError" in e for e in errors)


def test_creates_under_faults_land_exactly_once() -> None:
    faults = FaultConfig(
        rate=0.5, seed=11, kinds=frozenset({"500", "502", "drop", "slow", "429_retry_after"}), slow_seconds=0.1
    )
    emu = DmChampEmulator(credentials={"api_key": KEY}, faults=faults)
    conn = connect(emu, options={"backoff_base_s": 0.001, "backoff_cap_s": 0.005}, timeout_s=0.03, max_retries=8)

    async def go() -> None:
        ids = [(await conn.create({"phoneNumber": f"+1212555{i:04d}", "lastName": "L"})).remote_id for i in range(20)]
        assert len(set(ids)) == 20 and set(ids) == set(emu.contacts)
        assert any(f.when == "after" for f in emu.fault_log)
        await conn.aclose()

    run(go())


def test_list_id_option_puts_created_and_adopted_contacts_in_the_list() -> None:
    emu = emulator()
    emu.add_list("l-sync", "Synced")
    existing = emu.seed_raw({"phoneNumber": "+12125550143", "firstName": "Grace"})
    conn = connect(emu, options={"list_id": "l-sync"})

    async def go() -> None:
        created = await conn.create(dict(ADA))
        adopted = await conn.create({"phoneNumber": "+12125550143", "lastName": "Hopper"})
        assert adopted.remote_id == existing and not adopted.created
        assert emu.list_members("l-sync") == {created.remote_id, existing}
        await conn.aclose()

    run(go())


def test_email_lookup_follows_every_change_of_an_email() -> None:
    # The email lookup answers from an index: an update, an outside edit and a seed must each
    # move the contact from its old address to the new one.
    emu = emulator()
    seeded = emu.state.seed({"phoneNumber": "+14155550100", "email": "Seed@Example.org"})

    async def find(email: str) -> Any:
        r = await raw(emu, "GET", "/contacts", params={"email": email})
        return r.json().get("contactId") if r.status_code == 200 else r.status_code

    async def go() -> None:
        created = await raw(emu, "POST", "/contacts", json={"phoneNumber": "+14155552671", "email": "ada@example.org"})
        cid = created.json()["data"]["contactId"]
        assert await find(" ADA@example.org ") == cid and await find("seed@example.org") == seeded

        await raw(emu, "PUT", f"/contacts/{cid}", json={"email": "ada.l@example.org"})
        assert await find("ada@example.org") == 404 and await find("ada.l@example.org") == cid

        emu.external_edit(cid, {"email": "countess@example.org"})
        assert await find("ada.l@example.org") == 404 and await find("countess@example.org") == cid

        emu.external_edit(seeded, {"email": None})
        assert await find("seed@example.org") == 404
        # Two contacts with one address (only an outside edit can do that): the older answers.
        emu.external_edit(seeded, {"email": "countess@example.org"})
        assert await find("countess@example.org") == seeded

    run(go())
