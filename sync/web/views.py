"""What the pages show, as plain data built from the store and the config (no HTTP here).

``contactsync person`` prints :func:`person_report` too, so the terminal and the page say the
same thing about one person.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sync.commands.status import collect
from sync.config import Config
from sync.fieldvalues import expected, show_value
from sync.normalize import InvalidValue, normalize_email, normalize_phone
from sync.store import Store
from sync.store.operator import NotFound, PersonHit

#: GoHighLevel has a contact page per location; the others' web apps are reached by their own
#: URLs (``web.record_links`` in the config).
_DEFAULT_LINKS = {"gohighlevel": "https://app.gohighlevel.com/v2/location/{location_id}/contacts/detail/{remote_id}"}


def record_link(config: Config, connection: str, remote_id: str) -> str | None:
    """The contact's page on its platform, when known (``web.record_links`` or a default)."""
    conn = config.connections.get(connection)
    template = config.web.record_links.get(connection)
    values: dict[str, Any] = {"remote_id": remote_id}
    if conn is not None:
        values.update({k: v for k, v in (conn.options or {}).items() if isinstance(v, (str, int))})
        template = template or _DEFAULT_LINKS.get(conn.platform)
    if not template:
        return None
    try:
        link = template.format(**values)
    except (KeyError, IndexError, ValueError):
        return None
    return link if link.startswith(("https://", "http://")) else None


def next_run(config: Config, profile: str, last_started: datetime | None, now: datetime) -> datetime | None:
    """When the daemon next runs ``profile``, from its schedule (interval after the last run's
    start, or the cron expression's next time)."""
    prof = config.effective_profiles().get(profile)
    if prof is None:
        return None
    sched = prof.schedule
    if sched.interval_seconds:
        if last_started is None:
            return now
        at = last_started + timedelta(seconds=sched.interval_seconds)
        return max(at, now)
    if sched.cron:
        from apscheduler.triggers.cron import CronTrigger

        trigger = CronTrigger.from_crontab(sched.cron, timezone=UTC)
        fire: datetime | None = trigger.get_next_fire_time(None, now)
        return fire
    return None


def ago(when: datetime | None, now: datetime) -> str:
    """``3m ago`` / ``in 2m`` / ``never``."""
    if when is None:
        return "never"
    delta = (now - when).total_seconds()
    word = "ago" if delta >= 0 else ""
    s = abs(delta)
    if s < 90:
        text = f"{s:.0f}s"
    elif s < 5400:
        text = f"{s / 60:.0f}m"
    elif s < 172800:
        text = f"{s / 3600:.1f}h"
    else:
        text = f"{s / 86400:.1f}d"
    return f"{text} {word}".strip() if word else f"in {text}"


@dataclass
class RunBar:
    """One run in the runs-over-time chart."""

    id: int
    status: str
    kind: str
    started_at: datetime
    seconds: float
    x: float
    height: float


def overview(store: Store, config: Config) -> dict[str, Any]:
    """Per profile and connection: what the overview page shows."""
    now = datetime.now(UTC)
    data = collect(config, store)
    cursors = {n: c.cursor_updated_at for n, c in store.status.overview(list(config.connections)).connections.items()}
    profiles = []
    for name, prof in config.effective_profiles().items():
        runs = store.operator.runs(name, limit=40)
        finished = [r for r in runs if r.status != "running"]
        last = runs[0] if runs else None
        success = store.operator.last_success(name)
        sched = prof.schedule
        when = f"every {sched.interval_seconds:g}s" if sched.interval_seconds else f"cron '{sched.cron}' (UTC)"
        upcoming = next_run(config, name, last.started_at if last else None, now)
        bars: list[RunBar] = []
        durations = [((r.finished_at or now) - r.started_at).total_seconds() for r in reversed(runs)]
        top = max(durations, default=1.0) or 1.0
        for i, (r, secs) in enumerate(zip(reversed(runs), durations, strict=True)):
            bars.append(RunBar(r.id, r.status, r.kind, r.started_at, secs, i * 14, max(2.0, 60 * secs / top)))
        conns = []
        for cname in prof.connections or config.enabled_connections():
            c = data["connections"].get(cname, {})
            cursor_at = cursors.get(cname)
            pull = c.get("last_pull") or {}
            conns.append(
                {
                    "name": cname,
                    "platform": c.get("platform"),
                    "enabled": c.get("enabled", True),
                    "records": c.get("records", 0),
                    "last_pull": ago(last.started_at, now) if (last and pull) else "never",
                    "last_pull_detail": pull,
                    "cursor_lag": ago(cursor_at, now) if cursor_at else "no cursor yet",
                    "pending": c.get("pending", 0),
                    "in_flight": c.get("in_flight", 0),
                    "failed": c.get("failed", 0),
                    "excluded": c.get("excluded", 0),
                    "held": c.get("held_deletes", 0),
                    "quarantined": c.get("quarantined", 0),
                    "last_error": c.get("last_error"),
                }
            )
        profiles.append(
            {
                "name": name,
                "schedule": when,
                "last_run": last,
                "last_run_ago": ago(last.started_at, now) if last else "never",
                "last_success": ago(success, now) if success else "never",
                "next_run": ago(upcoming, now) if upcoming else "not scheduled",
                "next_run_at": upcoming,
                "runs": runs,
                "finished": len(finished),
                "bars": bars,
                "connections": conns,
            }
        )
    return {
        "now": now,
        "persons": data["persons"],
        "open_conflicts": data["open_conflicts"],
        "open_reviews": data["open_reviews"],
        "profiles": profiles,
    }


