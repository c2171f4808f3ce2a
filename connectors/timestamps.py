"""ISO-8601 timestamps as the platforms spell them (UTC, milliseconds, ``Z``): shared by the
connectors and the emulators, so neither imports the other for them."""

from __future__ import annotations

from datetime import UTC, datetime


def iso_ms(moment: datetime) -> str:
    """ISO-8601 UTC with milliseconds and ``Z`` (``2020-09-09T10:01:36.000Z``)."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_iso(value: str) -> datetime:
    """Parse an ISO-8601 timestamp (``Z`` accepted) to an aware UTC datetime."""
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
