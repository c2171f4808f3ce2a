"""What every command does first: configure logging, open the store."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from sync.config import Config
from sync.logs import configure_logging
from sync.store import Store

#: Exit codes (README, "Exit codes").
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_STORE_SCHEMA, EXIT_SKIPPED, EXIT_PARTIAL = 0, 1, 2, 3, 4, 5
EXIT_STORE_UNAVAILABLE, EXIT_PLATFORM, EXIT_INTERRUPTED = 6, 7, 130


@dataclass
class CliOptions:
    """What the global flags (``-q``, ``-v``, ``--log-format``) asked for; the CLI's callback
    sets :data:`OPTIONS` before a command runs."""

    level: str | None = None  # overrides the config's logging.level
    fmt: str | None = None  # overrides the config's logging.format
    verbose: bool = False  # -v: DEBUG logs and tracebacks on errors


OPTIONS = CliOptions()


class CommandError(Exception):
    """A command cannot go on; ``exit_code`` says why (2 usage/config, 3 store out of date,
    6 store unavailable, 7 a platform unreachable or refusing the credentials)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


#: The store the last :func:`open_store` opened (for messages about it).
_opened: list[str] = []


def explain(exc: BaseException) -> CommandError | None:
    """A known failure as a one-paragraph :class:`CommandError` (None when it is not one): a
    SQLite store that another process holds locked or that is not a database, a PostgreSQL
    database that does not exist or a server that does not answer, an unknown profile."""
    if isinstance(exc, CommandError):
        return exc
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        orig = getattr(cause, "orig", None)  # a SQLAlchemy error wraps the driver's
        for e in (cause, orig):
            if e is None:
                continue
            text = str(e)
            if isinstance(e, sqlite3.OperationalError) and "database is locked" in text:
                return CommandError(_locked_message(), EXIT_STORE_UNAVAILABLE)
            if isinstance(e, sqlite3.DatabaseError) and (
                "file is not a database" in text or "malformed" in text or "file is encrypted" in text
            ):
                return CommandError(_corrupt_message(text), EXIT_STORE_UNAVAILABLE)
            if isinstance(e, sqlite3.OperationalError) and "unable to open database file" in text:
                return CommandError(
                    f"the store {_where()} cannot be opened: its folder does not exist or is not writable "
                    "by this user. Create the folder (or fix its permissions), or point store.url / "
                    "CONTACTSYNC_DATABASE_URL at a writable place, then run `contactsync db upgrade -c FILE`.",
                    EXIT_STORE_UNAVAILABLE,
                )
            if type(e).__module__.split(".")[0] == "psycopg":
                return CommandError(_postgres_message(text), EXIT_STORE_UNAVAILABLE)
            if isinstance(e, KeyError) and str(e.args[0] if e.args else "").startswith("unknown profile"):
                return CommandError(
                    f"{e.args[0]}. A profile is a name under `profiles:` in the config (with none "
                    "configured, the only profile is `default`); pass one of those to --profile.",
                    EXIT_USAGE,
                )
        cause = cause.__cause__ or cause.__context__
    return None


def _where() -> str:
    from sync.store import display_url

    url = _opened[-1] if _opened else None
    return display_url(url).removeprefix("sqlite:///") if url else "(the configured store)"


def _corrupt_message(detail: str) -> str:
    return (
        f"the store {_where()} is not a usable SQLite database ({detail.splitlines()[0]}): the file is "
        "damaged or is some other kind of file. Nothing was changed. Move it aside (keep it if you want "
        "to attempt a repair with `sqlite3 FILE .recover`), then create a fresh store with "
        "`contactsync db upgrade -c FILE` and run `contactsync backfill -c FILE` - the platforms still "
        "hold every contact, so a backfill rebuilds the store (conflict decisions and held deletes "
        "recorded in the old file are lost)."
    )


def _postgres_message(detail: str) -> str:
    first = " ".join(detail.split())
    where = _where()
    if "does not exist" in detail and "database" in detail:
        return (
            f"the PostgreSQL database of the store {where} does not exist ({first[-160:]}). Create it "
            "(`createdb NAME`, or CREATE DATABASE as a superuser), then run `contactsync db upgrade "
            "-c FILE` to build its tables."
        )
    if "password authentication failed" in detail or "authentication" in detail:
        return (
            f"PostgreSQL refused the credentials of the store {where} ({first[-160:]}). Check the user "
            "and password in store.url or CONTACTSYNC_DATABASE_URL (and pg_hba.conf on the server)."
        )
    return (
        f"the PostgreSQL server of the store {where} cannot be reached ({first[-200:]}). Check that "
        "the server is running and that the host and port in store.url or CONTACTSYNC_DATABASE_URL are "
        "right (`pg_isready -h HOST -p PORT` tells), then run the command again."
    )


def _locked_message() -> str:
    where = _where()
    return (
        f"the store {where} is locked: another process has a write in progress on it and did not let "
        "go within the wait (another contactsync process such as a running daemon or backfill, or a "
        "tool holding the file open, like the sqlite3 shell or a database browser with unsaved "
        "changes). Stop or finish that process (`fuser` or "
        "`lsof` on the file shows who has it open) and run the command again; a SQLite store serves "
        "one process at a time - several daemons need a PostgreSQL store."
    )


def setup_logging(config: Config, *, level: str | None = None) -> None:
    """Configure logging from the config and the global flags (which win), registering every
    secret for redaction."""
    configure_logging(
        OPTIONS.level or level or config.logging.level,
        OPTIONS.fmt or config.logging.format,
        config.secret_values(),
    )


def remember_store(config: Config) -> None:
    """Name the configured store in the messages :func:`explain` writes."""
    _opened[:] = [config.store_url]


def open_store(config: Config) -> Store:
    """Open the configured store, refusing one whose schema is not current (exit 3)."""
    from sync.store import StoreOutOfDate

    _opened[:] = [config.store_url]
    try:
        return Store.open(config.store_url)
    except StoreOutOfDate as exc:
        raise CommandError(str(exc), EXIT_STORE_SCHEMA) from None


def check_connection(config: Config, name: str | None) -> None:
    if name is not None and name not in config.connections:
        raise CommandError(f"unknown connection {name!r}; known: {', '.join(config.connections)}", EXIT_USAGE)


def check_profile(config: Config, name: str | None) -> None:
    """Refuse an unknown ``--profile`` with the known ones (exit 2)."""
    profiles = config.effective_profiles()
    if name is not None and name not in profiles:
        raise CommandError(
            f"unknown profile {name!r}; this config has: {', '.join(profiles)}. A profile is a name under "
            "`profiles:` in the config (with none configured, the only profile is `default`).",
            EXIT_USAGE,
        )
