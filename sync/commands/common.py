"""What every command does first: configure logging, open the store."""

from __future__ import annotations

import sqlite3

from sync.config import Config
from sync.logs import configure_logging
from sync.store import Store


class CommandError(Exception):
    """A command cannot go on; ``exit_code`` says why (2 usage/config, 3 store out of date)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


#: The store the last :func:`open_store` opened (for messages about it).
_opened: list[str] = []


def explain(exc: BaseException) -> CommandError | None:
    """A known failure as a one-paragraph :class:`CommandError` (None when it is not one):
    today a SQLite store that another process holds locked."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        orig = getattr(cause, "orig", None)  # a SQLAlchemy error wraps the driver's
        for e in (cause, orig):
            if isinstance(e, sqlite3.OperationalError) and "database is locked" in str(e):
                return CommandError(_locked_message(), 1)
        cause = cause.__cause__ or cause.__context__
    return None


def _locked_message() -> str:
    from sync.store import display_url

    url = _opened[-1] if _opened else None
    where = display_url(url).removeprefix("sqlite:///") if url else "the SQLite store"
    return (
        f"the store {where} is locked: another process has a write in progress on it and did not let "
        "go within the wait (another contactsync process such as a running daemon or backfill, or a "
        "tool holding the file open, like the sqlite3 shell or a database browser with unsaved "
        "changes). Stop or finish that process (`fuser` or "
        "`lsof` on the file shows who has it open) and run the command again; a SQLite store serves "
        "one process at a time - several daemons need a PostgreSQL store."
    )


def setup_logging(config: Config, *, level: str | None = None) -> None:
    """Configure logging from the config, registering every secret for redaction."""
    configure_logging(level or config.logging.level, config.logging.format, config.secret_values())


def open_store(config: Config) -> Store:
    """Open the configured store, refusing one whose schema is not current (exit 3)."""
    from sync.store import StoreOutOfDate

    _opened[:] = [config.store_url]
    try:
        return Store.open(config.store_url)
    except StoreOutOfDate as exc:
        raise CommandError(str(exc), 3) from None


def check_connection(config: Config, name: str | None) -> None:
    if name is not None and name not in config.connections:
        raise CommandError(f"unknown connection {name!r}; known: {', '.join(config.connections)}", 2)
