"""``contactsync plan``: a dry run — pull, match and reconcile, then print the plan without
writing anything anywhere (nothing queued, no snapshot moved)."""

from __future__ import annotations

import json

from rich.console import Console

from sync.canonical import to_json_value
from sync.commands.common import open_store, setup_logging
from sync.config import Config
from sync.engine import CycleReport, Engine
from sync.plan import OpKind, Plan


def render_plan(plan: Plan, *, limit: int = 50) -> str:
    """A Plan as text: per connection the ops with their field changes, then the conflicts."""
    try:  # the planner's own rendering, when it has one
        from sync.planning import render_text  # type: ignore[attr-defined]

        return str(render_text(plan))
    except ImportError:
        pass
    lines: list[str] = []
    if plan.is_empty() and not plan.ops:
        return "nothing to do"
    for conn, ops in plan.by_connection().items():
        counts = plan.summary().get(conn, {})
        lines.append(f"{conn}: " + ", ".join(f"{k} {n}" for k, n in counts.items()))
        for op in ops[:limit]:
            target = f" {op.remote_id}" if op.remote_id else ""
            if op.kind is OpKind.EXCLUDE:
                lines.append(f"  exclude person {op.person_id}: {op.reason}")
                continue
            lines.append(f"  {op.kind.value}{target} (person {op.person_id})")
            for name in sorted(op.fields):
                before = to_json_value(op.before.get(name)) if name in op.before else None
                after = to_json_value(op.fields[name])
                lines.append(f"    {name}: {json.dumps(before)} -> {json.dumps(after)}" if op.before else f"    {name}: {json.dumps(after)}")
        if len(ops) > limit:
            lines.append(f"  ... {len(ops) - limit} more")
    for c in plan.conflicts[:limit]:
        cands = ", ".join(f"{x.connection}={json.dumps(to_json_value(x.value))}" for x in c.candidates)
        flag = " (needs review)" if c.needs_review else ""
        lines.append(f"conflict person {c.person_id} {c.field}: {cands} -> {json.dumps(to_json_value(c.decision))} by {c.rule}{flag}")
    return "\n".join(lines)


def plan(
    config: Config,
    *,
    profile: str = "default",
    as_json: bool = False,
    console: Console | None = None,
    replan: bool = False,
) -> CycleReport:
    """Run a dry cycle and print its plan."""
    console = console or Console()
    setup_logging(config, level="WARNING")
    store = open_store(config)
    try:
        report = Engine(config, store).run(profile, dry_run=True, replan=replan)
        if report.plan is None:
            console.print(f"[red]planning failed:[/] {report.error or report.skipped}")
            return report
        if as_json:
            console.print_json(json.dumps(report.plan.to_json(), default=str))
        else:
            console.print(render_plan(report.plan), markup=False, highlight=False)
        return report
    finally:
        store.close()
