"""``contactsync plan``: a dry run — pull, match and reconcile, then print the plan without
writing anything anywhere (nothing queued, no snapshot moved)."""

from __future__ import annotations

import json

from rich.console import Console

from sync.commands.common import open_store, setup_logging
from sync.config import Config
from sync.cycle import CycleReport, CycleRunner
from sync.plan.render import render_text


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
        report = CycleRunner(config, store).run(profile, dry_run=True, replan=replan)
        if report.plan is None:
            console.print(f"[red]planning failed:[/] {report.error or report.skipped}")
            return report
        if as_json:
            console.print_json(json.dumps(report.plan.to_json(), default=str))
        else:
            console.print(render_text(report.plan), markup=False, highlight=False)
        return report
    finally:
        store.close()
