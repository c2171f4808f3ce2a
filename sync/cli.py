"""The ``contactsync`` command line. Each command is a thin shell over a module that does the
work, so the modules are testable without the CLI. Results go to stdout, logs and progress to
stderr. An ordinary mistake ends in one paragraph that says what happened and what to do, never
a traceback (``-v`` adds it).

Exit codes (README, "Exit codes"): 0 ok, 1 run failed (or an unexpected error), 2 bad
configuration or usage, 3 store out of date, 4 skipped (another process holds the profile),
5 partial (the run finished but something was left undone: a pull failed, a breaker opened,
deletes were held, writes failed or were deferred — ``contactsync status`` says what), 6 the
store cannot be used (corrupt or locked SQLite file, missing PostgreSQL database, server down),
7 a platform is unreachable or refuses the credentials (``check``), 130 interrupted (Ctrl-C,
SIGTERM)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from sync.config import Config

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Bidirectional contact sync.",
    pretty_exceptions_enable=False,  # an unexpected error is one paragraph (-v: a plain traceback)
)
db_app = typer.Typer(no_args_is_help=True, help="The staging store.")
config_app = typer.Typer(no_args_is_help=True, help="Configuration files.")
app.add_typer(db_app, name="db")
app.add_typer(config_app, name="config")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_STORE, EXIT_SKIPPED, EXIT_PARTIAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 5, 130
EXIT_STORE_UNAVAILABLE, EXIT_PLATFORM = 6, 7
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
JsonOpt = typer.Option(False, "--json", help="Print the result as JSON on stdout.")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"contactsync {version('contactsync')}")
        except PackageNotFoundError:  # pragma: no cover - run from a source tree without install
            typer.echo("contactsync (not installed)")
        raise typer.Exit(0)


@app.callback()
def _global_options(
    show_version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Log warnings and errors only."),
    verbose: bool = typer.Option(
        False, "-v", "--verbose", help="Log at DEBUG (every HTTP request) and show tracebacks on errors."
    ),
    log_format: str | None = typer.Option(
        None, "--log-format", help="console or json (default: the config's logging.format; auto: JSON off a terminal)."
    ),
) -> None:
    """Bidirectional contact sync. Global options go before the command: contactsync -v status -c FILE."""
    from sync.commands.common import OPTIONS

    if quiet and verbose:
        typer.echo("usage error: -q and -v cannot be used together", err=True)
        raise typer.Exit(EXIT_USAGE)
    if log_format is not None and log_format not in ("console", "json", "auto"):
        typer.echo(f"usage error: --log-format must be console or json, not {log_format!r}", err=True)
        raise typer.Exit(EXIT_USAGE)
    OPTIONS.level = "DEBUG" if verbose else ("WARNING" if quiet else None)
    OPTIONS.fmt = log_format
    OPTIONS.verbose = verbose


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
    from sync.commands.common import remember_store, setup_logging
    from sync.store.migrate import upgrade

    cfg = _load(config)
    try:
        setup_logging(cfg)
        remember_store(cfg)
        upgrade(cfg.store_url)
    except Exception as exc:  # noqa: BLE001
        _fail(exc)
    typer.echo(f"store is up to date: {cfg.store_url_display}")


@config_app.command("check")
def config_check(
    config: Path = ConfigOpt,
    as_json: bool = JsonOpt,
    remote: bool = typer.Option(
        False, "--remote", help="Also ask the platforms (GoHighLevel custom fields); exit 2 if one does not resolve."
    ),
) -> None:
    """Validate a config file and print what it will sync (offline; `contactsync check` connects;
    --remote resolves GoHighLevel custom fields against the location)."""
    from sync.config import summarize

    cfg = _load(config)
    if as_json:  # secrets (and the store URL, which may hold a password) print as **********
        import json

        typer.echo(json.dumps(cfg.model_dump(mode="json"), indent=2, default=str))
        return
    typer.echo(summarize(cfg))
    if remote:
        from sync.commands.configcheck import remote_check

        lines, ok = remote_check(cfg)
        for line in lines:
            typer.echo(line)
        if not ok:
            raise typer.Exit(2)


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
    variant: list[str] | None = typer.Option(
        None,
        "--variant",
        help="Run an inferred behaviour's variant, BEHAVIOUR=VARIANT (repeatable), e.g. comm100.put_semantics=replace"
        " (docs/platform-behaviours.md).",
    ),
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
            variants=variant or None,
        )
    )


def _fail(exc: Exception) -> None:
    """End a command that raised: a known failure as its paragraph and exit code; anything
    else as one paragraph and exit 1. ``-v`` prints the traceback first."""
    import traceback

    from sync.commands.common import OPTIONS, explain
    from sync.logs import redact_text

    if isinstance(exc, typer.Exit):
        raise exc
    known = explain(exc)  # a locked, corrupt or missing store, an unknown profile...
    if OPTIONS.verbose:
        typer.echo(redact_text("".join(traceback.format_exception(exc))), err=True)
    if known is not None:
        typer.echo(str(known), err=True)
        raise typer.Exit(known.exit_code) from None
    first = redact_text(str(exc).strip().splitlines()[0] if str(exc).strip() else "")
    hint = (
        "report it, with the traceback above, if it persists"
        if OPTIONS.verbose
        else "run the command again with -v to see the traceback, and report it if it persists"
    )
    typer.echo(
        f"unexpected error: {type(exc).__name__}" + (f": {first}" if first else "") + ". The command stopped "
        f"there (a run it started is recorded as failed and the next one resumes); {hint}.",
        err=True,
    )
    raise typer.Exit(EXIT_FAILED) from None


@app.command()
def plan(
    config: Path = ConfigOpt,
    profile: str = typer.Option("default", "--profile", help="The sync profile."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
    replan: bool = typer.Option(False, "--replan", help="Plan every person, not only those that changed."),
) -> None:
    """Dry run: pull, match and reconcile, then print what a cycle would write."""
    from sync.commands.common import check_profile
    from sync.commands.plan import plan as run_plan

    cfg = _load(config)
    try:
        check_profile(cfg, profile)
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
    from sync.commands.common import check_profile
    from sync.commands.run import run_daemon

    cfg = _load(config)
    try:
        check_profile(cfg, profile)
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
    as_json: bool = JsonOpt,
) -> None:
    """Full pull, reconcile and push, with progress bars (stderr); resumable after an
    interruption. The summary (or --json) goes to stdout."""
    from sync.commands.backfill import backfill as run_backfill

    cfg = _load(config)
    try:
        report = run_backfill(
            cfg, connection=connection, dry_run=dry_run, profile=profile, replan=replan, as_json=as_json
        )
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


@app.command()
def probe(
    config: Path = ConfigOpt,
    connection: list[str] | None = ConnectionsOpt,
    yes: bool = typer.Option(False, "--yes", help="Go ahead: throwaway contacts are created and deleted."),
) -> None:
    """Measure each inferred platform behaviour on the real accounts with throwaway contacts
    (contactsync-probe-...), print and record the findings; cycles use them thereafter."""
    from sync.commands.probe import run_probe

    cfg = _load(config)
    try:
        run_probe(cfg, connections=connection or None, yes=yes)
    except Exception as exc:  # noqa: BLE001
        _fail(exc)


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
    value: str | None = typer.Option(
        None, "--value", help="...with this value (JSON or plain text, checked against the field's type)."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """List conflicts, or resolve one by hand (--resolve ID --use CONNECTION | --value JSON)."""
    from sync.commands import conflicts as cmd

    cfg = _load(config)
    try:
        if resolve is None:
            cmd.list_conflicts(cfg, show_all=show_all, as_json=as_json)
        else:
            cmd.resolve(cfg, resolve, use=use, value=value)
    except Exception as exc:  # noqa: BLE001
        _fail(exc)


connections_app = typer.Typer(no_args_is_help=True, help="GoHighLevel OAuth connections: authorize, discover.")
app.add_typer(connections_app, name="connections")


@connections_app.command("authorize")
def connections_authorize(
    config: Path = ConfigOpt,
    connection: str = typer.Option(..., "--connection", help="The OAuth connection to authorize."),
    code: str = typer.Option(..., "--code", help="The authorization code the marketplace redirect delivered."),
    redirect_uri: str | None = typer.Option(None, "--redirect-uri", help="The redirect URI the code was issued for."),
) -> None:
    """Exchange an authorization code for a connection's first OAuth tokens (stored encrypted:
    CONTACTSYNC_TOKEN_KEY must be set)."""
    from sync.commands import connections as cmd

    cfg = _load(config)
    try:
        typer.echo(cmd.authorize(cfg, connection, code, redirect_uri=redirect_uri))
    except Exception as exc:  # noqa: BLE001
        _fail(exc)


@connections_app.command("discover")
def connections_discover(
    config: Path = ConfigOpt,
    connection: str | None = typer.Option(None, "--connection", help="The agency (Company) connection."),
    write: bool = typer.Option(False, "--write", help="Add the entries to the config file (old one kept as .bak)."),
) -> None:
    """List the locations the app is installed on and print a connection entry for each new one."""
    from sync.commands import connections as cmd

    cfg = _load(config)
    try:
        agency, entries, locations = cmd.discover(cfg, connection)
        typer.echo(f"# {len(locations)} locations installed for {agency}; {len(entries)} not configured yet", err=True)
        if not entries:
            return
        if write:
            backup = cmd.write(config, entries)
            typer.echo(f"added {', '.join(entries)} to {config} (previous file: {backup})")
        else:
            typer.echo("connections:")
            typer.echo("\n".join("  " + line for line in cmd.render(entries, locations).splitlines()))
    except Exception as exc:  # noqa: BLE001
        _fail(exc)


@app.command()
def person(
    key: str = typer.Argument(..., help="An email, a phone, a person id or a name."),
    config: Path = ConfigOpt,
    as_json: bool = typer.Option(False, "--json", help="Print as JSON."),
) -> None:
    """One person across platforms: golden record and why, records, snapshots, writes, conflicts, merges."""
    from sync.commands.person import show as show_person

    cfg = _load(config)
    try:
        show_person(cfg, key, as_json=as_json)
    except Exception as exc:  # noqa: BLE001
        _fail(exc)


@app.command()
def serve(
    config: Path = ConfigOpt,
    host: str | None = typer.Option(None, "--host", help="Address to listen on (default web.host, 127.0.0.1)."),
    port: int | None = typer.Option(None, "--port", help="Port (default web.port, 8780)."),
) -> None:
    """Serve the operator's web page for a store that another process syncs."""
    from sync.commands.serve import serve as run_serve

    cfg = _load(config)
    try:
        raise typer.Exit(run_serve(cfg, host=host, port=port))
    except typer.Exit:
        raise
    except Exception as exc:  # noqa: BLE001
        _fail(exc)


@app.command("check")
def check_platforms(
    config: Path = ConfigOpt,
    connection: list[str] | None = typer.Option(None, "--connection", help="Only this connection (repeatable)."),
    as_json: bool = JsonOpt,
) -> None:
    """Connect to each platform with its credentials: reachability, authentication, rate-limit
    headers and clock skew per connection (exit 7 when one fails). Writes nothing."""
    from sync.commands.check import check

    cfg = _load(config)
    try:
        check(cfg, connections=connection or None, as_json=as_json)
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
