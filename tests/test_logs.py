"""Logging: JSON lines, context variables, and secrets never reaching log output, exception
text, error messages or the config's own representations."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest
import structlog

from connectors.base import ConnectorError
from connectors.registry import connector_class, emulator_class
from sync.config import ConfigError, load_config
from sync.logs import configure_logging, get_logger, redact_text, register_secret

TOKEN = "pit-7f3c2e91-secret-token-value"


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GHL_TEST_TOKEN", TOKEN)
    path = tmp_path / "config.yaml"
    path.write_text(
        "connections:\n"
        "  ghl:\n"
        "    platform: gohighlevel\n"
        "    base_url: http://127.0.0.1:8703\n"
        "    credentials: {token: '${GHL_TEST_TOKEN}'}\n"
        "    options: {location_id: loc-1}\n"
        "  acq:\n"
        "    platform: acquire\n"
        "    base_url: http://127.0.0.1:8701\n"
        "    credentials: {api_key: literal-acquire-key-0042}\n"
    )
    return path


def _lines(err: str) -> list[dict]:
    return [json.loads(line) for line in err.splitlines() if line.startswith("{")]


def test_secrets_from_the_config_never_reach_log_output(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = load_config(config_file)
    configure_logging("DEBUG", "json", secrets=config.secret_values())
    log = get_logger("contactsync.test")
    structlog.contextvars.bind_contextvars(run_id=7)
    try:
        log.info(f"calling with {TOKEN}", headers={"Authorization": f"Bearer {TOKEN}"}, nested={"a": [TOKEN]})
        log.info("request", url="https://api.dmchamp.com/v1/contacts?apiKey=literal-acquire-key-0042&email=x")
        try:
            raise RuntimeError(f"server echoed {TOKEN}")
        except RuntimeError:
            log.exception("call failed")
        logging.getLogger("httpx").warning("stdlib says %s", TOKEN)
    finally:
        structlog.contextvars.clear_contextvars()
    err = capsys.readouterr().err
    assert TOKEN not in err and "literal-acquire-key-0042" not in err
    # A config warning (the literal credential) may come first, depending on whether an
    # earlier test configured logging already; look at this test's own events.
    events = [e for e in _lines(err) if e["event"] != "config_warning"]
    assert [e["event"] for e in events][:2] == ["calling with ***", "request"]
    assert events[0]["headers"] == {"Authorization": "***"} and events[0]["nested"] == {"a": ["***"]}
    assert events[0]["run_id"] == 7 and events[0]["logger_name"] == "contactsync.test"
    assert "apiKey=***" in events[1]["url"]
    assert "server echoed ***" in events[2]["exception"]
    assert "stdlib says ***" in err


def test_level_filters_and_console_format(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("WARNING", "console")
    log = get_logger("contactsync.test")
    log.info("quiet")
    log.warning("loud", token="abc12345")
    err = capsys.readouterr().err
    assert "quiet" not in err and "loud" in err and "abc12345" not in err


def test_config_representations_hide_secrets(config_file: Path) -> None:
    config = load_config(config_file)
    for text in (
        repr(config),
        str(config),
        config.model_dump_json(),
        str(config.model_dump()),
        repr(config.connection_settings("ghl")),
    ):
        assert TOKEN not in text and "literal-acquire-key-0042" not in text
    assert config.connection_settings("ghl").credentials["token"].get_secret_value() == TOKEN


def test_config_errors_never_carry_a_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GHL_TEST_TOKEN", TOKEN)
    path = tmp_path / "config.yaml"
    for bad in ("timeout_s: -1", "colour: red", "credentials: {token: {file: /nonexistent}}"):
        path.write_text(
            "connections:\n  ghl:\n    platform: gohighlevel\n    base_url: http://x\n"
            "    credentials: {token: '${GHL_TEST_TOKEN}', other: '" + TOKEN + "'}\n"
            "    options: {location_id: loc-1}\n    " + bad + "\n"
        )
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert TOKEN not in str(info.value)
    # A secret of the wrong type is reported without its value.
    path.write_text(
        "connections:\n  a: {platform: acquire, base_url: 'http://x', credentials: {api_key: [" + TOKEN + "]}}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert TOKEN not in str(info.value) and "connections.a.credentials.api_key" in str(info.value)


def test_connector_errors_never_carry_the_token(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("DEBUG", "json")
    emulator = emulator_class("acquire")(rate_limit=False)
    settings = emulator.connection_settings()
    wrong = "acq-wrong-key-but-still-secret-99"
    settings.credentials = {"api_key": __import__("pydantic").SecretStr(wrong)}
    connector = connector_class("acquire")(settings, transport=emulator.transport())

    async def go() -> None:
        try:
            await connector.get("1")
        finally:
            await connector.aclose()

    with pytest.raises(ConnectorError) as info:
        asyncio.run(go())
    assert wrong not in str(info.value) and wrong not in repr(info.value)
    assert wrong not in capsys.readouterr().err


def test_redact_text_masks_registered_and_inline_credentials() -> None:
    register_secret("s3cr3t-value-xyz")
    register_secret("ab")  # too short to mask safely: ignored
    assert redact_text("x s3cr3t-value-xyz y ab") == "x *** y ab"
    assert redact_text("Authorization: Bearer eyJhbGciOi.J9") == "Authorization: Bearer ***"
    assert redact_text("GET /contacts?apiKey=k-1&email=a") == "GET /contacts?apiKey=***&email=a"
