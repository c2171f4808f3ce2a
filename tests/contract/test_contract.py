"""The connector contract: every platform's connector against its emulator, over HTTP.

Cases are skipped by declared capability (a platform that cannot pull skips the pull cases),
never by platform name; per-platform specifics are data in ``scenarios/<platform>.py``.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from connectors.base import (
    ConfigurationError,
    Connector,
    PullMode,
    RateLimit,
    RawRecord,
)
from connectors.emulation import Emulator, FaultConfig

from .conftest import Harness, run
from .scenarios import Scenario

FAULTS = frozenset({"429", "429_retry_after", "500", "502", "503", "slow", "drop", "repeat_page", "shift_page"})


def can_pull(connector: Connector) -> bool:
    return connector.capabilities.pull_mode is not PullMode.LOOKUP_ONLY


async def pull_all(
    connector: Connector, cursor: dict[str, Any] | None = None
) -> tuple[list[RawRecord], dict[str, Any] | None, int]:
    """Every record of one pull, the last page's cursor and the number of pages."""
    records: list[RawRecord] = []
    last_cursor = cursor
    pages = 0
    async for page in connector.pull(cursor):
        pages += 1
        records.extend(page.records)
        last_cursor = page.cursor
    return records, last_cursor, pages


def live_matching(emulator: Emulator, scenario: Scenario, payload: dict[str, Any]) -> list[str]:
    """Remote ids of live records that show a create payload."""
    return [
        rid
        for rid, rec in emulator.contacts.items()
        if scenario.applied(rec, scenario.stored(payload, scenario.variants))
    ]


# --------------------------------------------------------------------------- declarations


def test_capabilities_as_expected(harness: Harness, scenario: Scenario) -> None:
    connector = harness.connector(harness.emulator())
    for name, value in scenario.expected.items():
        assert getattr(connector.capabilities, name) == value, name


def test_bad_credentials_fail_fast_without_leaking(harness: Harness, scenario: Scenario) -> None:
    async def body() -> None:
        emulator = harness.emulator()
        emulator.seed(3)
        connector = harness.bad_connector(emulator)
        with pytest.raises(ConfigurationError) as info:
            if can_pull(connector):
                await pull_all(connector)
            else:
                await connector.lookup(scenario.keys_of_create(scenario.creates[0]))
        text = str(info.value)
        for secret in connector.settings.credentials.values():
            assert secret.get_secret_value() not in text
        # Fail fast: no retry loop on a configuration error.
        assert len(emulator.request_log) == 1

    run(body())


# --------------------------------------------------------------------------- pulling


def test_full_pull_returns_every_contact_once(harness: Harness, scenario: Scenario) -> None:
    async def body() -> None:
        emulator = harness.emulator()
        connector = harness.connector(emulator)
        if not can_pull(connector):
            pytest.skip("connector cannot pull (lookup only)")
        emulator.seed(30, rng_seed=1)
        records, cursor, pages = await pull_all(connector)
        ids = [r.remote_id for r in records]
        assert len(ids) == len(set(ids))
        assert set(ids) == set(emulator.contacts)
        if not scenario.variants:  # (a server that ignores paging may answer all at once)
            assert pages > 1, "the scenario's page size should make this pull span pages"
        assert cursor is not None

    run(body())


def test_incremental_pull_returns_changes_within_overlap(harness: Harness, scenario: Scenario) -> None:
    async def body() -> None:
        emulator = harness.emulator()
        connector = harness.connector(emulator)
        if not can_pull(connector):
            pytest.skip("connector cannot pull (lookup only)")
        early = emulator.seed(12, rng_seed=2)
        emulator.clock.advance(3600)
        emulator.seed(12, rng_seed=3)
        emulator.clock.advance(3600)
        first, cursor, _ = await pull_all(connector)
        assert {r.remote_id for r in first} == set(emulator.contacts)
        high = max(r.updated_at for r in first if r.updated_at)

        emulator.clock.advance(3600)
        edited = early[:3]
        for rid in edited:
            emulator.external_edit(rid, scenario.edit)
        emulator.clock.advance(scenario_visibility(scenario) + 1)
        second, _, _ = await pull_all(connector, cursor)
        got = {r.remote_id for r in second}
        assert set(edited) <= got
        assert len(got) == len(second), "duplicates in an incremental pull"
        for r in second:
            assert scenario.applied(r.payload, scenario.edit) or r.remote_id not in edited
        mode = connector.capabilities.pull_mode
        if mode is PullMode.SORTED_SCAN and got == set(emulator.contacts) and scenario.variants:
            pass  # the inferred order did not hold: a complete scan instead (nothing skipped)
        elif mode in (PullMode.CHANGE_FEED, PullMode.SORTED_SCAN):
            overlap = timedelta(seconds=connector.capabilities.overlap_seconds)
            for r in second:
                if r.remote_id not in edited:
                    assert r.updated_at is not None and r.updated_at >= high - overlap, r.remote_id

    run(body())


