"""``contactsync status``: per connection the last run, cursor, counts, pending and failed
writes, excluded records with reasons; open conflicts and ambiguous matches."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from rich.console import Console

from sync.commands.common import open_store
from sync.commands.tables import Column, ago, describe_cursor, fit_table
from sync.config import Config
from sync.store import Store
from sync.store.models import OutboxStatus


def collect(config: Config, store: Store, *, detail: int = 10) -> dict[str, Any]:
    """Everything status shows, as plain JSON."""
    names = list(config.connections)
    queries = store.status
    outbox = store.outbox
    overview = queries.overview(names)
    counts = outbox.counts()
    last = overview.last_runs[0] if overview.last_runs else None
    held = store.held.counts()
    held_reasons = store.held.reasons()
    held_creates: dict[str, list[Any]] = {}
    for item in store.outbox.held(limit=None):
        held_creates.setdefault(item.connection, []).append(item)
    errors = last_errors(store, names)
    states = store.auth.states(names)
    out: dict[str, Any] = {
        "store": config.store_url_display,
        "persons": overview.persons,
        "last_runs": [
            {
                **r,
                "started_at": str(r["started_at"]),
                "finished_at": str(r["finished_at"]) if r["finished_at"] else None,
            }
            for r in overview.last_runs
        ],
        "connections": {},
        "open_conflicts": overview.open_conflicts,
        "open_reviews": overview.open_reviews,
    }
    for name in names:
        st = overview.connections.get(name)
        c = counts.get(name, {})
        failed = outbox.items([OutboxStatus.FAILED.value], connection=name, limit=detail)
        excluded = outbox.items([OutboxStatus.EXCLUDED.value], connection=name, limit=detail)
        last_pull = ((last or {}).get("counts") or {}).get("pull", {}).get(name) if last else None
        out["connections"][name] = {
            "platform": config.connections[name].platform,
            "enabled": config.connections[name].enabled,
            "records": st.records if st else 0,
            "linked": st.linked if st else 0,
            "deleted": st.deleted if st else 0,
            "invalid": st.invalid if st else 0,
            "quarantined": st.quarantined if st else 0,
            "future_stamped": st.future_stamped if st else 0,
            "quarantined_records": [
                {"remote_id": q.remote_id, "reason": q.reason, "at": str(q.created_at)}
                for q in store.staging.quarantined(name)[-detail:]
            ],
            "cursor": st.cursor if st else None,
            "cursor_text": (
                "lookup only: this platform has no listing to pull"
                if _lookup_only(config.connections[name].platform)
                else describe_cursor(st.cursor if st else None, st.checkpoint if st else None)
            ),
            "checkpoint": st.checkpoint if st else None,
            "last_pull": last_pull,
            "pending": c.get(OutboxStatus.PENDING.value, 0),
            "in_flight": c.get(OutboxStatus.IN_FLIGHT.value, 0),
            "failed": c.get(OutboxStatus.FAILED.value, 0),
            "excluded": c.get(OutboxStatus.EXCLUDED.value, 0),
            "done": c.get(OutboxStatus.DONE.value, 0),
            "failed_writes": [
                {
                    "id": i.id,
                    "op": i.op,
                    "person": i.person_id,
                    "remote_id": i.remote_id,
                    "attempts": i.attempts,
                    "error": i.last_error,
                    "next_attempt_at": str(i.next_attempt_at) if i.next_attempt_at else None,
                }
                for i in failed
            ],
            "excluded_records": [{"person": i.person_id, "reason": i.last_error} for i in excluded],
            "held": c.get(OutboxStatus.HELD.value, 0),
            "held_writes": [
                {"id": i.id, "op": i.op, "person": i.person_id, "reason": i.last_error}
                for i in held_creates.get(name, [])[:detail]
            ],
            "held_deletes": held.get(name, 0),
            "held_reasons": held_reasons.get(name, []),
            "last_error": errors.get(name),
            "auth": _auth_state(states.get(name)),
            "quota": _quota_state(states.get(name)),
            # contactsync probe's findings, and fields write verification found not writable
            "measured": [
                {"behaviour": m.behaviour, "variant": m.variant, "evidence": m.evidence, "at": str(m.measured_at)}
                for m in store.behaviours.findings(name)
            ],
            "unwritable": [
                {"field": u.field, "evidence": u.evidence, "at": str(u.detected_at)}
                for u in store.behaviours.unwritable_rows(name)
            ],
        }
    out["conflicts"] = [
        {
            "id": c.id,
            "person": c.person_id,
            "field": c.field,
            "rule": c.rule,
            "decision": c.decision,
            "candidates": c.candidates,
        }
        for c in queries.conflicts(open_only=True, limit=detail)
    ]
    out["reviews"] = [
        {"id": r.id, "kind": r.kind, "key": r.key, "records": r.records, "detail": r.detail}
        for r in queries.reviews(limit=detail)
    ]
    return out


def _auth_state(st: Any) -> dict[str, Any] | None:
    """A connection's OAuth state (None: never set): ``ok`` or ``needs_reauth`` with why."""
    if st is None:
        return None
    return {"state": st.auth_state, "reason": st.auth_reason}


