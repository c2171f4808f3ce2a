"""What every command does first: configure logging, open the store."""

from __future__ import annotations

from sync.config import Config
from sync.logs import configure_logging
from sync.store import Store


class CommandError(Exception):
    """A command cannot go on; ``exit_code`` says why (2 usage/config, 3 store out of date)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def setup_logging(config: Config, *, level: str | None = None) -> None:
    """Configure logging from the config, registering every secret for redaction."""
    configure_logging(level or config.logging.level, config.logging.format, config.secret_values())


def open_store(config: Config) -> Store:
    """Open the configured store, refusing one whose schema is not current (exit 3)."""
    from sync.store import StoreOutOfDate

    try:
        return Store.open(config.store_url)
    except StoreOutOfDate as exc:
        raise CommandError(str(exc), 3) from None


def check_connection(config: Config, name: str | None) -> None:
    if name is not None and name not in config.connections:
        raise CommandError(f"unknown connection {name!r}; known: {', '.join(config.connections)}", 2)