def scenario_visibility(scenario: Scenario) -> float:
    """How long an outside edit may take to reach pulls (eventually consistent search)."""
    return float(scenario.emulator_kwargs.get("search_delay_s", 0.0))


def test_edit_inside_search_delay_is_not_lost(harness: Harness, scenario: Scenario) -> None:
    if scenario.lagged_edit is None:
        pytest.skip("the platform's pulls are not eventually consistent")

    async def body() -> None:
        emulator = harness.emulator()
        connector = harness.connector(emulator)
        delay = connector.capabilities.overlap_seconds * 0.9
        ids = emulator.seed(10, rng_seed=4)
        _, cursor, _ = await pull_all(connector)
        emulator.clock.advance(60)
        # A is edited first but indexed late; B is edited after A and indexed at once.
        assert scenario.lagged_edit is not None
        scenario.lagged_edit(emulator, ids[0], scenario.edit, delay)
        emulator.clock.advance(1)
        scenario.lagged_edit(emulator, ids[1], scenario.edit, 0.0)
        emulator.clock.advance(1)
        seen, cursor, _ = await pull_all(connector, cursor)
        edited = {r.remote_id for r in seen if scenario.applied(r.payload, scenario.edit)}
        assert ids[1] in edited
        assert ids[0] not in edited, "A's edit should not be visible yet"
        emulator.clock.advance(delay)
        later, _, _ = await pull_all(connector, cursor)
        edited = {r.remote_id for r in later if scenario.applied(r.payload, scenario.edit)}
        assert ids[0] in edited, "an edit made inside the search delay was lost"

    run(body())


# --------------------------------------------------------------------------- writing


def test_create_update_delete_round_trip(harness: Harness, scenario: Scenario) -> None:
    async def body() -> None:
        emulator = harness.emulator()
        connector = harness.connector(emulator)
        caps = connector.capabilities
        if not caps.can_create:
            pytest.skip("connector cannot create")
        payload = scenario.creates[0]
        result = await connector.create(payload)
        assert result.remote_id in emulator.contacts
        assert scenario.applied(emulator.contacts[result.remote_id], scenario.stored(payload, scenario.variants))
        assert live_matching(emulator, scenario, payload) == [result.remote_id]
        if caps.lookup_keys:
            assert await connector.lookup(scenario.keys_of_create(payload)) == result.remote_id
        if caps.can_update:
            await connector.update(result.remote_id, scenario.update)
            assert scenario.applied(
                emulator.contacts[result.remote_id], scenario.stored(scenario.update, scenario.variants)
            )
        if caps.can_delete:
            await connector.delete(result.remote_id)
            assert result.remote_id not in emulator.contacts
            if can_pull(connector):
                assert await connector.get(result.remote_id) is None

    run(body())


def test_tags_round_trip(harness: Harness, scenario: Scenario) -> None:
    async def body() -> None:
        emulator = harness.emulator()
        connector = harness.connector(emulator)
        if not connector.capabilities.tags_via_endpoint or scenario.tags_of is None:
            pytest.skip("tags are not written through add/remove calls")
        rid = (await connector.create(scenario.creates[1])).remote_id
        before = scenario.tags_of(emulator.contacts[rid])
        await connector.add_tags(rid, ["alpha", "beta"])
        assert scenario.tags_of(emulator.contacts[rid]) == before | {"alpha", "beta"}
        await connector.remove_tags(rid, ["alpha"])
        assert scenario.tags_of(emulator.contacts[rid]) == before | {"beta"}
        await connector.add_tags(rid, ["beta"])  # adding again changes nothing
        assert scenario.tags_of(emulator.contacts[rid]) == before | {"beta"}

    run(body())


def test_merge_round_trip(harness: Harness, scenario: Scenario) -> None:
    async def body() -> None:
        emulator = harness.emulator()
        connector = harness.connector(emulator)
        if not connector.capabilities.can_merge:
            pytest.skip("connector cannot merge")
        survivor = (await connector.create(scenario.creates[0])).remote_id
        loser = (await connector.create(scenario.creates[1])).remote_id
        await connector.merge(survivor, [loser])
        assert survivor in emulator.contacts
        assert loser not in emulator.contacts

    run(body())


