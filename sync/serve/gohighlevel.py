"""``POST /webhooks/gohighlevel``: verify, check, store in the inbox, answer.

Order of checks: size, signature (401), JSON object with the contact event fields (400),
timestamp inside the window (400 stale), type and location (200 ignored: verified, but nothing
we sync), then one short store transaction that refuses a repeated ``webhookId`` (400 replay)
and a full inbox (429: GoHighLevel retries only on 429). Only an accepted event is stored, and
only after it is stored is it answered 200. Every verdict is counted (:class:`WebhookCounters`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from connectors.gohighlevel.api import CONTACT_EVENTS, LEGACY_SIGNATURE_HEADER, SIGNATURE_HEADER
from connectors.timestamps import parse_iso
from sync.config import Config, GoHighLevelWebhooksConfig
from sync.serve.counters import WebhookCounters
from sync.serve.signatures import Verifier
from sync.store import Store

log = structlog.get_logger("contactsync.webhooks")

PATH = "/webhooks/gohighlevel"
SOURCE = "gohighlevel"


def location_connections(config: Config) -> dict[str, str]:
    """GoHighLevel location id -> the enabled connection that holds it."""
    out: dict[str, str] = {}
    for name in config.enabled_connections():
        if config.connections[name].platform == "gohighlevel":
            location = config.options(name).get("location_id")
            if location:
                out.setdefault(str(location), name)
    return out


def _event_time(value: Any) -> datetime | None:
    """The payload's ``timestamp``: ISO-8601 (documented), or epoch seconds/milliseconds."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        seconds = value / 1000.0 if value > 1e11 else float(value)
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str) and value:
        try:
            moment = parse_iso(value)
        except (ValueError, TypeError):
            return None
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return None


def _id(value: Any) -> str | None:
    if isinstance(value, str) and 0 < len(value) <= 128 and value.isprintable():
        return value
    return None


class GoHighLevelReceiver:
    """The endpoint, bound to a store, the config's keys and limits, and the counters."""

    def __init__(
        self,
        store: Store,
        config: Config,
        counters: WebhookCounters,
        *,
        settings: GoHighLevelWebhooksConfig | None = None,
        on_event: Callable[[], None] | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self.store = store
        self.settings = settings or config.webhooks.gohighlevel
        self.verifier = Verifier.from_pem(self.settings.ed25519_public_key, self.settings.rsa_public_key)
        self.locations: Mapping[str, str] = location_connections(config)
        self.counters = counters
        self.on_event = on_event
        self.now = now or (lambda: datetime.now(UTC))

    def _answer(self, status: int, event_type: str, verdict: str, detail: str) -> Response:
        self.counters.count(event_type, verdict)
        if verdict not in ("accepted", "ignored"):
            log.info("webhook_refused", type=event_type, verdict=verdict, detail=detail)
        return JSONResponse({"status": verdict, "detail": detail}, status_code=status)

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        if len(body) > self.settings.max_body_bytes:
            return self._answer(400, "unknown", "malformed", "body too large")
        scheme = self.verifier.verify(
            body, request.headers.get(SIGNATURE_HEADER), request.headers.get(LEGACY_SIGNATURE_HEADER)
        )
        if scheme is None:
            return self._answer(401, "unknown", "bad_signature", "signature missing, of an unknown scheme or invalid")
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return self._answer(400, "unknown", "malformed", "body is not JSON")
        if not isinstance(payload, dict):
            return self._answer(400, "unknown", "malformed", "body is not a JSON object")
        event_type = payload.get("type")
        kind = event_type if isinstance(event_type, str) and event_type in CONTACT_EVENTS else "other"
        webhook_id = _id(payload.get("webhookId"))
        location = _id(payload.get("locationId"))
        remote_id = _id(payload.get("id"))
        moment = _event_time(payload.get("timestamp"))
        if not isinstance(event_type, str) or webhook_id is None or moment is None:
            return self._answer(400, kind, "malformed", "type, webhookId and timestamp are required")
        now = self.now()
        window = timedelta(seconds=self.settings.max_age_s)
        if moment < now - window or moment > now + window:
            return self._answer(400, kind, "stale", f"timestamp {moment.isoformat()} outside the window")
        if kind == "other":
            return self._answer(200, kind, "ignored", f"event type {event_type!r} is not synced")
        if location is None or remote_id is None:
            return self._answer(400, kind, "malformed", "locationId and id are required")
        connection = self.locations.get(location)
        if connection is None:
            return self._answer(200, kind, "ignored", "no enabled connection holds this location")
        verdict = await run_in_threadpool(
            self.store.inbox.add,
            source=SOURCE,
            webhook_id=webhook_id,
            connection=connection,
            event_type=event_type,
            remote_id=remote_id,
            payload=payload,
            event_at=moment,
            max_depth=self.settings.max_inbox_depth,
        )
        if verdict == "replay":
            return self._answer(400, kind, "replay", "webhookId seen before")
        if verdict == "full":
            return self._answer(429, kind, "backpressure", "inbox full; retry later")
        if self.on_event is not None:
            self.on_event()
        return self._answer(200, kind, "accepted", f"stored ({scheme})")
