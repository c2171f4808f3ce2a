"""GoHighLevel OAuth marketplace mode (issue 16, item 4), on SQLite and PostgreSQL: tokens in the
store (encrypted, never logged), refresh rotation with two racing processes (threads with their
own store connections: one refresh, no lost token), ``invalid_grant`` -> ``needs_reauth``
(status shows it, no writes to the connection), agency location tokens and ``discover``."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml
from cryptography.fernet import Fernet

from connectors.acquire.emulator import AcquireEmulator
from connectors.gohighlevel.emulator import GoHighLevelEmulator
from connectors.gohighlevel.oauth import NeedsReauth
from connectors.loopback import emulator_config
from sync.apply import Backoff
from sync.auth import token_provider
from sync.commands import connections as conncmd
from sync.commands.status import collect
from sync.config import Config, load_config
from sync.cycle import CycleRunner
from sync.store import Store
from sync.store.auth import TOKEN_KEY_ENV, StoredTokens, TokenKeyMissing

from helpers import run

RATE_SCALE = 1000.0
CLIENT_ID, CLIENT_SECRET = "emulator-client-id", "emulator-client-secret"


@pytest.fixture(autouse=True)
def token_key(monkeypatch: pytest.MonkeyPatch) -> str:
    key = Fernet.generate_key().decode()
    monkeypatch.setenv(TOKEN_KEY_ENV, key)
    return key


def _config(
    db_url: str, tmp_path: Path, ghl: GoHighLevelEmulator, acq: AcquireEmulator, *, agency: bool = False
) -> Config:
    emus = {"ghl": ghl, "acquire": acq}
    cfg = emulator_config(emus, {n: e.base_url for n, e in emus.items()}, db_url, secrets_dir=tmp_path / "secrets")
    (tmp_path / "secrets" / "client_secret").write_text(CLIENT_SECRET)
    oauth: dict[str, Any] = {
        "client_id": CLIENT_ID,
        "client_secret": {"file": str(tmp_path / "secrets" / "client_secret")},
    }
    if agency:
        cfg["connections"]["agency"] = {
            "platform": "gohighlevel",
            "base_url": ghl.base_url,
            "enabled": False,
            "credentials": {"oauth": {**oauth, "user_type": "Company", "app_id": "emu-app"}},
            "options": {"refresh_margin_s": 1.0},
        }
        cfg["connections"]["ghl"]["credentials"] = {"oauth": {"agency": "agency"}}
    else:
        cfg["connections"]["ghl"]["credentials"] = {"oauth": oauth}
    path = tmp_path / "contactsync.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return load_config(path)


def _world(
    db_url: str, tmp_path: Path, *, agency: bool = False, **ghl_kwargs: Any
) -> tuple[Config, Store, CycleRunner, GoHighLevelEmulator, AcquireEmulator]:
    ghl = GoHighLevelEmulator(rate_scale=RATE_SCALE, **ghl_kwargs)
    acq = AcquireEmulator(rate_scale=RATE_SCALE)
    config = _config(db_url, tmp_path, ghl, acq, agency=agency)
    store = Store.open(db_url)
    transports = {"ghl": ghl.transport(), "acquire": acq.transport(), "agency": ghl.transport()}
    runner = CycleRunner(config, store, transports=transports, backoff=Backoff(base_s=0.0))
    return config, store, runner, ghl, acq


def _writes(emu: Any) -> int:
    return sum(
        1
        for e in emu.request_log
        if e.method in ("POST", "PUT", "DELETE") and "/contacts" in e.path and "search" not in e.path
    )


def test_tokens_are_encrypted_and_refused_without_a_key(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = StoredTokens("at-secret-access-1234", "rt-secret-refresh-5678", datetime.now(UTC) + timedelta(days=1))
    store.auth.save("ghl", tokens)
    raw = store.auth.raw_row("ghl")
    assert raw is not None
    flat = repr(raw)
    assert "at-secret-access-1234" not in flat and "rt-secret-refresh-5678" not in flat
    assert "secret" not in repr(store.auth.load("ghl"))  # the repr hides the tokens
    loaded = store.auth.load("ghl")
    assert loaded is not None and loaded.access_token == "at-secret-access-1234"
    monkeypatch.delenv(TOKEN_KEY_ENV)
    with pytest.raises(TokenKeyMissing, match=TOKEN_KEY_ENV):
        store.auth.save("other", tokens)
    with pytest.raises(TokenKeyMissing, match=TOKEN_KEY_ENV):
        store.auth.load("ghl")


def test_authorize_sync_and_refresh_rotation_without_token_in_logs(db_url: str, tmp_path: Path) -> None:
    """The code's access token expires (2 s, refreshed a tenth of that before its end); the next
    cycle rotates the pair once — proactively, no request ever sees a 401 — and writes with the
    new access token; the cycle after it spends nothing.

    Only the authorization's token is short-lived, and the test waits for its end on the
    store's own freshness test, not for a guessed number of seconds: the tokens issued by the
    refresh live an hour. With every token 2 s, a cycle slowed past 1.8 s by CPU load (backfills
    took up to 3.9 s with four busy loops on two cores) rotated a second time — legitimately, each
    refresh token spent once — and the assertion of one refresh failed."""
    config, store, runner, ghl, acq = _world(db_url, tmp_path, token_ttl_s=2.0)
    margin = float(config.options("ghl")["refresh_margin_s"])
    assert margin == pytest.approx(0.2)
    try:
        acq.seed(3)
        with structlog.testing.capture_logs() as logs:
            code = ghl.issue_code("Location")
            msg = conncmd.authorize(config, "ghl", code, store=store, transport=ghl.transport())
            assert "authorized (Location" in msg
            first = store.auth.load("ghl")
            assert first is not None
            ghl.token_ttl_s = 3600.0  # the rotated tokens: no load outlives them
            # Wait for the code's token to be due by the provider's own test (expiry - margin).
            while first.fresh(margin):
                time.sleep(0.05)
            report = runner.run("default", kind="backfill", full=True)
            assert report.status == "ok", report.error
            assert len(ghl.contacts) == 3  # written with the rotated OAuth access token
            rotated = store.auth.load("ghl")
            assert rotated is not None
            report = runner.run("default")  # the rotated token is fresh: nothing to spend
            assert report.status == "ok", report.error
        now = store.auth.load("ghl")
        assert now is not None and now.refresh_token != first.refresh_token and now.version == first.version + 1
        assert now == rotated
        refreshes = [t for g, t in ghl.token_requests if g == "refresh_token"]
        assert refreshes == [first.refresh_token]  # spent once, the new one stored
        assert ghl.count_status(401) == 0  # refreshed before the expired token was sent
        assert now.refresh_token in ghl._refresh  # the stored refresh token is the live one
        text = repr(logs) + msg + repr(report.counts()) + str(report.error)
        for secret in (first.access_token, first.refresh_token, now.access_token, now.refresh_token):
            assert secret and secret not in text
    finally:
        store.close()


def _race(db_url: str, config: Config, ghl: GoHighLevelEmulator, n: int) -> list[str]:
    """``n`` threads, each with its own Store (own connections) and provider, ask for a token
    at once while the stored one is expired."""
    barrier = threading.Barrier(n)
    results: list[str] = []
    errors: list[BaseException] = []

    def one() -> None:
        store = Store.open(db_url)
        try:
            provider = token_provider(config, store, "ghl", transports={"ghl": ghl.transport()})

            async def go() -> str:
                try:
                    return await provider.access_token()
                finally:
                    await provider.aclose()

            barrier.wait()
            results.append(asyncio.run(go()))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return results


def test_two_processes_racing_spend_the_refresh_token_once(db_url: str, tmp_path: Path, store: Store) -> None:
    config, own, _runner, ghl, _acq = _world(db_url, tmp_path)
    own.close()
    code = ghl.issue_code("Location")
    conncmd.authorize(config, "ghl", code, store=store, transport=ghl.transport())
    seeded = store.auth.load("ghl")
    assert seeded is not None
    # Expired in the store: every racer wants to refresh; the token endpoint is slow.
    store.auth.save("ghl", StoredTokens(**{**seeded.__dict__, "expires_at": datetime.now(UTC) - timedelta(seconds=1)}))
    ghl.token_delay_s = 0.3
    results = _race(db_url, config, ghl, 4)
    refreshes = [t for g, t in ghl.token_requests if g == "refresh_token"]
    assert refreshes == [seeded.refresh_token], refreshes  # one refresh, by one racer
    final = store.auth.load("ghl")
    assert final is not None
    assert set(results) == {final.access_token}  # every racer got the rotated token
    # No lost token: the stored refresh token is the live one (the emulator accepts it).
    ghl.token_delay_s = 0.0
    store.auth.save("ghl", StoredTokens(**{**final.__dict__, "expires_at": datetime.now(UTC) - timedelta(seconds=1)}))
    assert len(set(_race(db_url, config, ghl, 2))) == 1
    assert [t for g, t in ghl.token_requests if g == "refresh_token"] == [seeded.refresh_token, final.refresh_token]


def test_invalid_grant_puts_the_connection_in_needs_reauth(db_url: str, tmp_path: Path) -> None:
    config, store, runner, ghl, acq = _world(db_url, tmp_path)
    try:
        acq.seed(2)
        conncmd.authorize(config, "ghl", ghl.issue_code("Location"), store=store, transport=ghl.transport())
        tokens = store.auth.load("ghl")
        assert tokens is not None
        store.auth.save("ghl", StoredTokens(**{**tokens.__dict__, "expires_at": datetime.now(UTC)}))
        ghl.revoke_refresh_tokens()
        report = runner.run("default", kind="backfill", full=True)
        assert report.status == "partial"
        assert "needs_reauth" in (report.error or "")
        assert store.auth.states(["ghl"])["ghl"].auth_state == "needs_reauth"
        assert _writes(ghl) == 0 and not ghl.contacts
        # The next cycle leaves it alone: no request at all; acquire still syncs.
        before = len(ghl.request_log)
        report = runner.run("default")
        assert report.status == "partial" and "ghl: needs_reauth" in (report.error or "")
        assert len(ghl.request_log) == before
        status = collect(config, store)
        assert status["connections"]["ghl"]["auth"]["state"] == "needs_reauth"
        # A new authorization clears it; the writes go out.
        conncmd.authorize(config, "ghl", ghl.issue_code("Location"), store=store, transport=ghl.transport())
        assert store.auth.states(["ghl"])["ghl"].auth_state == "ok"
        report = runner.run("default", replan=True)
        assert report.status == "ok", report.error
        assert len(ghl.contacts) == 2
    finally:
        store.close()


def test_agency_token_derives_location_tokens_and_discover(db_url: str, tmp_path: Path) -> None:
    installed = [
        {"_id": "ve9EPM428h8vShlRW1KT", "name": "Main Street", "address": "1 Main St", "isInstalled": True},
        {"_id": "loc2xxxxxxxxxxxxxxxx", "name": "Second Shop", "address": "2 Side St", "isInstalled": True},
        {"_id": "loc3xxxxxxxxxxxxxxxx", "name": "Gone", "address": "", "isInstalled": False},
    ]
    config, store, runner, ghl, acq = _world(db_url, tmp_path, agency=True, installed_locations=installed)
    try:
        acq.seed(2)
        msg = conncmd.authorize(config, "agency", ghl.issue_code("Company"), store=store, transport=ghl.transport())
        assert "Company" in msg
        report = runner.run("default", kind="backfill", full=True)
        assert report.status == "ok", report.error
        assert len(ghl.contacts) == 2  # written with a location token derived from the agency's
        assert store.auth.load("ghl") is not None
        agency, entries, locations = conncmd.discover(config, store=store, transport=ghl.transport())
        assert agency == "agency" and len(locations) == 2
        assert list(entries) == ["ghl-Second-Shop"]  # the configured location is skipped
        entry = entries["ghl-Second-Shop"]
        assert entry["options"] == {"location_id": "loc2xxxxxxxxxxxxxxxx"}
        assert entry["credentials"] == {"oauth": {"agency": "agency"}}
        # The agency's refresh token refused: its locations are left alone with that reason.
        store.auth.mark_needs_reauth("agency", "refresh token refused: invalid_grant")
        before = len(ghl.request_log)
        report = runner.run("default")
        assert report.status == "partial" and "ghl: needs_reauth (its agency connection agency" in (report.error or "")
        assert len(ghl.request_log) == before
        text = conncmd.render(entries, locations)
        assert "# Second Shop" in text and CLIENT_SECRET not in text
        assert config.path is not None
        backup = conncmd.write(config.path, entries)
        assert backup.exists()
        reloaded = load_config(config.path)
        assert reloaded.options("ghl-Second-Shop")["location_id"] == "loc2xxxxxxxxxxxxxxxx"
    finally:
        store.close()


def test_oauth_connection_without_tokens_needs_authorize(db_url: str, tmp_path: Path) -> None:
    config, store, _runner, ghl, _acq = _world(db_url, tmp_path)
    try:
        provider = token_provider(config, store, "ghl", transports={"ghl": ghl.transport()})
        with pytest.raises(NeedsReauth, match="connections authorize"):
            run(provider.access_token())
        run(provider.aclose())
    finally:
        store.close()


def test_a_rejected_access_token_is_refreshed_once_and_the_call_retried(db_url: str, tmp_path: Path) -> None:
    config, store, runner, ghl, acq = _world(db_url, tmp_path)
    try:
        acq.seed(2)
        conncmd.authorize(config, "ghl", ghl.issue_code("Location"), store=store, transport=ghl.transport())
        first = store.auth.load("ghl")
        assert first is not None
        ghl.expire_access_tokens()  # the store still believes the token good for a day
        report = runner.run("default", kind="backfill", full=True)
        assert report.status == "ok", report.error
        assert len(ghl.contacts) == 2
        assert [g for g, _ in ghl.token_requests].count("refresh_token") == 1
        now = store.auth.load("ghl")
        assert now is not None and now.access_token != first.access_token
    finally:
        store.close()


def test_the_refresh_right_is_exclusive_and_waits_are_bounded(db_url: str, store: Store) -> None:
    from sync.store.auth import RefreshBusy

    tokens = StoredTokens("at-1234567", "rt-1234567", datetime.now(UTC))
    store.auth.save("ghl", tokens)
    other = Store.open(db_url)  # another process: its own connections
    try:
        held = store.auth.begin_refresh("ghl")
        with pytest.raises(RefreshBusy):
            other.auth.begin_refresh("ghl", wait_s=0.3)
        new = StoredTokens("at-7654321", "rt-7654321", datetime.now(UTC) + timedelta(days=1))
        saved = held.commit(new)
        assert saved.version == held.tokens.version + 1
        second = other.auth.begin_refresh("ghl", wait_s=5)
        assert second.tokens.refresh_token == "rt-7654321"  # re-read under the right: nothing to spend
        second.release()
        with pytest.raises(KeyError):
            other.auth.begin_refresh("nothing-stored", wait_s=0.1)
    finally:
        other.close()


def test_a_lease_left_by_a_dead_process_expires(db_url: str, store: Store, store_kind: str) -> None:
    if store_kind != "sqlite":
        pytest.skip("PostgreSQL's row lock ends with the dead process's connection")
    store.auth.save("ghl", StoredTokens("at-1234567", "rt-1234567", datetime.now(UTC)))
    store.auth.begin_refresh("ghl", lease_s=0.2)  # never released: its process "died"
    other = Store.open(db_url)
    try:
        time.sleep(0.3)
        handle = other.auth.begin_refresh("ghl", wait_s=1)
        handle.commit(StoredTokens("at-new-1234", "rt-new-1234", datetime.now(UTC) + timedelta(days=1)))
        loaded = other.auth.load("ghl")
        assert loaded is not None and loaded.refresh_token == "rt-new-1234"
    finally:
        other.close()
