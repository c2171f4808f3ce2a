"""Connection descriptions shaped like the four platforms, for pure reconcile tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from connectors.base import Capabilities, PullMode
from sync.canonical import FieldDict
from sync.reconcile import ConnectionInfo

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def _one_email(fields: FieldDict) -> FieldDict:
    """DM Champ keeps one email and one phone."""
    out = dict(fields)
    for name in ("emails", "phones"):
        if out.get(name):
            out[name] = tuple(out[name])[:1]  # type: ignore[arg-type]
    return out


ACQ_FIELDS = frozenset({"first_name", "last_name", "emails", "phones", "address.city", "custom.*"})
GHL_FIELDS = frozenset({"first_name", "last_name", "emails", "phones", "company", "tags", "do_not_disturb", "custom.*"})
C100_FIELDS = frozenset({"first_name", "last_name", "emails", "phones", "company", "identities"})
DM_FIELDS = frozenset({"first_name", "last_name", "emails", "phones", "do_not_disturb"})

CONNECTIONS = {
    "acq": ConnectionInfo(
        "acq",
        ACQ_FIELDS | {"tags"},
        ACQ_FIELDS,
        ACQ_FIELDS,  # tags read-only there
        Capabilities(PullMode.FULL_SCAN, can_merge=True),
    ),
    "ghl": ConnectionInfo(
        "ghl",
        GHL_FIELDS,
        GHL_FIELDS,
        GHL_FIELDS,
        Capabilities(PullMode.CHANGE_FEED, tags_via_endpoint=True),
    ),
    "c100": ConnectionInfo("c100", C100_FIELDS, C100_FIELDS, C100_FIELDS, Capabilities(PullMode.FULL_SCAN)),
    "dm": ConnectionInfo(
        "dm",
        DM_FIELDS,
        DM_FIELDS,
        DM_FIELDS - {"phones"},
        Capabilities(PullMode.LOOKUP_ONLY, can_delete=False, required_for_create=("phones",)),
        shape=_one_email,
    ),
}
