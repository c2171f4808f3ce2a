"""The ``http:`` and ``webhooks:`` sections of the configuration."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from connectors.gohighlevel.webhooks import emulator_keys, emulator_public_keys, sign
from sync.config import GOHIGHLEVEL_ED25519_PUBLIC_KEY, ConfigError, load_config
from sync.serve.signatures import BadPublicKey, Verifier

BASE = {
    "connections": {
        "ghl": {
            "platform": "gohighlevel",
            "base_url": "http://127.0.0.1:8703",
            "credentials": {"token": "${GHL_TOKEN:-t}"},
            "options": {"location_id": "loc1"},
        }
    }
}


def write(tmp_path: Path, **extra: object) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**BASE, **extra}))
    return path


def test_defaults_listen_on_loopback_and_trust_only_the_published_ed25519_key(tmp_path: Path) -> None:
    config = load_config(write(tmp_path))
    assert (config.http.enabled, config.http.host, config.http.port) == (False, "127.0.0.1", 8780)
    hooks = config.webhooks.gohighlevel
    assert hooks.enabled and hooks.max_age_s == 300 and hooks.max_inbox_depth == 10_000 and hooks.debounce_s < 1
    assert hooks.ed25519_public_key == GOHIGHLEVEL_ED25519_PUBLIC_KEY and hooks.rsa_public_key is None
    # The emulator's test signatures are refused by the published key (and an RSA one has no key).
    body = b'{"type": "ContactUpdate"}'
    headers = sign(body, ("ed25519", "rsa"), *emulator_keys())
    verifier = Verifier.from_pem(hooks.ed25519_public_key, hooks.rsa_public_key)
    assert verifier.verify(body, headers.get("x-ghl-signature"), headers.get("x-wh-signature")) is None


def test_public_keys_from_files(tmp_path: Path) -> None:
    keys = emulator_public_keys()
    (tmp_path / "ed.pem").write_text(keys["ed25519_public_key"])
    path = write(
        tmp_path,
        http={"enabled": True, "port": 0},
        webhooks={"gohighlevel": {"ed25519_public_key": {"file": "ed.pem"}, "max_age_s": 60}},
    )
    config = load_config(path)
    assert config.webhooks.gohighlevel.ed25519_public_key == keys["ed25519_public_key"].strip()
    assert config.http.port == 0


def test_unknown_keys_and_bad_values_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="webhooks.gohighlevel.max_age"):
        load_config(write(tmp_path, webhooks={"gohighlevel": {"max_age": 5}}))
    with pytest.raises(ConfigError, match="http.port"):
        load_config(write(tmp_path, http={"port": 70000}))
    with pytest.raises(BadPublicKey):
        Verifier.from_pem("not a key", None)


def test_a_listener_without_keys_is_warned_about(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, http={"enabled": True}))
    assert not any("every delivery will be refused" in w for w in config.warnings)  # the published key
    no_keys = {"gohighlevel": {"ed25519_public_key": None, "rsa_public_key": None}}
    config = load_config(write(tmp_path, http={"enabled": True}, webhooks=no_keys))
    assert any("every delivery will be refused" in w for w in config.warnings)
