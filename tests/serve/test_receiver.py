"""``POST /webhooks/gohighlevel``: what is stored, what is refused and how it is answered.

Signatures are made with the emulator's test key pairs (``connectors.gohighlevel.webhooks``);
the receiver is configured with their public halves. Nothing refused reaches the inbox, and
every verdict is counted."""

from __future__ import annotations

import base64
import json
import time
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from connectors.gohighlevel.webhooks import WebhookSender, emulator_keys, sign
from connectors.timestamps import iso_ms
from sync.serve import WebhookCounters, build_app
from tests.e2e.world import World

from .conftest import webhook_world

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's notice about httpx
    from starlette.testclient import TestClient

LOCATION = "ve9EPM428h8vShlRW1KT"  # the emulator's, in the world's config


def event(**overrides: Any) -> dict[str, Any]:
    body = {
        "type": "ContactUpdate",
        "locationId": LOCATION,
        "id": "ocQHyuzHvysMo5N5VsXc",
        "firstName": "Rosan",
        "email": "rosan@deos.com",
        "tags": ["a"],
        "dateAdded": "2026-01-01T00:00:00.000Z",
        "timestamp": iso_ms(datetime.now(UTC)),
        "webhookId": "b5f2c9d4-0000-4000-8000-000000000001",
    }
    body.update(overrides)
    return body


def signed(body: dict[str, Any] | bytes, schemes: tuple[str, ...] = ("ed25519",)) -> tuple[bytes, dict[str, str]]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    ed, rs = emulator_keys()
    return raw, {"content-type": "application/json", **sign(raw, schemes, ed, rs)}


class Receiver:
    def __init__(self, world: World) -> None:
        self.world = world
        self.counters = WebhookCounters()
        self.app = build_app(world.store, world.config, counters=self.counters)
        self.client = TestClient(self.app)

    def post(self, raw: bytes, headers: dict[str, str]) -> httpx.Response:
        return self.client.post("/webhooks/gohighlevel", content=raw, headers=headers)

    def send(self, body: dict[str, Any], schemes: tuple[str, ...] = ("ed25519",)) -> httpx.Response:
        return self.post(*signed(body, schemes))


@pytest.fixture
def receiver(world: World) -> Receiver:
    return Receiver(world)


def test_ed25519_signed_event_is_stored_and_answered_200(receiver: Receiver) -> None:
    r = receiver.send(event())
    assert r.status_code == 200, r.text
    pending = receiver.world.store.inbox.pending()
    assert [(e.connection, e.event_type, e.remote_id) for e in pending] == [
        ("ghl", "ContactUpdate", "ocQHyuzHvysMo5N5VsXc")
    ]
    assert pending[0].payload["firstName"] == "Rosan"
    assert receiver.counters.snapshot() == {("ContactUpdate", "accepted"): 1}


def test_legacy_rsa_signature_is_the_fallback(receiver: Receiver) -> None:
    assert receiver.send(event(), schemes=("rsa",)).status_code == 200
    # Both headers: the Ed25519 one decides.
    assert receiver.send(event(webhookId="w2"), schemes=("ed25519", "rsa")).status_code == 200
    assert receiver.world.store.inbox.depth() == 2


def _other_keys() -> tuple[Ed25519PrivateKey, rsa.RSAPrivateKey]:
    return Ed25519PrivateKey.generate(), rsa.generate_private_key(65537, 2048)


@pytest.mark.parametrize(
    "case",
    [
        "no_signature",
        "ed25519_other_key",
        "rsa_other_key",
        "body_changed",
        "signature_not_base64",
        "bad_ed25519_despite_good_rsa",
        "unknown_header_only",
    ],
)
def test_bad_signatures_are_401_and_never_stored(receiver: Receiver, case: str) -> None:
    body = event()
    raw, headers = signed(body, ("ed25519", "rsa"))
    other_ed, other_rsa = _other_keys()
    if case == "no_signature":
        headers = {"content-type": "application/json"}
    elif case == "ed25519_other_key":
        headers = sign(raw, ("ed25519",), other_ed, other_rsa)
    elif case == "rsa_other_key":
        headers = sign(raw, ("rsa",), other_ed, other_rsa)
    elif case == "body_changed":
        raw = raw.replace(b"Rosan", b"Mallory")
    elif case == "signature_not_base64":
        headers = {"x-ghl-signature": "not base64!!"}
    elif case == "bad_ed25519_despite_good_rsa":
        headers["x-ghl-signature"] = base64.b64encode(other_ed.sign(raw)).decode()
    elif case == "unknown_header_only":
        headers = {"x-hub-signature-256": "sha256=" + "0" * 64}
    r = receiver.post(raw, headers)
    assert r.status_code == 401, (case, r.text)
    assert receiver.world.store.inbox.depth() == 0
    assert receiver.counters.total("bad_signature") == 1


@pytest.mark.parametrize("age_s", [301, -301, 3600])
def test_a_timestamp_outside_the_window_is_refused(receiver: Receiver, age_s: int) -> None:
    moment = datetime.now(UTC) - timedelta(seconds=age_s)
    r = receiver.send(event(timestamp=iso_ms(moment)))
    assert r.status_code == 400 and r.json()["status"] == "stale"
    assert receiver.world.store.inbox.depth() == 0
    assert receiver.counters.snapshot() == {("ContactUpdate", "stale"): 1}


