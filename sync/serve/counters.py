"""In-process counters of what the listener did with each delivery, for ``/metrics``.

Keyed by (event type, verdict); the verdicts are :data:`VERDICTS`. Thread-safe: the listener
counts on its event loop, readers read from any thread."""

from __future__ import annotations

import threading
from collections import Counter

from sync import metrics

#: accepted: stored in the inbox (200) · ignored: a verified event of a type we do not sync,
#: or a location no connection holds (200, not stored) · bad_signature: missing, unknown scheme
#: or not verified (401) · stale: ``timestamp`` outside the window (400) · replay: a
#: ``webhookId`` seen before (400) · malformed: not a JSON object, a field missing or of the
#: wrong type, too large (400) · backpressure: the inbox is full (429, the platform retries).
VERDICTS: tuple[str, ...] = ("accepted", "ignored", "bad_signature", "stale", "replay", "malformed", "backpressure")


class WebhookCounters:
    """``count(type, verdict)``; read with :meth:`snapshot` ({(type, verdict): n}) or
    :meth:`total` (one verdict over every type). Unknown types are counted as ``unknown``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str]] = Counter()

    def count(self, event_type: str, verdict: str) -> None:
        with self._lock:
            self._counts[(event_type or "unknown", verdict)] += 1
        metrics.record_webhook(event_type or "unknown", verdict)  # contactsync_webhook_events_total

    def snapshot(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._counts)

    def total(self, verdict: str | None = None) -> int:
        with self._lock:
            return sum(n for (_, v), n in self._counts.items() if verdict is None or v == verdict)