def test_upsert_creates_then_updates(harness: Harness, scenario: Scenario) -> None:
    async def body() -> None:
        emulator = harness.emulator()
        connector = harness.connector(emulator)
        if not connector.capabilities.can_upsert:
            pytest.skip("connector has no upsert")
        payload = scenario.creates[2]
        first = await connector.upsert(payload)
        second = await connector.upsert({**payload, **scenario.update})
        assert first.created and not second.created
        assert first.remote_id == second.remote_id
        assert len(live_matching(emulator, scenario, scenario.update)) == 1

    run(body())


# --------------------------------------------------------------------------- faults and limits


@pytest.mark.parametrize("fault_seed", [11, 12])
def test_pull_with_faults_is_complete_and_duplicate_free(harness: Harness, scenario: Scenario, fault_seed: int) -> None:
    async def body() -> None:
        emulator = harness.emulator(faults=FaultConfig(rate=0.2, seed=fault_seed, kinds=FAULTS, slow_seconds=0.3))
        connector = harness.connector(emulator, max_retries=10)
        if not can_pull(connector):
            pytest.skip("connector cannot pull (lookup only)")
        emulator.seed(60, rng_seed=5)
        for _ in range(2):
            records, _, _ = await pull_all(connector)
            ids = [r.remote_id for r in records]
            assert len(ids) == len(set(ids))
            assert set(ids) == set(emulator.contacts)
        # (A variant whose server pages its own way may take too few requests to draw one.)
        assert emulator.fault_log or scenario.variants, "no fault was injected: the test proves nothing"

    run(body())


AMBIGUOUS = frozenset({"drop", "slow", "500", "502"})  # may strike after a write was applied


@pytest.mark.parametrize(("rate", "kinds"), [(0.2, FAULTS), (0.35, AMBIGUOUS)], ids=["all-faults", "ambiguous"])
def test_writes_with_faults_take_effect_exactly_once(
    harness: Harness, scenario: Scenario, rate: float, kinds: frozenset[str]
) -> None:
    async def one_round(fault_seed: int) -> Emulator:
        emulator = harness.emulator(faults=FaultConfig(rate=rate, seed=fault_seed, kinds=kinds, slow_seconds=0.3))
        connector = harness.connector(emulator, max_retries=10)
        caps = connector.capabilities
        if not caps.can_create:
            pytest.skip("connector cannot create")
        created = []
        for payload in scenario.creates:
            result = await connector.create(payload)
            created.append(result.remote_id)
            assert live_matching(emulator, scenario, payload) == [result.remote_id]
        assert len(emulator.contacts) == len(scenario.creates)
        if caps.can_update:
            await connector.update(created[0], scenario.update)
            assert scenario.applied(emulator.contacts[created[0]], scenario.stored(scenario.update, scenario.variants))
        if caps.tags_via_endpoint and scenario.tags_of is not None:
            await connector.add_tags(created[1], ["gamma"])
            assert "gamma" in scenario.tags_of(emulator.contacts[created[1]])
        if caps.can_delete:
            await connector.delete(created[2])
            assert created[2] not in emulator.contacts
        # Every create payload still matches exactly one live record (none duplicated).
        for payload, rid in zip(scenario.creates[:2], created[:2], strict=True):
            keys = scenario.keys_of_create(payload)
            if caps.lookup_keys and any(keys.values()):
                assert await connector.lookup(keys) == rid
        return emulator

    async def body() -> None:
        emulators = [await one_round(seed) for seed in (21, 22, 23, 24)]
        faults = [f for e in emulators for f in e.fault_log]
        assert faults, "no fault was injected: the test proves nothing"
        if kinds == AMBIGUOUS:
            assert any(f.when == "after" for f in faults), "no write was faulted after it was applied"

    run(body())


def test_known_limits_give_no_429(harness: Harness, scenario: Scenario) -> None:
    async def body() -> None:
        limit = RateLimit(10, 0.1)
        emulator = harness.emulator(rate_limit=limit)
        connector = harness.connector(emulator, max_concurrency=8)
        emulator.seed(20, rng_seed=6)
        if can_pull(connector):
            await pull_all(connector)
        targets = [RawRecord(rid, rec) for rid, rec in emulator.contacts.items()]
        await asyncio.gather(*(scenario.probe(connector, t) for t in targets * 2))
        assert len(emulator.request_log) > 3 * limit.requests, "the budget was never exercised"
        assert emulator.count_status(429) == 0

    run(body())