# -- persons ------------------------------------------------------------------------------------


def find_persons(store: Store, config: Config, key: str) -> list[PersonHit]:
    """Persons by a key typed by a person: an id (digits, or ``#12``), an email, a phone, or a
    name."""
    key = key.strip()
    if not key:
        return []
    bare = key.lstrip("#")
    if bare.isdigit() and len(bare) < 12:
        try:
            return store.operator.search("id", bare)
        except NotFound:
            return []
    if "@" in key:
        try:
            return store.operator.search("email", normalize_email(key))
        except InvalidValue:
            return []
    if any(ch.isdigit() for ch in key) and not any(ch.isalpha() for ch in key):
        try:
            return store.operator.search("phone", normalize_phone(key, config.default_phone_region))
        except InvalidValue:
            return []
    return store.operator.search("name", key)


def _json_time(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value else None


def person_report(store: Store, config: Config, person_id: int) -> dict[str, Any]:
    """One person as plain JSON: golden record with the reason for each value, the record on
    each platform (as read through its mapping, with a link), snapshots, and the history of
    writes, conflicts and merges."""
    d = store.operator.person(person_id)
    records = []
    held: dict[str, dict[str, Any]] = {}
    for r in d.records:
        fields: dict[str, Any] = {}
        try:
            from sync.canonical import fields_to_json

            fields = fields_to_json(config.mapping(r.connection).read(r.payload).fields)
        except Exception:  # noqa: BLE001  # a connection no longer configured, or an odd payload
            fields = {}
        live = r.deleted_at is None and r.merged_into is None
        if live:
            held[r.connection] = fields
        records.append(
            {
                "connection": r.connection,
                "platform": config.connections[r.connection].platform if r.connection in config.connections else None,
                "remote_id": r.remote_id,
                "link": record_link(config, r.connection, r.remote_id),
                "fields": fields,
                "updated_at": _json_time(r.updated_at),
                "seen_at": _json_time(r.seen_at),
                "deleted_at": _json_time(r.deleted_at),
                "merged_into": r.merged_into,
                "invalid": r.invalid,
            }
        )
    writes: list[dict[str, Any]] = [
        {
            "id": w.id,
            "connection": w.connection,
            "op": w.op,
            "status": w.status,
            "fields": w.fields,
            "attempts": w.attempts,
            "error": w.last_error,
            "remote_id": w.remote_id or w.result_remote_id,
            "at": _json_time(w.updated_at),
            "person": w.person_id,
        }
        for w in d.writes
    ]
    conflicts = [
        {
            "id": c.id,
            "field": c.field,
            "candidates": c.candidates,
            "decision": c.decision,
            "rule": c.rule,
            "needs_review": c.needs_review,
            "resolved_by": c.resolved_by,
            "resolved_at": _json_time(c.resolved_at),
            "at": _json_time(c.created_at),
        }
        for c in d.conflicts
    ]
    golden = []
    for name in sorted(d.fields):
        value = d.fields[name]
        why: list[str] = []
        latest = next((c for c in conflicts if c["field"] == name), None)
        if latest is not None:
            cands = ", ".join(f"{c.get('connection')}={show_value(c.get('value'))}" for c in latest["candidates"])
            if latest["resolved_by"]:
                why.append(f"conflict #{latest['id']} resolved by {latest['resolved_by']} (candidates {cands})")
            else:
                why.append(f"conflict #{latest['id']} decided by rule {latest['rule']} among {cands}")
        holders = [c for c, f in held.items() if f.get(name) == value]
        if holders:
            why.append("held on " + ", ".join(holders))
        missing = [c for c, f in held.items() if name in f and f.get(name) != value]
        if missing:
            why.append("differs on " + ", ".join(missing) + " (a write is due or the field is not synced there)")
        sent = next((w for w in writes if w["status"] == "done" and w["fields"].get(name) == value), None)
        if sent is not None:
            why.append(f"written to {sent['connection']} by write #{sent['id']} ({sent['op']}, {sent['at']})")
        golden.append({"field": name, "value": value, "shown": show_value(value), "type": expected(name), "why": why})
    merges = [
        {"what": "person", "detail": f"person {p} was folded into person {d.person_id} (a merge)"} for p in d.folded
    ]
    merges += [
        {"what": "record", "detail": f"{r['connection']} {r['remote_id']} was merged into {r['merged_into']}"}
        for r in records
        if r["merged_into"]
    ]
    merges += [
        {"what": "write", "detail": f"write #{w['id']}: {w['op']} on {w['connection']} ({w['status']})"}
        for w in writes
        if w["op"] == "merge"
    ]
    return {
        "person": d.person_id,
        "asked": d.asked,
        "version": d.version,
        "updated_at": _json_time(d.updated_at),
        "dirty": d.dirty,
        "golden": golden,
        "records": records,
        "snapshots": {c: {"fields": s["fields"], "at": _json_time(s["updated_at"])} for c, s in d.snapshots.items()},
        "writes": writes,
        "conflicts": conflicts,
        "merges": merges,
        "reviews": [
            {"id": r.id, "kind": r.kind, "key": r.key, "status": r.status, "detail": r.detail} for r in d.reviews
        ],
    }