def _quota_state(st: Any) -> dict[str, Any] | None:
    """A connection's daily quota as last seen, and its pause (None: never seen)."""
    if st is None or (st.daily_limit is None and st.quota_paused_until is None):
        return None
    paused = st.quota_paused_until is not None and st.quota_paused_until > datetime.now(UTC)
    return {
        "daily_limit": st.daily_limit,
        "daily_remaining": st.daily_remaining,
        "paused_until": str(st.quota_paused_until) if paused else None,
        "reason": st.quota_reason if paused else None,
    }


def connection_error(counts: dict[str, Any], name: str) -> str | None:
    """What went wrong for connection ``name`` in a run with these counts, in words; None when
    nothing did (or the run did not involve it)."""
    out: list[str] = []
    pull = (counts.get("pull") or {}).get(name) or {}
    if pull.get("error"):
        out.append(f"pull failed: {pull['error']}")
    breaker = (counts.get("breakers") or {}).get(name)
    blocked = (counts.get("blocked") or {}).get(name)
    if blocked:
        out.append(blocked)
    if breaker and not blocked:
        out.append(f"circuit breaker open: {breaker}")
    for phase in ("settled", "push"):
        r = (counts.get(phase) or {}).get(name) or {}
        if r.get("stopped") and not breaker:
            out.append(f"push stopped: {r['stopped']}")
        if r.get("failed"):
            last = (r.get("errors") or [""])[-1]
            out.append(f"{r['failed']} writes failed" + (f" (last: {last})" if last else ""))
        elif r.get("deferred"):
            last = (r.get("errors") or [""])[-1]
            out.append(f"{r['deferred']} writes left pending" + (f" (last: {last})" if last else ""))
    return "; ".join(out) or None


def involved(counts: dict[str, Any], name: str) -> bool:
    return any(name in (counts.get(k) or {}) for k in ("pull", "push", "settled", "breakers", "blocked"))


def last_errors(store: Store, names: list[str], *, look_back: int = 50) -> dict[str, str | None]:
    """Per connection, the error of the latest finished run that involved it (None: it went
    fine)."""
    out: dict[str, str | None] = {}
    for run in store.runs.recent_runs(look_back):
        if run.status == "running":
            continue
        for name in names:
            if name not in out and involved(run.counts, name):
                out[name] = connection_error(run.counts, name)
    return out


