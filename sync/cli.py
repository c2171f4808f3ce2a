"""The ``contactsync`` command line. Each command is a thin shell over a module that does the
work, so the modules are testable without the CLI. Exit codes: 0 ok, 1 run failed, 2 bad
configuration or usage, 3 store out of date."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Bidirectional contact sync.")
db_app = typer.Typer(no_args_is_help=True, help="The staging store.")
config_app = typer.Typer(no_args_is_help=True, help="Configuration files.")
app.add_typer(db_app, name="db")
app.add_typer(config_app, name="config")

ConfigOpt = typer.Option(..., "-c", "--config", help="Path to the YAML configuration file.")


def _load(config: Path):  # type: ignore[no-untyped-def]
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
    platform: Optional[str] = typer.Option(None, "--platform", help="One platform to serve."),
    all_: bool = typer.Option(False, "--all", help="Serve all four platforms on consecutive ports."),
    port: int = typer.Option(8700, "--port", help="Port (the first one with --all)."),
    host: str = typer.Option("127.0.0.1", "--host"),
    seed_contacts: int = typer.Option(0, "--seed-contacts", help="Generate N contacts on each."),
    seed_file: Optional[Path] = typer.Option(None, "--seed-file", help="JSON seed file to load."),
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


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
