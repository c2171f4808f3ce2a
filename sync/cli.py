"""The ``contactsync`` command line. Each command is a thin shell over a module that does the
work, so the modules are testable without the CLI.

Exit codes (README, "Exit codes"): 0 ok, 1 run failed, 2 bad configuration or usage, 3 store
out of date, 4 skipped (another process holds the profile), 5 partial (the run finished but
something was left undone: a pull failed, a breaker opened, deletes were held, writes failed
or were deferred — ``contactsync status`` says what), 130 interrupted (Ctrl-C, SIGTERM)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from sync.config import Config

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Bidirectional contact sync.")
db_app = typer.Typer(no_args_is_help=True, help="The staging store.")
config_app = typer.Typer(no_args_is_help=True, help="Configuration files.")
app.add_typer(db_app, name="db")
app.add_typer(config_app, name="config")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_STORE, EXIT_SKIPPED, EXIT_PARTIAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 5, 130
RUN_EXIT_CODES = {
    "ok": EXIT_OK,
    "failed": EXIT_FAILED,
    "skipped": EXIT_SKIPPED,
    "partial": EXIT_PARTIAL,
    "interrupted": EXIT_INTERRUPTED,
}


def exit_code(status: str) -> int:
    """The exit code of a run that ended with ``status``."""
    return RUN_EXIT_CODES.get(status, EXIT_FAILED)


deletes_app = typer.Typer(no_args_is_help=True, help="Deletes held by the mass-delete circuit breaker.")
app.add_typer(deletes_app, name="deletes")
held_app = typer.Typer(no_args_is_help=True, help="Creates held for review (a lost create nothing can find again).")
app.add_typer(held_app, name="held")

ConfigOpt = typer.Option(..., "-c", "--config", help="Path to the YAML configuration file.")


def _load(config: Path) -> Config:
    """Load a config or exit 2 with the error (YAML path of the bad key, what was expected)."""
    from sync.config import ConfigError, load_config

    try:
        return load_config(config)
    except ConfigError as exc:
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from None


@db_app.command("upgrade")
def db_upgrade(config: Path = ConfigOpt) -> None:
    """Apply the store's migrations (creates the store if needed)."""
    from sync.store.migrate import upgrade

    cfg = _load(config)
    upgrade(cfg.store_url)
    typer.echo(f"store is up to date: {cfg.store_url_display}")


@config_app.command("check")
def config_check(config: Path = ConfigOpt) -> None:
    """Validate a config file and print what it will sync."""
    from sync.config import summarize

    cfg = _load(config)
    typer.echo(summarize(cfg))


@app.command()
def emulate(
    platform: str | None = typer.Option(None, "--platform", help="One platform to serve."),
    all_: bool = typer.Option(False, "--all", help="Serve all four platforms on consecutive ports."),
    port: int = typer.Option(8700, "--port", help="Port (the first one with --all)."),
    host: str = typer.Option("127.0.0.1", "--host"),
    seed_contacts: int = typer.Option(0, "--seed-contacts", help="Generate N contacts on each."),
    seed_file: Path | None = typer.Option(None, "--seed-file", help="JSON seed file to load."),
    rate_scale: float = typer.Option(1.0, "--rate-scale", help="Speed rate-limit windows up by this factor."),
    fault_rate: float = typer.Option(0.0, "--fault-rate", help="Fraction of requests given an injected fault."),
    fault_seed: int = typer.Option(0, "--fault-seed"),
) -> None:
    """Serve platform emulators on loopback until SIGINT/SIGTERM."""
    from connectors.emulate import serve

    raise typer.Exit(
        serve(
            platform=platform,
            all_platforms=all_,
            host=host,
            port=port,
            seed_contacts=seed_contacts,
            seed_file=seed_file,
            rate_scale=rate_scale,
            fault_rate=fault_rate,
            fault_seed=fault_seed,
        )
    )


def _fail(exc: Exception) -> None:
    from sync.commands.common import CommandError, explain

    exc = explain(exc) or exc  # a known failure (a locked SQLite store) as one paragraph
    if isinstance(exc, CommandError):
        typer.echo(str(exc), err=True)
        raise typer.Exit(exc.exit_code) from None
    raise exc


