"""GoHighLevel OAuth credentials in the YAML: ``oauth: {...}`` flattened to ``oauth.*``
credentials, validated, plain settings never treated as secrets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sync.config import ConfigError, load_config


def _load(tmp_path: Path, credentials: dict[str, Any], options: dict[str, Any] | None = None) -> Any:
    cfg = {
        "connections": {
            "ghl": {
                "platform": "gohighlevel",
                "base_url": "https://services.leadconnectorhq.com",
                "credentials": credentials,
                **({"options": options} if options is not None else {}),
            }
        }
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return load_config(path)


def test_oauth_credentials_are_flattened_and_only_the_client_pair_is_secret(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("client-secret-value")
    config = _load(
        tmp_path,
        {
            "oauth": {
                "client_id": "${CID:-client-id-value}",
                "client_secret": {"file": "secret"},
                "user_type": "Location",
            }
        },
        {"location_id": "loc1"},
    )
    creds = config.connections["ghl"].credentials
    assert set(creds) == {"oauth.client_id", "oauth.client_secret", "oauth.user_type"}
    assert creds["oauth.client_secret"].get_secret_value() == "client-secret-value"
    secrets = config.secret_values()
    assert "client-secret-value" in secrets and "client-id-value" in secrets and "Location" not in secrets
    assert not any("literal secret" in w and "user_type" in w for w in config.warnings)


@pytest.mark.parametrize(
    ("credentials", "options", "message"),
    [
        ({}, {"location_id": "x"}, "token (a Private Integration token) or oauth"),
        (
            {"oauth": {"client_id": "${A:-abcd}", "client_secret": "${B:-efgh}", "user_type": "Agency"}},
            {"location_id": "x"},
            "Company or Location",
        ),
        ({"oauth": {"client_id": "${A:-abcd}", "client_secret": "${B:-efgh}"}}, None, "options.location_id"),
        ({"oauth": {"client_id": "${A:-abcd}"}}, {"location_id": "x"}, "oauth.client_id and oauth.client_secret"),
        ({"oauth": {"agency": "a", "bogus": "1"}}, {"location_id": "x"}, "unknown: oauth.bogus"),
        ({"token": "${T:-tokn}", "oauth": {"agency": "a"}}, {"location_id": "x"}, "either token or oauth"),
    ],
)
def test_bad_oauth_settings_are_named(tmp_path: Path, credentials: dict, options: dict | None, message: str) -> None:
    with pytest.raises(ConfigError, match="connections.ghl") as info:
        _load(tmp_path, credentials, options)
    assert message in str(info.value)


def test_an_agency_connection_needs_no_location(tmp_path: Path) -> None:
    config = _load(
        tmp_path, {"oauth": {"client_id": "${A:-abcd}", "client_secret": "${B:-efgh}", "user_type": "Company"}}
    )
    assert config.options("ghl").get("location_id") is None
