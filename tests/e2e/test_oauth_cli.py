"""``contactsync connections authorize|discover`` and ``status`` against a GoHighLevel emulator on
a real loopback socket, and two real processes racing to refresh one agency token (each
``discover`` refreshes the expired token first): one refresh, no lost token."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.fernet import Fernet
from typer.testing import CliRunner

from connectors.gohighlevel.emulator import GoHighLevelEmulator
from connectors.loopback import LoopbackEmulators
from sync.cli import app
from sync.config import load_config
from sync.store import Store
from sync.store.auth import TOKEN_KEY_ENV, StoredTokens

INSTALLED = [
    {"_id": "ve9EPM428h8vShlRW1KT", "name": "Main Street", "address": "1 Main St", "isInstalled": True},
    {"_id": "loc2xxxxxxxxxxxxxxxx", "name": "Second Shop", "address": "2 Side St", "isInstalled": True},
]


@pytest.fixture
def served() -> Any:
    emus = LoopbackEmulators(
        {"ghl": lambda url: GoHighLevelEmulator(base_url=url, rate_scale=1000.0, installed_locations=INSTALLED)}
    ).start()
    yield emus
    emus.stop()


def _write(tmp_path: Path, url: str, db_url: str) -> Path:
    secret = tmp_path / "client_secret"
    secret.write_text("emulator-client-secret")
    cfg = {
        "store": {"url": db_url},
        "connections": {
            "agency": {
                "platform": "gohighlevel",
                "base_url": url,
                "enabled": False,
                "credentials": {
                    "oauth": {
                        "client_id": "${GHL_CLIENT_ID}",
                        "client_secret": {"file": str(secret)},
                        "user_type": "Company",
                        "app_id": "emu-app",
                    }
                },
            },
            "main": {
                "platform": "gohighlevel",
                "base_url": url,
                "credentials": {"oauth": {"agency": "agency"}},
                "options": {"location_id": "ve9EPM428h8vShlRW1KT"},
            },
        },
        "logging": {"level": "WARNING", "format": "json"},
    }
    path = tmp_path / "contactsync.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def test_cli_authorize_discover_status(
    served: Any, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ghl: GoHighLevelEmulator = served.emulators["ghl"]
    path = _write(tmp_path, served.urls["ghl"], db_url)
    monkeypatch.setenv("GHL_CLIENT_ID", "emulator-client-id")
    monkeypatch.delenv(TOKEN_KEY_ENV, raising=False)
    runner = CliRunner()
    code = served.call(lambda: ghl.issue_code("Company"))
    # Without a key nothing is stored, and the code is not spent.
    result = runner.invoke(app, ["connections", "authorize", "-c", str(path), "--connection", "agency", "--code", code])
    assert result.exit_code == 2 and TOKEN_KEY_ENV in result.output
    monkeypatch.setenv(TOKEN_KEY_ENV, Fernet.generate_key().decode())
    result = runner.invoke(app, ["connections", "authorize", "-c", str(path), "--connection", "agency", "--code", code])
    assert result.exit_code == 0, result.output
    assert "agency: authorized (Company" in result.output
    result = runner.invoke(app, ["connections", "discover", "-c", str(path)])
    assert result.exit_code == 0, result.output
    listed = yaml.safe_load(result.stdout)
    assert list(listed["connections"]) == ["ghl-Second-Shop"]
    result = runner.invoke(app, ["connections", "discover", "-c", str(path), "--write"])
    assert result.exit_code == 0, result.output
    config = load_config(path)
    assert config.options("ghl-Second-Shop")["location_id"] == "loc2xxxxxxxxxxxxxxxx"
    assert "${GHL_CLIENT_ID}" in path.read_text()  # references kept, no secret written
    store = Store.open(db_url)
    try:
        store.auth.mark_needs_reauth("main", "refresh token refused: invalid_grant")
    finally:
        store.close()
    result = runner.invoke(app, ["status", "-c", str(path)])
    assert result.exit_code == 0, result.output
    assert "needs_reauth" in result.output and "main" in result.output


def test_two_processes_refresh_one_agency_token_once(served: Any, db_url: str, tmp_path: Path) -> None:
    ghl: GoHighLevelEmulator = served.emulators["ghl"]
    path = _write(tmp_path, served.urls["ghl"], db_url)
    env = {**os.environ, "GHL_CLIENT_ID": "emulator-client-id", TOKEN_KEY_ENV: Fernet.generate_key().decode()}
    code = served.call(lambda: ghl.issue_code("Company"))
    cmd = [sys.executable, "-m", "sync.cli", "connections"]
    done = subprocess.run(
        [*cmd, "authorize", "-c", str(path), "--connection", "agency", "--code", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    os.environ[TOKEN_KEY_ENV] = env[TOKEN_KEY_ENV]  # this process reads the store too
    try:
        store = Store.open(db_url)
        try:
            first = store.auth.load("agency")
            assert first is not None
            store.auth.save(
                "agency", StoredTokens(**{**first.__dict__, "expires_at": datetime.now(UTC) - timedelta(seconds=1)})
            )
            ghl.token_delay_s = 0.5  # both processes are waiting on the refresh right meanwhile
            procs = [
                subprocess.Popen(
                    [*cmd, "discover", "-c", str(path)],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for _ in range(2)
            ]
            outs = [p.communicate(timeout=120) for p in procs]
            assert all(p.returncode == 0 for p in procs), outs
            refreshes = [t for g, t in ghl.token_requests if g == "refresh_token"]
            assert refreshes == [first.refresh_token]
            final = store.auth.load("agency")
            assert final is not None and final.refresh_token != first.refresh_token
            for out, err in outs:
                assert final.access_token not in out + err and (final.refresh_token or "") not in out + err
        finally:
            store.close()
    finally:
        os.environ.pop(TOKEN_KEY_ENV, None)