@app.command()
def plan(
    config: Path = ConfigOpt,
    profile: str = typer.Option("default", "--profile", help="The sync profile."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
    replan: bool = typer.Option(False, "--replan", help="Plan every person, not only those that changed."),
) -> None:
    """Dry run: pull, match and reconcile, then print what a cycle would write."""
    from sync.commands.plan import plan as run_plan

    cfg = _load(config)
    try:
        report = run_plan(cfg, profile=profile, as_json=as_json, replan=replan)
    except Exception as exc:  # noqa: BLE001
        _fail(exc)
        return
    raise typer.Exit(exit_code(report.status))


@app.command()
def run(
    config: Path = ConfigOpt,
    profile: str | None = typer.Option(None, "--profile", help="Run only this profile."),
) -> None:
    """The daemon: every sync profile on its schedule until SIGTERM/SIGINT."""
    from sync.commands.run import run_daemon

    cfg = _load(config)
    try:
        raise typer.Exit(run_daemon(cfg, profile=profile))
    except typer.Exit:
        raise
    except Exception as exc:  # noqa: BLE001
        _fail(exc)


@app.command()
def backfill(
    config: Path = ConfigOpt,
    connection: str | None = typer.Option(None, "--connection", help="Pull only this connection."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Pull and plan; write nothing to the platforms."),
    profile: str = typer.Option("default", "--profile", help="The sync profile."),
    replan: bool = typer.Option(
        False,
        "--replan",
        help="Reconcile every person, not only those that changed (after editing mappings or policies).",
    ),
) -> None:
    """Full pull, reconcile and push, with progress bars; resumable after an interruption."""
    from sync.commands.backfill import backfill as run_backfill

    cfg = _load(config)
    try:
        report = run_backfill(cfg, connection=connection, dry_run=dry_run, profile=profile, replan=replan)
    except Exception as exc:  # noqa: BLE001
        _fail(exc)
        return
    raise typer.Exit(exit_code(report.status))


@app.command()
def status(
    config: Path = ConfigOpt,
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """Per connection: last run, cursor, counts, pending/failed writes, exclusions; conflicts."""
    from sync.commands.status import show

    cfg = _load(config)
    try:
        show(cfg, as_json=as_json)
    except Exception as exc:  # noqa: BLE001
        _fail(exc)


ConnectionsOpt = typer.Option(None, "--connection", help="Only this connection (repeatable); default: all.")


@deletes_app.command("list")
def deletes_list(
    config: Path = ConfigOpt,
    connection: list[str] | None = ConnectionsOpt,
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """The held deletes, per connection, with the reason they are held."""
    from sync.commands import deletes as cmd

    cfg = _load(config)
    try:
        cmd.list_held(cfg, connections=connection or None, as_json=as_json)
    except Exception as exc:  # noqa: BLE001
        _fail(exc)


@deletes_app.command("approve")
def deletes_approve(config: Path = ConfigOpt, connection: list[str] | None = ConnectionsOpt) -> None:
    """Believe the held deletes: the next cycle carries them out under `deletes.policy`."""
    from sync.commands import deletes as cmd

    cfg = _load(config)
    try:
        cmd.approve(cfg, connections=connection or None)
    except Exception as exc:  # noqa: BLE001
        _fail(exc)


@deletes_app.command("reject")
def deletes_reject(config: Path = ConfigOpt, connection: list[str] | None = ConnectionsOpt) -> None:
    """Drop the held deletes: nothing is deleted (a later scan that still misses the records
    holds them again)."""
    from sync.commands import deletes as cmd

    cfg = _load(config)
    try:
        cmd.reject(cfg, connections=connection or None)
    except Exception as exc:  # noqa: BLE001
        _fail(exc)


IdsOpt = typer.Option(None, "--id", help="Only the held row with this id (repeatable); default: all.")


@held_app.command("list")
def held_list(
    config: Path = ConfigOpt,
    connection: list[str] | None = ConnectionsOpt,
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """The held creates, with the reason each is held."""
    from sync.commands import held as cmd

    cfg = _load(config)
    try:
        cmd.list_held(cfg, connections=connection or None, as_json=as_json)
    except Exception as exc:  # noqa: BLE001
        _fail(exc)


@held_app.command("release")
def held_release(
    config: Path = ConfigOpt, connection: list[str] | None = ConnectionsOpt, ids: list[int] | None = IdsOpt
) -> None:
    """The contact is not on the platform (checked by hand): the next cycle sends the create."""
    from sync.commands import held as cmd

    cfg = _load(config)
    try:
        cmd.release(cfg, connections=connection or None, ids=ids or None)
    except Exception as exc:  # noqa: BLE001
        _fail(exc)


@held_app.command("reject")
def held_reject(
    config: Path = ConfigOpt, connection: list[str] | None = ConnectionsOpt, ids: list[int] | None = IdsOpt
) -> None:
    """The contact is there (or not wanted): drop the held create, nothing is sent."""
    from sync.commands import held as cmd

    cfg = _load(config)
    try:
        cmd.reject(cfg, connections=connection or None, ids=ids or None)
    except Exception as exc:  # noqa: BLE001
        _fail(exc)


@app.command()
def conflicts(
    config: Path = ConfigOpt,
    show_all: bool = typer.Option(False, "--all", help="Every recorded conflict, not only open ones."),
    resolve: int | None = typer.Option(None, "--resolve", help="Resolve the conflict with this id."),
    use: str | None = typer.Option(None, "--use", help="...with the value from this connection."),
    value: str | None = typer.Option(None, "--value", help="...with this value (JSON)."),
) -> None:
    """List conflicts, or resolve one by hand (--resolve ID --use CONNECTION | --value JSON)."""
    from sync.commands import conflicts as cmd

    cfg = _load(config)
    try:
        if resolve is None:
            cmd.list_conflicts(cfg, show_all=show_all)
        else:
            cmd.resolve(cfg, resolve, use=use, value=value)
    except Exception as exc:  # noqa: BLE001
        _fail(exc)


@app.command()
def demo(
    workdir: Path | None = typer.Option(None, "--dir", help="Where to keep the demo store (default: a temp dir)."),
    port: int = typer.Option(0, "--port", help="First loopback port for the emulators (0: any free ports)."),
) -> None:
    """Start the four emulators with overlapping contacts, backfill, edit, sync again: a tour."""
    from sync.commands.demo import run_demo

    raise typer.Exit(run_demo(workdir=workdir, port=port))


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
