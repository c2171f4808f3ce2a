"""The emulator's webhook deliveries: GoHighLevel contact events, signed, posted to a URL.

As GoHighLevel does (docs: Webhook Integration Guide; facts in ``api.py``): a flat contact
payload with ``type``, ``locationId``, ``id``, ``timestamp`` and ``webhookId``; signed with
Ed25519 over the raw body in ``x-ghl-signature`` (base64) and, optionally, with the legacy
RSA-SHA256 in ``x-wh-signature``; retried only when answered 429, up to 6 times (about 10
minutes apart; ``retry_interval_s`` scales it for tests); any other answer is final. Deliveries
are known to be lossy and sometimes incomplete: ``drop_share`` of them are never sent and
``truncate_share`` arrive cut short.

The key pairs are the emulator's own test keys (:func:`emulator_keys`), never GoHighLevel's; a
receiver under test is configured with :func:`emulator_public_keys`. Inferred: a retried delivery
keeps its ``webhookId`` but carries a fresh ``timestamp`` (re-signed), otherwise no retry ~10
minutes later could pass the documented 5-minute window (``restamp_retries``).

Deliveries run on a thread of their own with its own event loop, so an emulator can emit
events from a request handler, a test or a bench thread alike.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import json
import random
import threading
import uuid
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from connectors.gohighlevel.api import (
    LEGACY_SIGNATURE_HEADER,
    SIGNATURE_HEADER,
    WEBHOOK_MAX_RETRIES,
    WEBHOOK_RETRY_INTERVAL_S,
)
from connectors.timestamps import iso_ms

JSON = dict[str, Any]

_ED25519_SEED = hashlib.sha256(b"contactsync emulator webhook test key (not GoHighLevel's)").digest()


@functools.cache
def emulator_keys() -> tuple[Ed25519PrivateKey, rsa.RSAPrivateKey]:
    """The emulator's test key pairs: a fixed Ed25519 key and an RSA-2048 key made once per
    process (private halves: only the emulator signs with them)."""
    return Ed25519PrivateKey.from_private_bytes(_ED25519_SEED), rsa.generate_private_key(65537, 2048)


def public_pem(key: Ed25519PrivateKey | rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def emulator_public_keys() -> dict[str, str]:
    """``{"ed25519_public_key": PEM, "rsa_public_key": PEM}`` of :func:`emulator_keys`, as a
    receiver's config takes them."""
    ed, rs = emulator_keys()
    return {"ed25519_public_key": public_pem(ed), "rsa_public_key": public_pem(rs)}


def sign(body: bytes, schemes: Sequence[str], ed25519: Ed25519PrivateKey, rsa_key: rsa.RSAPrivateKey) -> dict[str, str]:
    """The signature headers of ``body`` for ``schemes`` (``ed25519``, ``rsa``)."""
    headers: dict[str, str] = {}
    if "ed25519" in schemes:
        headers[SIGNATURE_HEADER] = base64.b64encode(ed25519.sign(body)).decode()
    if "rsa" in schemes:
        sig = rsa_key.sign(body, padding.PKCS1v15(), hashes.SHA256())
        headers[LEGACY_SIGNATURE_HEADER] = base64.b64encode(sig).decode()
    return headers


class WebhookSender:
    """Posts events to ``url`` (or through ``transport``, e.g. an ASGI app in a test)."""

    def __init__(
        self,
        url: str,
        *,
        schemes: Sequence[str] = ("ed25519",),
        ed25519_key: Ed25519PrivateKey | None = None,
        rsa_key: rsa.RSAPrivateKey | None = None,
        drop_share: float = 0.0,
        truncate_share: float = 0.0,
        retry_interval_s: float = WEBHOOK_RETRY_INTERVAL_S,
        max_retries: int = WEBHOOK_MAX_RETRIES,
        restamp_retries: bool = True,
        seed: int = 0,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        ed, rs = emulator_keys() if ed25519_key is None or ("rsa" in schemes and rsa_key is None) else (None, None)
        self.ed25519_key = ed25519_key or ed
        self.rsa_key = rsa_key or rs
        self.url = url
        self.schemes = tuple(schemes)
        self.drop_share = drop_share
        self.truncate_share = truncate_share
        self.retry_interval_s = retry_interval_s
        self.max_retries = max_retries
        self.restamp_retries = restamp_retries
        self._rng = random.Random(seed)
        self._transport = transport
        self._timeout_s = timeout_s
        self.stats: Counter[str] = Counter()  # emitted, dropped, truncated, delivered, retried, gave_up, failed
        self.statuses: Counter[int] = Counter()
        self.log: list[tuple[JSON, int | None]] = []  # (event, last status; None: dropped/failed)
        self._inflight = 0
        self._idle = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._client: httpx.AsyncClient | None = None
        self._thread = threading.Thread(target=self._run, name="ghl-webhooks", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._client = httpx.AsyncClient(transport=self._transport, timeout=self._timeout_s)
        self._loop.run_forever()

    def emit(self, event: JSON) -> None:
        """Queue one event (thread-safe). ``timestamp`` and ``webhookId`` are added here."""
        event = dict(event)
        event.setdefault("webhookId", str(uuid.UUID(int=self._rng.getrandbits(128), version=4)))
        event["timestamp"] = iso_ms(datetime.now(UTC))
        with self._idle:
            self.stats["emitted"] += 1
            if self._rng.random() < self.drop_share:
                self.stats["dropped"] += 1
                self.log.append((event, None))
                return
            truncate = self._rng.random() < self.truncate_share
            self._inflight += 1
        asyncio.run_coroutine_threadsafe(self._deliver(event, truncate), self._loop)

    async def _deliver(self, event: JSON, truncate: bool) -> None:
        status: int | None = None
        try:
            for attempt in range(self.max_retries + 1):
                if attempt:
                    self.stats["retried"] += 1
                    await asyncio.sleep(self.retry_interval_s)
                    if self.restamp_retries:
                        event["timestamp"] = iso_ms(datetime.now(UTC))
                body = json.dumps(event, separators=(",", ":")).encode()
                assert self.ed25519_key is not None and self.rsa_key is not None
                headers = {
                    "content-type": "application/json",
                    **sign(body, self.schemes, self.ed25519_key, self.rsa_key),
                }
                if truncate:
                    self.stats["truncated"] += 1
                    body = body[: max(1, len(body) // 2)]
                assert self._client is not None
                try:
                    response = await self._client.post(self.url, content=body, headers=headers)
                except httpx.HTTPError:
                    self.stats["failed"] += 1
                    status = None
                    break  # no answer: GoHighLevel does not retry it either (inferred)
                status = response.status_code
                self.statuses[status] += 1
                if status != 429:
                    if 200 <= status < 300:
                        self.stats["delivered"] += 1
                    break
            else:
                self.stats["gave_up"] += 1
        finally:
            with self._idle:
                self.log.append((event, status))
                self._inflight -= 1
                self._idle.notify_all()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued delivery has ended (delivered, refused or given up)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._inflight == 0, timeout)

    def close(self) -> None:
        async def shut() -> None:
            if self._client is not None:
                await self._client.aclose()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(shut(), self._loop).result(timeout=5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