def test_the_window_is_configurable(db_url: str, tmp_path: Path) -> None:
    w = webhook_world(db_url, tmp_path, max_age_s=30)
    try:
        r = Receiver(w).send(event(timestamp=iso_ms(datetime.now(UTC) - timedelta(seconds=60))))
        assert r.status_code == 400 and r.json()["status"] == "stale"
        assert Receiver(w).send(event(timestamp=int(time.time() * 1000) - 10_000)).status_code == 200
    finally:
        w.close()


def test_a_repeated_webhook_id_is_refused(receiver: Receiver) -> None:
    assert receiver.send(event()).status_code == 200
    again = receiver.send(event(firstName="Changed"))  # same webhookId, new body, new signature
    assert again.status_code == 400 and again.json()["status"] == "replay"
    # Still a replay once the first is processed.
    receiver.world.store.inbox.mark_processed([e.id for e in receiver.world.store.inbox.pending()])
    assert receiver.send(event()).status_code == 400
    assert receiver.world.store.inbox.depth() == 0
    assert receiver.counters.total("replay") == 2


MALFORMED = {
    "not_json": lambda: b"{not json",
    "a_list": lambda: b"[1, 2]",
    "not_utf8": lambda: b"\xff\xfe",
    "no_webhook_id": lambda: json.dumps(event(webhookId=None)).encode(),
    "bad_timestamp": lambda: json.dumps(event(timestamp="yesterday")).encode(),
    "no_id": lambda: json.dumps({k: v for k, v in event().items() if k != "id"}).encode(),
    "id_a_number": lambda: json.dumps(event(id=7)).encode(),
    "empty_location": lambda: json.dumps(event(locationId="")).encode(),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_bodies_are_400_and_never_stored(receiver: Receiver, case: str) -> None:
    # Built in the test, not at collection: the timestamp must be fresh.
    r = receiver.post(*signed(MALFORMED[case]()))
    assert r.status_code == 400, r.text
    assert r.json()["status"] == "malformed"
    assert receiver.world.store.inbox.depth() == 0
    assert receiver.counters.total("malformed") == 1


def test_events_we_do_not_sync_are_answered_200_and_not_stored(receiver: Receiver) -> None:
    assert receiver.send(event(type="OpportunityCreate")).status_code == 200
    assert receiver.send(event(locationId="another-location", webhookId="w3")).status_code == 200
    assert receiver.world.store.inbox.depth() == 0
    assert receiver.counters.total("ignored") == 2


def test_a_full_inbox_answers_429_and_the_emulator_retries(db_url: str, tmp_path: Path) -> None:
    w = webhook_world(db_url, tmp_path, max_inbox_depth=1)
    try:
        receiver = Receiver(w)
        assert receiver.send(event(webhookId="first")).status_code == 200
        assert receiver.send(event(webhookId="second")).status_code == 429
        assert w.store.inbox.depth() == 1 and receiver.counters.total("backpressure") == 1
        # GoHighLevel retries a 429 (the emulator, interval scaled): once the inbox drains,
        # the retry is stored.
        sender = WebhookSender(
            "http://daemon/webhooks/gohighlevel", transport=httpx.ASGITransport(app=receiver.app), retry_interval_s=0.1
        )
        try:
            sender.emit(event(webhookId="third"))
            deadline = time.monotonic() + 5
            while sender.statuses[429] < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            w.store.inbox.mark_processed([e.id for e in w.store.inbox.pending()])
            assert sender.flush(10)
        finally:
            sender.close()
        assert sender.statuses[429] >= 2 and sender.statuses[200] == 1, sender.statuses
        assert sender.stats["delivered"] == 1 and sender.stats["retried"] >= 2
        assert [e.webhook_id for e in w.store.inbox.pending()] == ["third"]
    finally:
        w.close()


def test_the_emulator_gives_up_after_six_retries(db_url: str, tmp_path: Path) -> None:
    w = webhook_world(db_url, tmp_path, max_inbox_depth=1)
    try:
        receiver = Receiver(w)
        assert receiver.send(event(webhookId="first")).status_code == 200
        sender = WebhookSender(
            "http://daemon/webhooks/gohighlevel", transport=httpx.ASGITransport(app=receiver.app), retry_interval_s=0.01
        )
        try:
            sender.emit(event(webhookId="never"))
            assert sender.flush(10)
        finally:
            sender.close()
        assert sender.statuses == {429: 7} and sender.stats["gave_up"] == 1
    finally:
        w.close()


def test_truncated_and_dropped_deliveries_never_reach_the_inbox(receiver: Receiver) -> None:
    transport = httpx.ASGITransport(app=receiver.app)
    dropped = WebhookSender("http://d/webhooks/gohighlevel", transport=transport, drop_share=1.0)
    cut = WebhookSender("http://d/webhooks/gohighlevel", transport=transport, truncate_share=1.0, seed=1)
    try:
        dropped.emit(event(webhookId="d1"))
        cut.emit(event(webhookId="c1"))
        assert dropped.flush(5) and cut.flush(5)
    finally:
        dropped.close()
        cut.close()
    assert dropped.stats["dropped"] == 1 and not dropped.statuses
    assert cut.statuses == {401: 1}
    assert receiver.world.store.inbox.depth() == 0
