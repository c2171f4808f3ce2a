"""``contactsync demo``: a guided tour on a fresh machine, no configuration needed.

1. Starts the four platform emulators on loopback, seeded with overlapping contacts: the same
   people with different email case and phone formats, a Comm100 merge, a contact DM Champ
   already has, one without a phone (DM Champ cannot hold it) and a company edited differently
   on two platforms (a conflict).
2. Runs a backfill into a SQLite file and prints what it matched, created, updated, merged and
   excluded, and which conflicts it decided and why.
3. Edits contacts on two platforms, runs an incremental cycle and shows the edits arriving
   everywhere. Exits 0 when every platform agrees.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from connectors.emulation import Emulator
from connectors.loopback import LoopbackEmulators, emulator_config
from connectors.registry import emulator_class
from sync.canonical import members, to_json_value
from sync.commands.tables import Column, fit_table
from sync.config import load_config
from sync.cycle import CycleReport, CycleRunner
from sync.plan import OpKind
from sync.store import Store, upgrade
from sync.store.models import OutboxStatus

# Rate-limit windows are shrunk by this factor so the tour takes seconds (stated in the output).
RATE_SCALE = 50.0

CONNECTIONS = {"acquire": "acquire", "dmchamp": "dmchamp", "ghl": "gohighlevel", "comm100": "comm100"}

# The same people, typed differently on each platform.
SEED: dict[str, list[dict[str, Any]]] = {
    "acquire": [
        {
            "first_name": "Ada",
            "last_name": "Lovelace",
            "email": "Ada.Lovelace@Example.com",
            "phone": "(415) 555-2671",
            "city": "London",
        },
        {"first_name": "Grace", "last_name": "Hopper", "email": "grace@navy.example", "phone": "+1 212 555 0100"},
        {"first_name": "Alan", "last_name": "Turing", "email": "alan@bletchley.example"},
    ],
    "ghl": [
        {
            "first_name": "Ada",
            "last_name": "Lovelace",
            "email": "ada.lovelace@example.com",
            "phone": "+14155552671",
            "company": "Analytical Engines",
        },
        {"first_name": "Linus", "last_name": "Torvalds", "email": "linus@kernel.example", "phone": "+1 503 555 0199"},
    ],
    "comm100": [
        {"first_name": "Ada", "last_name": "Lovelace", "email": "ADA.LOVELACE@EXAMPLE.COM", "company": "Babbage & Co"},
        {"first_name": "Grace", "last_name": "Hopper", "phone": "212-555-0100"},
        {"first_name": "Alan", "last_name": "Turing", "email": "alan@bletchley.example"},
        {"first_name": "Alan M.", "last_name": "Turing", "email": "turing@cambridge.example"},
    ],
    "dmchamp": [
        {"first_name": "Grace", "last_name": "H.", "phone": "+12125550100"},
    ],
}


def _factory(platform: str) -> Callable[[str], Emulator]:
    return lambda url: emulator_class(platform)(base_url=url, rate_scale=RATE_SCALE)


def _seed(emulators: Mapping[str, Emulator]) -> dict[str, list[str]]:
    ids = {name: emulators[name].seed(people) for name, people in SEED.items() if people}
    # The conflicting edit: Comm100's company for Ada is set after GoHighLevel's, so "newest" picks it.
    emulators["comm100"].clock.advance(60)
    c100 = emulators["comm100"]
    c100.external_edit(ids["comm100"][0], {"company": "Babbage & Co"})
    # The Comm100 merge: the second Alan Turing was merged into the first on Comm100 itself.
    c100.merge_contacts(ids["comm100"][2], ids["comm100"][3])  # type: ignore[attr-defined]
    return ids


def _ops_table(report: CycleReport) -> Table:
    columns = [
        Column("connection", keep=True),
        Column("created", justify="right", rank=5),
        Column("updated", justify="right", rank=6),
        Column("merged", justify="right", rank=4),
        Column("tagged", justify="right", rank=1),
        Column("deleted", justify="right", rank=2),
        Column("excluded", justify="right", rank=3),
        Column("write calls", justify="right", keep=True),
        Column("failed", justify="right", rank=0),
    ]
    plan = report.plan
    summary = plan.summary() if plan else {}
    rows = []
    for name in CONNECTIONS:
        ops = summary.get(name, {})
        push = report.applied.connections.get(name) if report.applied else None
        rows.append(
            [
                name,
                str(ops.get(OpKind.CREATE.value, 0)),
                str(ops.get(OpKind.UPDATE.value, 0)),
                str(ops.get(OpKind.MERGE.value, 0)),
                str(ops.get(OpKind.TAG.value, 0)),
                str(ops.get(OpKind.DELETE.value, 0)),
                str(ops.get(OpKind.EXCLUDE.value, 0)),
                str(push.write_calls if push else 0),
                str(push.failed if push else 0),
            ]
        )
    return fit_table(columns, rows, hint=None)


def _person_name(fields: Mapping[str, Any]) -> str:
    name = " ".join(str(fields[k]) for k in ("first_name", "last_name") if fields.get(k))
    emails = fields.get("emails") or []
    return f"{name or '?'} <{emails[0]}>" if emails else (name or "?")


def _show_matches(console: Console, store: Store) -> None:
    people = store.persons.with_records()
    rows = []
    for p in people:
        cells = []
        for conn in CONNECTIONS:
            recs = [r for r in p.records if r["connection"] == conn]
            text = ", ".join(
                r["remote_id"][:10]
                + (f" (merged into {r['merged_into'][:10]})" if r["merged_into"] else "")
                + (" (deleted)" if r["deleted"] and not r["merged_into"] else "")
                for r in recs
            )
            cells.append(text or "-")
        rows.append([str(p.person_id), _person_name(p.fields), *cells])
    columns = [
        Column("person", keep=True, justify="right"),
        Column("who", wrap=True, keep=True, min_wrap=14),
        *(Column(c, wrap=True, keep=True, min_wrap=10) for c in CONNECTIONS),
    ]
    console.print(fit_table(columns, rows, console=console))


def _show_conflicts(console: Console, report: CycleReport) -> None:
    if report.plan is None or not report.plan.conflicts:
        console.print("conflicts decided: none")
        return
    console.print("conflicts decided:")
    for c in report.plan.conflicts:
        cands = "; ".join(
            f"{x.connection} said {to_json_value(x.value)!r}" + (f" at {x.updated_at:%H:%M:%S}" if x.updated_at else "")
            for x in c.candidates
        )
        why = {
            "newest": "the newest edit wins",
            "union": "sets are united",
            "priority": "the most trusted connection wins",
        }
        rule = next((v for k, v in why.items() if c.rule.startswith(k)), c.rule)
        console.print(
            f"  person {c.person_id} {c.field}: {cands} -> {to_json_value(c.decision)!r} (rule {c.rule}: {rule})"
            + (" [needs review]" if c.needs_review else ""),
            highlight=False,
        )


def _show_exclusions(console: Console, store: Store) -> None:
    rows = store.outbox.items([OutboxStatus.EXCLUDED.value])
    if not rows:
        console.print("excluded: none")
        return
    console.print("excluded:")
    for r in rows:
        console.print(f"  person {r.person_id} on {r.connection}: {r.last_error}", highlight=False)


def _views(emulators: Mapping[str, Emulator], engine: CycleRunner, email: str, phone: str) -> dict[str, dict[str, Any]]:
    """How each platform holds one person now, read through the mappings."""
    out: dict[str, dict[str, Any]] = {}
    for name, emulator in emulators.items():
        mapping = engine.config.mapping(name)
        for raw in emulator.records():
            fields = mapping.read(raw).fields
            if email in members(fields.get("emails")) or phone in members(fields.get("phones")):
                out[name] = {
                    k: to_json_value(v)
                    for k, v in fields.items()
                    if k in ("first_name", "last_name", "address.city", "company")
                }
                break
    return out


def run_demo(*, workdir: Path | None = None, port: int = 0, console: Console | None = None) -> int:
    """Run the tour; returns the exit code (0 when the edits arrived everywhere)."""
    console = console or Console()
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="contactsync-demo-")
        workdir = Path(tmp.name)
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "demo.db"
    if db.exists():
        db.unlink()
    try:
        with LoopbackEmulators({n: _factory(p) for n, p in CONNECTIONS.items()}, port=port) as served:
            emulators = served.emulators
            ids = _seed(emulators)
            console.rule("contactsync demo")
            console.print(f"emulators on loopback (rate limits scaled x{RATE_SCALE:g}):")
            for name, url in served.urls.items():
                console.print(f"  {name:8} {url}  ({len(emulators[name].records())} contacts)")
            cfg_path = workdir / "demo.yaml"
            cfg = emulator_config(emulators, served.urls, f"sqlite:///{db}", secrets_dir=workdir / "secrets")
            cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
            console.print(f"config {cfg_path}\nstore  {db}")
            config = load_config(cfg_path)
            upgrade(config.store_url)
            store = Store.open(config.store_url)
            try:
                engine = CycleRunner(config, store)
                from sync.commands.backfill import backfill

                console.rule("1. backfill")
                report = backfill(config, engine=engine, console=console)
                console.print("matched (one row per person; each platform's record):")
                _show_matches(console, store)
                console.print(_ops_table(report))
                _show_conflicts(console, report)
                _show_exclusions(console, store)

                console.rule("2. edits on two platforms")
                ada_ghl = next(
                    r["id"] for r in emulators["ghl"].records() if r.get("email") == "ada.lovelace@example.com"
                )
                served.call(lambda: emulators["ghl"].external_edit(ada_ghl, {"lastName": "King"}))
                console.print("  GoHighLevel: Ada's last name -> King")
                grace_c100 = ids["comm100"][1]
                served.call(lambda: emulators["comm100"].external_edit(grace_c100, {"city": "Arlington"}))
                console.print("  Comm100:     Grace's city -> Arlington")

                console.rule("3. incremental cycle")
                cycle = engine.run("default")
                console.print(f"run {cycle.run_id}: {cycle.status}, {cycle.write_calls()} write calls")
                console.print(_ops_table(cycle))
                ada = _views(emulators, engine, "ada.lovelace@example.com", "+14155552671")
                grace = _views(emulators, engine, "grace@navy.example", "+12125550100")
                columns = [Column("platform", keep=True), *(Column(h, wrap=True, keep=True) for h in ("Ada", "Grace"))]
                rows = [[name, str(ada.get(name, "-")), str(grace.get(name, "-"))] for name in CONNECTIONS]
                console.print(fit_table(columns, rows, console=console))
                if len({str(v.get("company")) for v in ada.values() if "company" in v}) > 1:
                    console.print(
                        "  note: GoHighLevel's update API has no companyName (official spec, UpdateContactDto),\n"
                        "  so an existing GoHighLevel contact keeps its own company; new ones get it on create."
                    )
                arrived = all(v.get("last_name") == "King" for v in ada.values()) and all(
                    v.get("address.city") == "Arlington"
                    for n, v in grace.items()
                    if "address.city" in engine.config.mapping(n).readable
                )
                quiet = engine.run("default")
                console.print(f"a further cycle with no edits made {quiet.write_calls()} write calls")
                if arrived and cycle.status == "ok":
                    console.print("[green]every platform agrees.[/]")
                    return 0
                console.print("[red]the edits did not arrive everywhere[/]")
                return 1
            finally:
                store.close()
    finally:
        if tmp is not None:
            tmp.cleanup()
