"""``contactsync person KEY``: one person across platforms, as the web page's person page
shows it — the golden record and why each value is what it is, the record on each platform,
snapshots, and the history of writes, conflicts and merges. KEY is an email, a phone, a
person id or a name."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table

from sync.commands.common import CommandError, open_store
from sync.config import Config
from sync.fieldvalues import show_value


def show(config: Config, key: str, *, as_json: bool = False, console: Console | None = None) -> dict[str, Any]:
    """Print the person KEY names (several matches: the list of them, exit 2 unless --json)."""
    from sync.web.views import find_persons, person_report

    console = console or Console()
    store = open_store(config)
    try:
        hits = find_persons(store, config, key)
        if not hits:
            raise CommandError(f"no person matches {key!r} (give an email, a phone, a person id or a name)", 1)
        if len(hits) > 1:
            data: dict[str, Any] = {
                "matches": [
                    {
                        "person": h.person_id,
                        "name": f"{h.first_name or ''} {h.last_name or ''}".strip(),
                        "emails": h.emails,
                    }
                    for h in hits
                ]
            }
            if as_json:
                console.print_json(json.dumps(data))
                return data
            for h in hits:
                console.print(
                    f"person {h.person_id}: {h.first_name or ''} {h.last_name or ''} {', '.join(h.emails)}",
                    highlight=False,
                )
            raise CommandError(f"{len(hits)} persons match {key!r}; run again with one person id", 2)
        report = person_report(store, config, hits[0].person_id)
    finally:
        store.close()
    if as_json:
        console.print_json(json.dumps(report, default=str))
        return report
    _print(console, report)
    return report


def _print(console: Console, p: dict[str, Any]) -> None:
    merged = f" (person {p['asked']} was merged into it)" if p["asked"] != p["person"] else ""
    console.print(f"[bold]person {p['person']}[/]{merged}  version {p['version']}, updated {p['updated_at']}")
    golden = Table("field", "value", "why", title="golden record", title_justify="left")
    for g in p["golden"]:
        golden.add_row(g["field"], g["shown"], "\n".join(g["why"]) or "-")
    console.print(golden)
    records = Table("connection", "record", "fields as read", "state", title="on each platform", title_justify="left")
    for r in p["records"]:
        state = (
            f"deleted {r['deleted_at']}"
            if r["deleted_at"]
            else (f"merged into {r['merged_into']}" if r["merged_into"] else "live")
        )
        ident = r["remote_id"] + (f"\n{r['link']}" if r["link"] else "")
        fields = "\n".join(f"{k}: {show_value(v)}" for k, v in r["fields"].items())
        records.add_row(r["connection"], ident, fields, state)
    console.print(records)
    for conn, snap in p["snapshots"].items():
        values = ", ".join(f"{k}={show_value(v)}" for k, v in snap["fields"].items())
        console.print(f"snapshot {conn} ({snap['at']}): {values}", highlight=False)
    if p["writes"]:
        writes = Table("write", "connection", "op", "status", "values / message", title="writes", title_justify="left")
        for w in p["writes"]:
            values = ", ".join(f"{k}={show_value(v)}" for k, v in w["fields"].items())
            writes.add_row(
                f"#{w['id']}", w["connection"], w["op"], w["status"], values + (f"\n{w['error']}" if w["error"] else "")
            )
        console.print(writes)
    for c in p["conflicts"]:
        cands = ", ".join(f"{x.get('connection')}={show_value(x.get('value'))}" for x in c["candidates"])
        by = f" by {c['resolved_by']}" if c["resolved_by"] else ""
        console.print(
            f"conflict #{c['id']} {c['field']}: {cands} -> {show_value(c['decision'])} ({c['rule']}{by})",
            highlight=False,
        )
    for m in p["merges"]:
        console.print(f"merge: {m['detail']}", highlight=False)
    for r in p["reviews"]:
        console.print(f"{r['kind']} #{r['id']} {r['key']} ({r['status']}): {r['detail']}", highlight=False)