def show(config: Config, *, as_json: bool = False, console: Console | None = None) -> dict[str, Any]:
    """Print the status."""
    console = console or Console(width=_width())
    store = open_store(config)
    try:
        data = collect(config, store)
    finally:
        store.close()
    if as_json:
        console.print_json(json.dumps(data, default=str))
        return data
    console.print(f"store {data['store']}: {data['persons']} persons")
    if data["last_runs"]:
        r = data["last_runs"][0]
        console.print(
            f"last run #{r['id']} {r['kind']} of {r['profile']}: {r['status']} (started {ago(r['started_at'])})"
            + (f" error: {r['error']}" if r["error"] else "")
        )
    else:
        console.print("no run yet")
    # Most important first; on a narrow terminal the lowest ranks are left out (--json has all).
    columns = [
        Column("connection", wrap=True, keep=True, min_wrap=10),
        Column("records", justify="right", keep=True),
        Column("pending", justify="right", keep=True),
        Column("failed", justify="right", keep=True),
        Column("excluded", justify="right", rank=4),
        Column("held", justify="right", rank=5),
        Column("in flight", justify="right", rank=3),
        Column("linked", justify="right", rank=2),
        Column("deleted", justify="right", rank=1),
        Column("quarantined", justify="right", rank=0),
    ]
    rows = [
        [
            f"{name} ({c['platform']})" + ("" if c["enabled"] else " [disabled]"),
            *(
                str(c[k])
                for k in (
                    "records",
                    "pending",
                    "failed",
                    "excluded",
                    "held_deletes",
                    "in_flight",
                    "linked",
                    "deleted",
                    "quarantined",
                )
            ),
        ]
        for name, c in data["connections"].items()
    ]
    console.print(fit_table(columns, rows, console=console))
    for name, c in data["connections"].items():
        console.print(f"  {name} cursor: {c['cursor_text']}", highlight=False)
    for name, c in data["connections"].items():
        if (c.get("auth") or {}).get("state") == "needs_reauth":
            console.print(
                f"  [red]needs_reauth[/] {name}: {c['auth']['reason']} - its writes are stopped; "
                f"run contactsync connections authorize --connection {name} --code CODE",
                highlight=False,
            )
        if (c.get("quota") or {}).get("paused_until"):
            console.print(
                f"  [yellow]paused[/] {name}: daily quota spent, paused until {c['quota']['paused_until']} "
                f"({c['quota']['reason']})",
                highlight=False,
            )
        if c["last_error"]:
            console.print(f"  [red]last error[/] {name}: {c['last_error']}", highlight=False)
        if c["held_deletes"]:
            console.print(
                f"  [yellow]held[/] {name}: {c['held_deletes']} deletes held for review "
                "(contactsync deletes approve|reject)",
                highlight=False,
            )
            for reason in c["held_reasons"]:
                console.print(f"    reason: {reason}", highlight=False)
        if c["held"]:
            console.print(
                f"  [yellow]held[/] {name}: {c['held']} writes held for review (contactsync held release|reject)",
                highlight=False,
            )
            for h in c["held_writes"]:
                console.print(f"    #{h['id']} {h['op']} person {h['person']}: {h['reason']}", highlight=False)
    for name, c in data["connections"].items():
        for f in c["failed_writes"]:
            console.print(
                f"  [red]failed[/] {name} {f['op']} person {f['person']} (attempt {f['attempts']}, "
                f"retry at {f['next_attempt_at']}): {f['error']}",
                markup=True,
                highlight=False,
            )
        for e in c["excluded_records"]:
            console.print(f"  excluded {name} person {e['person']}: {e['reason']}", highlight=False)
        for q in c["quarantined_records"]:
            console.print(f"  quarantined {name} record {q['remote_id'] or '(no id)'}: {q['reason']}", highlight=False)
        for m in c["measured"]:
            console.print(f"  measured {name} {m['behaviour']} = {m['variant']} ({m['at']})", highlight=False)
        for u in c["unwritable"]:
            console.print(
                f"  [yellow]not writable[/] {name} {u['field']}: read only since {u['at']} ({u['evidence']})",
                highlight=False,
            )
        if c["future_stamped"]:
            console.print(
                f"  {name}: {c['future_stamped']} record(s) stamped in the future (not believed; cursor not moved)",
                highlight=False,
            )
    console.print(f"open conflicts: {data['open_conflicts']}   ambiguous matches / duplicates: {data['open_reviews']}")
    for c in data["conflicts"]:
        console.print(
            f"  conflict #{c['id']} person {c['person']} {c['field']}: decided {json.dumps(c['decision'])} "
            f"by {c['rule']}",
            highlight=False,
        )
    for r in data["reviews"]:
        console.print(f"  {r['kind']} #{r['id']} {r['key']}: {r['detail']}", highlight=False)
    return data


def _width() -> int | None:
    """The console width: the terminal's, or 80 columns off a terminal (pipes, files, tests)."""
    import sys

    from sync.commands.tables import DEFAULT_WIDTH

    return None if sys.stdout.isatty() else DEFAULT_WIDTH


def _lookup_only(platform: str) -> bool:
    """Whether the platform's connector can only look contacts up (DM Champ): no cursor."""
    from connectors.base import PullMode
    from connectors.registry import connector_class

    try:
        return bool(connector_class(platform).capabilities.pull_mode == PullMode.LOOKUP_ONLY)
    except Exception:  # noqa: BLE001 - an unknown platform is reported elsewhere
        return False
