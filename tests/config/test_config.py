"""load_config: the example file, defaults, secrets, YAML-path errors, cross-checks, summary."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from connectors.base import ConnectionSettings, RateLimit
from sync.cli import app
from sync.config import ConfigError, load_config, mask_url, summarize

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_ENV = (
    "CONTACTSYNC_DATABASE_URL",
    "ACQUIRE_URL",
    "ACQUIRE_API_KEY",
    "DMCHAMP_URL",
    "DMCHAMP_API_KEY",
    "GHL_URL",
    "GHL_TOKEN",
    "GHL_LOCATION_ID",
    "COMM100_URL",
    "COMM100_TOKEN",
    "COMM100_SITE_ID",
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in EXAMPLE_ENV:
        monkeypatch.delenv(name, raising=False)


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent(body))
    return path


MINIMAL = """
connections:
  ghl:
    platform: gohighlevel
    base_url: http://127.0.0.1:8703/
    credentials: {token: "${GHL_TOKEN}"}
    options: {location_id: loc-1}
"""


def test_example_config_loads_on_a_fresh_machine() -> None:
    cfg = load_config(REPO / "config.example.yaml")
    assert set(cfg.connections) == {"acquire", "dmchamp", "ghl", "comm100"}
    assert cfg.store_url == f"sqlite:///{REPO / 'contactsync.db'}"
    assert cfg.connection_settings("ghl").base_url == "http://127.0.0.1:8703"
    assert cfg.warnings == []
    result = CliRunner().invoke(app, ["config", "check", "-c", str(REPO / "config.example.yaml")])
    assert result.exit_code == 0, result.output
    assert "ghl: gohighlevel at http://127.0.0.1:8703" in result.output
    assert "pit-emulator-0000-ghl-token" not in result.output


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GHL_TOKEN", "tok-123456")
    cfg = load_config(write(tmp_path, MINIMAL))
    assert cfg.store_url == f"sqlite:///{tmp_path.resolve() / 'contactsync.db'}"
    assert cfg.default_phone_region == "US"
    assert [(k.kind, k.strength) for k in cfg.matching.keys] == [
        ("email", "strong"),
        ("identity:*", "strong"),
        ("phone", "weak"),
    ]
    assert cfg.matching.duplicates == "link_oldest"
    assert cfg.matching.strength("identity:facebook") == "strong"
    assert cfg.conflicts.policy == "newest" and not cfg.conflicts.empty_erases
    assert cfg.conflicts.field_policy("tags") == "union" and cfg.conflicts.field_policy("first_name") == "newest"
    assert (cfg.deletes.policy, cfg.deletes.tag) == ("ignore", "contactsync:deleted")
    assert (cfg.merges.fallback, cfg.merges.tag) == ("tag", "contactsync:merged")
    profiles = cfg.effective_profiles()
    assert list(profiles) == ["default"]
    assert profiles["default"].connections == ["ghl"]
    assert profiles["default"].schedule.interval_seconds == 300 and profiles["default"].misfire_grace_seconds == 60
    assert (cfg.logging.level, cfg.logging.format) == ("INFO", "auto")


def test_connection_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GHL_TOKEN", "tok-123456")
    cfg = load_config(write(tmp_path, MINIMAL + "    rate_limit: {requests: 10, per_seconds: 1}\n    timeout_s: 5\n"))
    settings = cfg.connection_settings("ghl")
    assert isinstance(settings, ConnectionSettings)
    assert settings.credentials["token"].get_secret_value() == "tok-123456"
    assert settings.options == {"location_id": "loc-1", "version": "2021-07-28", "default_region": "US"}
    assert settings.rate_limit == RateLimit(10, 1.0)
    assert settings.timeout_s == 5 and settings.max_concurrency == 4 and settings.max_retries == 6
    assert cfg.mapping("ghl").platform == "gohighlevel"


def test_env_defaults_and_file_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "key.txt"
    secret.write_text("from-a-file\n")
    cfg = load_config(
        write(
            tmp_path,
            """
            connections:
              c100:
                platform: comm100
                base_url: ${C100_URL:-https://api15.comm100.io/v4}
                credentials:
                  agent_email: ${AGENT:-agent@example.com}
                  api_key: {file: key.txt}
                options: {site_id: 10000}
            """,
        )
    )
    creds = cfg.connection_settings("c100").credentials
    assert creds["api_key"].get_secret_value() == "from-a-file"
    assert creds["agent_email"].get_secret_value() == "agent@example.com"
    assert cfg.connections["c100"].base_url == "https://api15.comm100.io/v4"


def test_literal_secret_is_warned_about(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, MINIMAL.replace('"${GHL_TOKEN}"', "literal-token-value")))
    assert any("connections.ghl.credentials.token" in w and "literal" in w for w in cfg.warnings)
    assert "literal-token-value" not in summarize(cfg)


def test_database_url_env_overrides_and_password_is_masked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GHL_TOKEN", "tok-123456")
    monkeypatch.setenv("CONTACTSYNC_DATABASE_URL", "postgresql+psycopg://sync:s3cr3t-pw@db:5432/cs")
    cfg = load_config(write(tmp_path, MINIMAL))
    assert cfg.store_url == "postgresql+psycopg://sync:s3cr3t-pw@db:5432/cs"
    assert cfg.store_url_display == "postgresql+psycopg://sync:***@db:5432/cs"
    assert "s3cr3t-pw" not in summarize(cfg) and "s3cr3t-pw" in cfg.secret_values()
    assert mask_url("sqlite:///x.db") == "sqlite:///x.db"


def test_relative_sqlite_path_is_relative_to_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GHL_TOKEN", "tok-123456")
    cfg = load_config(write(tmp_path, "store: {url: 'sqlite:///data/cs.db'}\n" + MINIMAL))
    assert cfg.store_url == f"sqlite:///{tmp_path.resolve() / 'data/cs.db'}"


@pytest.mark.parametrize(
    ("body", "path", "expected"),
    [
        ("connections:\n  a: {platform: myspace, base_url: 'http://x'}\n", "connections.a.platform", "'acquire'"),
        (
            "connections:\n  a: {platform: acquire, base_url: 'ftp://x', credentials: {api_key: '${K:-k123}'}}\n",
            "connections.a.base_url",
            "http",
        ),
        (
            "connections:\n  a: {platform: acquire, base_url: 'http://x'}\n",
            "connections.a.credentials.api_key",
            "API key",
        ),
        (
            "connections:\n  a: {platform: acquire, base_url: 'http://x', credentials: {api_key: '${NOPE_NOT_SET}'}}\n",
            "connections.a.credentials.api_key",
            "NOPE_NOT_SET",
        ),
        (
            "connections:\n  a: {platform: acquire, base_url: 'http://x', credentials: {api_key: {file: /nonexistent/k}}}\n",
            "connections.a.credentials.api_key",
            "readable secret file",
        ),
        (
            "connections:\n  g: {platform: gohighlevel, base_url: 'http://x', credentials: {token: '${K:-k123}'}}\n",
            "connections.g.options.location_id",
            "location",
        ),
        (
            "connections:\n  c: {platform: comm100, base_url: 'http://x', credentials: {api_key: '${K:-k123}'}}\n",
            "connections.c.credentials",
            "agent_email",
        ),
        (
            "connections:\n  c: {platform: comm100, base_url: 'http://x', credentials: {agent_email: '${E:-a@b.c}', api_key: '${K:-k123}'}}\n",
            "connections.c.options.site_id",
            "site id",
        ),
        (
            "connections:\n  a: {platform: acquire, base_url: 'http://x', credentials: {api_key: '${K:-k123}'}, timeout_s: -1}\n",
            "connections.a.timeout_s",
            "greater than 0",
        ),
        (
            "connections:\n  a: {platform: acquire, base_url: 'http://x', credentials: {api_key: '${K:-k123}'}, colour: red}\n",
            "connections.a.colour",
            "unknown option",
        ),
        ("default_phone_region: XX\nconnections: {}\n", "default_phone_region", "ISO 3166"),
        ("connections: {}\n", "connections", "at least one connection"),
    ],
)
def test_errors_name_the_yaml_path(tmp_path: Path, body: str, path: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, body))
    message = str(info.value)
    assert message.startswith(path + ":") or f"\n{path}:" in message, message
    assert expected in message
    assert "found" in message


ACQ = "connections:\n  a: {platform: acquire, base_url: 'http://x', credentials: {api_key: '${K:-k123}'}}\n"


@pytest.mark.parametrize(
    ("extra", "path", "expected"),
    [
        ("conflicts: {policy: priority, priority: [a, zz]}\n", "conflicts.priority[1]", "'zz'"),
        ("conflicts: {policy: priority}\n", "conflicts.priority", "connection names"),
        ("conflicts: {fields: {nickname: newest}}\n", "conflicts.fields.nickname", "canonical field"),
        ("conflicts: {fields: {first_name: union}}\n", "conflicts.fields.first_name", "union"),
        ("conflicts: {policy: loudest}\n", "conflicts.policy", "'newest'"),
        ("matching: {keys: [{kind: fax}]}\n", "matching.keys[0].kind", "identity:"),
        ("matching: {duplicates: ignore}\n", "matching.duplicates", "'link_oldest'"),
        ("deletes: {policy: shred}\n", "deletes.policy", "'propagate'"),
        ("merges: {fallback: hide}\n", "merges.fallback", "'tag'"),
        ("profiles: {p: {connections: [b]}}\n", "profiles.p.connections[0]", "'b'"),
        ("profiles: {p: {schedule: {cron: 'every day'}}}\n", "profiles.p.schedule", "cron"),
        ("profiles: {p: {schedule: {interval_seconds: 5, cron: '* * * * *'}}}\n", "profiles.p.schedule", "exactly one"),
        ("logging: {format: xml}\n", "logging.format", "'json'"),
        ("planning: {workers: 0}\n", "planning.workers", "from 1 to 32"),
        ("planning: {workers: many}\n", "planning.workers", "auto"),
        ("connections_typo: {}\n", "connections_typo", "unknown option"),
    ],
)
def test_cross_checks_name_the_yaml_path(tmp_path: Path, extra: str, path: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, ACQ + extra))
    message = str(info.value)
    assert message.startswith(path + ":"), message
    assert expected in message


def test_bad_mapping_override_is_a_config_error(tmp_path: Path) -> None:
    # Two canonical fields written to one raw key cannot round-trip.
    body = textwrap.dedent(
        """
        connections:
          a:
            platform: acquire
            base_url: http://x
            credentials: {api_key: "${K:-k123}"}
            mapping_overrides: {fields: {first_name: {transform: identity}, last_name: {transform: identity}}}
        """
    )
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, body))
    assert str(info.value).startswith("connections.a.mapping_overrides:")
    assert "first_name" in str(info.value)


def test_profiles_schedule_and_disabled_connections(tmp_path: Path) -> None:
    body = (
        ACQ + "  b: {platform: dmchamp, base_url: 'http://y', credentials: {api_key: '${K:-k123}'}, enabled: false}\n"
    )
    cfg = load_config(
        write(tmp_path, body + "profiles: {nightly: {schedule: {cron: '0 3 * * *'}, misfire_grace_seconds: 600}}\n")
    )
    nightly = cfg.effective_profiles()["nightly"]
    assert nightly.connections == ["a"] and nightly.schedule.cron == "0 3 * * *"
    with pytest.raises(ConfigError, match=r"^profiles\.p\.connections\[0\]: expected an enabled connection"):
        load_config(write(tmp_path, body + "profiles: {p: {connections: [b]}}\n"))


def test_cli_exits_2_on_a_bad_config(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["config", "check", "-c", str(write(tmp_path, "connections: {}\n"))])
    assert result.exit_code == 2
    assert "connections: expected at least one connection" in result.output


def test_summary_lists_what_will_sync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GHL_TOKEN", "tok-123456")
    text = summarize(load_config(write(tmp_path, MINIMAL)))
    assert "ghl: gohighlevel at http://127.0.0.1:8703" in text
    assert "written through separate calls: tags" in text
    assert "default: ghl every 300s" in text
    assert "tok-123456" not in text


def test_gohighlevel_custom_field_ids_name_keys_in_the_mapping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GHL_TOKEN", "tok-123456")
    body = MINIMAL.replace(
        "options: {location_id: loc-1}", "options: {location_id: loc-1, custom_field_ids: {plan: F1}}"
    )
    cfg = load_config(write(tmp_path, body))
    assert cfg.warnings == []
    mapping = cfg.mapping("ghl")
    assert mapping.read({"customFields": [{"id": "F1", "value": "gold"}]}).fields == {"custom.plan": "gold"}
    assert cfg.connection_settings("ghl").options["custom_field_ids"] == {"plan": "F1"}
