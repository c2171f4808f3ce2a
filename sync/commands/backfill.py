"""``contactsync backfill``: one full pull, reconcile and push, with a progress bar per
connection. Resumable: the pull continues from the last committed page of an interrupted
backfill (the cursor checkpoint), and the push from the outbox."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from sync.commands.common import CommandError, check_connection, check_profile, open_store, setup_logging
from sync.config import Config
from sync.cycle import CycleReport, CycleRunner
from sync.plan.render import render_text


class _Bars:
    """One pull bar and one push bar per connection."""

    def __init__(self, progress: Progress, connections: list[str]) -> None:
        self.progress = progress
        self.tasks: dict[tuple[str, str], Any] = {}
        for name in connections:
            self.tasks[("pull", name)] = progress.add_task(f"pull {name}", total=None)
        for name in connections:
            self.tasks[("push", name)] = progress.add_task(f"push {name}", total=None)

    def __call__(self, phase: str, connection: str, n: int) -> None:
        if phase in ("pull_total", "push_total"):  # the platform's count, or the plan's writes
            task = self.tasks.get((phase.removesuffix("_total"), connection))
            if task is not None:
                done = self.progress.tasks[task].completed
                self.progress.update(task, total=max(n, int(done)))
            return
        task = self.tasks.get((phase, connection))
        if task is not None:
            self.progress.advance(task, n)

    def finish(self) -> None:
        """At the end, a bar without a total (a push; a lookup-only pull) ends full at its count."""
        for task in self.progress.tasks:
            if task.total is None or task.total < task.completed:
                self.progress.update(task.id, total=task.completed)


def backfill(
    config: Config,
    *,
    connection: str | None = None,
    dry_run: bool = False,
    profile: str = "default",
    console: Console | None = None,
    engine: CycleRunner | None = None,
    replan: bool = False,
    as_json: bool = False,
    progress_console: Console | None = None,
) -> CycleReport:
    """Run the backfill and print what it did (the summary, or with ``as_json`` the run as
    JSON, on ``console``: stdout by default; the progress bars on ``progress_console``: stderr
    by default, or ``console`` when only that is given); raises CommandError when it failed."""
    progress_console = progress_console or console or Console(stderr=True)
    console = console or Console()
    check_connection(config, connection)
    check_profile(config, profile)
    setup_logging(config)
    own = engine is None
    engine = engine or CycleRunner(config, open_store(config))
    try:
        names = engine.profile_connections(profile)
        if connection is not None and connection not in names:
            raise CommandError(f"connection {connection!r} is not in profile {profile!r}", 2)
        shown = [connection] if connection else names
        with (
            _stop_on_signals() as stop,
            Progress(
                SpinnerColumn(),
                TextColumn("{task.description:<20}"),
                BarColumn(bar_width=20),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=progress_console,
                transient=False,
            ) as progress,
        ):
            bars = _Bars(progress, shown)
            report = engine.run(
                profile,
                kind="backfill",
                full=True,
                dry_run=dry_run,
                only=[connection] if connection else None,
                progress=bars,
                replan=replan,
                stop=stop,
            )
            if report.status == "ok":
                bars.finish()
        if as_json:
            console.print_json(json.dumps(report_json(report), default=str))
        else:
            print_report(report, console)
            if dry_run and report.plan is not None:
                console.print(render_text(report.plan))
        if report.status == "failed":
            raise CommandError(f"backfill failed: {report.error}", 1)
        return report
    finally:
        if own:
            engine.store.close()


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """SIGTERM and a first Ctrl-C ask the backfill to stop (it winds down and is recorded as
    ``interrupted``); a second Ctrl-C interrupts at once (still recorded as ``interrupted``).
    Outside the main thread no handler can be installed: the event is never set."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def report_json(report: CycleReport) -> dict[str, Any]:
    """A run as plain JSON (``backfill --json``)."""
    return {
        "run_id": report.run_id,
        "profile": report.profile,
        "kind": report.kind,
        "status": report.status,
        "duration_s": report.duration_s,
        "skipped": report.skipped,
        "error": report.error,
        "counts": report.counts(),
    }


def print_report(report: CycleReport, console: Console) -> None:
    """A short human summary of a cycle."""
    if report.skipped:
        console.print(f"[yellow]skipped:[/] {report.skipped}")
        return
    held = {n: p for n, p in report.pulls.items() if p.held}
    console.print(f"run {report.run_id} ({report.kind}): [bold]{report.status}[/] in {report.duration_s:.1f}s")
    for name, pull in sorted(report.pulls.items()):
        if pull.skipped:
            console.print(f"  pull {name}: {pull.skipped}")
            continue
        console.print(
            f"  pull {name}: {pull.records} records ({pull.inserted} new, {pull.changed} changed), "
            f"{pull.quarantined} quarantined, {len(pull.deleted)} deleted"
            + (f", {pull.held} deletes held" if pull.held else "")
            + (f"  [red]{pull.error}[/]" if pull.error else ""),
            highlight=False,
        )
    if report.plan is not None:
        for name, ops in report.plan.summary().items():
            console.print(f"  plan {name}: " + ", ".join(f"{k} {n}" for k, n in ops.items()))
        if report.plan.conflicts:
            console.print(f"  conflicts decided: {len(report.plan.conflicts)}")
    if report.applied is not None:
        for name, r in sorted(report.applied.connections.items()):
            line = f"  push {name}: {r.done} done, {r.failed} failed, {r.write_calls} write calls"
            if r.stopped:
                line += f"  [red]{r.stopped}[/]"
            console.print(line)
    if report.error:
        console.print(f"  [red]{report.error}[/]", highlight=False)
    if held:
        console.print("  deletes held for review: contactsync deletes approve|reject -c CONFIG")
