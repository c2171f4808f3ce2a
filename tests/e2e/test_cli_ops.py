"""The command line as an operator meets it: --version, -q/-v, --log-format, `check` against
real loopback emulators, --json on every reporting command, stdout for results, tables that
fit 80 columns, and ordinary mistakes ending in one paragraph and a documented exit code."""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from connectors.fleet import CONNECTIONS
from connectors.loopback import LoopbackEmulators, emulator_config
from connectors.registry import emulator_class
from sync.cli import app
from sync.commands.tables import Column, describe_cursor, fit_table
from tests.helpers import run

from .test_sync import edit_ada_on_two_sides, seed_overlap
from .world import RATE_SCALE, World

runner = CliRunner()


def _invoke(*args: str) -> object:
    return runner.invoke(app, list(args))


def _no_traceback(result: object) -> None:
    out = result.output + (result.stderr or "")  # type: ignore[attr-defined]
    assert "Traceback" not in out, out
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # type: ignore[attr-defined]


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("contactsync ")


def test_quiet_and_verbose_together_is_a_usage_error() -> None:
    result = runner.invoke(app, ["-q", "-v", "status", "-c", "x.yaml"])
    assert result.exit_code == 2 and "cannot be used together" in result.stderr


# --------------------------------------------------------------------------- check


@pytest.fixture
def served(tmp_path: Path, db_url: str) -> Iterator[tuple[LoopbackEmulators, Path]]:
    factories = {
        n: (lambda url, p=p: emulator_class(p)(base_url=url, rate_scale=RATE_SCALE)) for n, p in CONNECTIONS.items()
    }
    with LoopbackEmulators(factories) as loop:
        cfg = emulator_config(loop.emulators, loop.urls, db_url, secrets_dir=tmp_path / "secrets")
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        yield loop, path


def test_check_reports_every_connection_over_real_sockets(served: tuple[LoopbackEmulators, Path]) -> None:
    _, path = served
    result = runner.invoke(app, ["check", "-c", str(path), "--json"])
    assert result.exit_code == 0, result.output + result.stderr
    found = {r["connection"]: r for r in json.loads(result.stdout)}
    assert set(found) == set(CONNECTIONS)
    for r in found.values():
        assert r["reachable"] and r["authenticated"] and r["verdict"] == "ok", r
        assert r["clock_skew_s"] is not None and abs(r["clock_skew_s"]) < 5  # uvicorn's Date header
    assert found["ghl"]["rate_limit_headers"]  # GoHighLevel sends X-RateLimit-*
    text = runner.invoke(app, ["check", "-c", str(path)])
    assert text.exit_code == 0 and "rate-limit headers" in text.stdout
    assert all(len(line) <= 80 for line in text.stdout.splitlines())


def test_check_says_authentication_failed_and_unreachable(
    served: tuple[LoopbackEmulators, Path], tmp_path: Path
) -> None:
    _, path = served
    cfg = yaml.safe_load(path.read_text())
    for key, ref in cfg["connections"]["ghl"]["credentials"].items():
        Path(ref["file"]).write_text("wrong-token-" + key)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    cfg["connections"]["comm100"]["base_url"] = f"http://127.0.0.1:{closed}"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    result = runner.invoke(app, ["check", "-c", str(path)])
    assert result.exit_code == 7, result.output + result.stderr
    _no_traceback(result)
    assert "authentication failed" in result.stdout and "unreachable" in result.stdout
    assert "ghl: authentication failed" in result.stderr and "comm100: unreachable" in result.stderr
    assert "wrong-token" not in result.stdout + result.stderr
    ok = runner.invoke(app, ["check", "-c", str(path), "--connection", "acquire"])
    assert ok.exit_code == 0, ok.output


# --------------------------------------------------------------------------- mistakes in words


def test_unknown_profile_is_one_paragraph(world: World) -> None:
    for command in ("backfill", "plan"):
        result = runner.invoke(app, [command, "-c", str(world.config_path), "--profile", "nope"])
        assert result.exit_code == 2, result.output
        _no_traceback(result)
        assert "unknown profile 'nope'" in result.stderr and "default" in result.stderr


def test_corrupt_sqlite_store_is_one_paragraph_and_exit_6(world: World, store_kind: str) -> None:
    if store_kind != "sqlite":
        pytest.skip("a SQLite file")
    database = world.store.engine.url.database
    assert database
    world.store.close()
    Path(database).write_bytes(b"this is not a database" * 100)
    for args in (["status"], ["backfill"], ["conflicts"], ["db", "upgrade"]):
        result = runner.invoke(app, [*args, "-c", str(world.config_path)])
        assert result.exit_code == 6, (args, result.output, result.exception)
        _no_traceback(result)
        assert "is not a usable SQLite database" in result.stderr and "db upgrade" in result.stderr
    verbose = runner.invoke(app, ["-v", "status", "-c", str(world.config_path)])
    assert verbose.exit_code == 6 and "Traceback" in verbose.stderr


def test_locked_sqlite_store_exits_6(world: World, store_kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlite3

    if store_kind != "sqlite":
        pytest.skip("SQLite only: PostgreSQL has no whole-store write lock")
    monkeypatch.setattr("sync.store.connect.SQLITE_BUSY_TIMEOUT_MS", 200)
    database = world.store.engine.url.database
    assert database
    holder = sqlite3.connect(database, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        result = runner.invoke(app, ["backfill", "-c", str(world.config_path)])
    finally:
        holder.close()
    assert result.exit_code == 6, result.output
    _no_traceback(result)
    assert "is locked" in result.stderr


def _pg_server() -> str | None:
    url = os.environ.get("CONTACTSYNC_TEST_DATABASE_URL")
    if url and url.startswith("postgresql"):
        return url.rsplit("/", 1)[0]
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=0.5):
            return "postgresql+psycopg://postgres@127.0.0.1:5432"
    except OSError:
        return None


def test_missing_postgres_database_is_one_paragraph(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    server = _pg_server()
    if server is None:
        pytest.skip("no PostgreSQL server")
    monkeypatch.setenv("CONTACTSYNC_DATABASE_URL", f"{server}/contactsync_no_such_database")
    result = runner.invoke(app, ["status", "-c", str(world.config_path)])
    assert result.exit_code == 6, result.output
    _no_traceback(result)
    assert "does not exist" in result.stderr and "createdb" in result.stderr


def test_unexpected_error_is_one_paragraph_and_the_traceback_needs_v(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("something odd")

    monkeypatch.setattr("sync.commands.status.collect", boom)
    result = runner.invoke(app, ["status", "-c", str(world.config_path)])
    assert result.exit_code == 1
    _no_traceback(result)
    assert "unexpected error: RuntimeError: something odd" in result.stderr and "-v" in result.stderr
    verbose = runner.invoke(app, ["-v", "status", "-c", str(world.config_path)])
    assert verbose.exit_code == 1 and "Traceback" in verbose.stderr


# --------------------------------------------------------------------------- output


def test_backfill_summary_on_stdout_and_json(served: tuple[LoopbackEmulators, Path]) -> None:
    loop, path = served
    loop.call(lambda: loop.emulators["ghl"].seed([{"first_name": "Ada", "email": "ada@example.com"}]))
    result = runner.invoke(app, ["-q", "backfill", "-c", str(path), "--json"])
    assert result.exit_code in (0, 5), result.output + result.stderr
    data = json.loads(result.stdout)
    assert data["kind"] == "backfill" and data["counts"]["pull"]["ghl"]["records"] == 1
    again = runner.invoke(app, ["-q", "backfill", "-c", str(path)])
    assert again.exit_code in (0, 5)
    assert again.stdout.startswith("run ") and "pull ghl: 1 records" in again.stdout
    assert "records" not in again.stderr  # stderr has the progress bars only


def test_an_unreachable_platform_ends_a_backfill_partial_in_words(world: World) -> None:
    # The world's config names hosts that do not resolve outside the tests' in-process transports.
    result = runner.invoke(app, ["backfill", "-c", str(world.config_path)])
    assert result.exit_code == 5, result.output
    _no_traceback(result)
    assert "partial" in result.stdout and "pull ghl:" in result.stdout and "ConnectError" in result.stdout


def test_reports_fit_80_columns_and_speak_json(world: World) -> None:
    edit_ada_on_two_sides(world)
    world.converge()
    cfg = str(world.config_path)
    status = runner.invoke(app, ["status", "-c", cfg])
    assert status.exit_code == 0, status.output
    lines = status.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), "\n".join(line for line in lines if len(line) > 80)
    header = next(line for line in lines if "connection" in line)
    for word in ("records", "pending", "failed"):
        assert word in header
    assert "cursor:" in status.stdout and '{"' not in status.stdout  # the cursor in words
    conflicts = runner.invoke(app, ["conflicts", "-c", cfg, "--all"])
    assert conflicts.exit_code == 0
    assert all(len(line) <= 80 for line in conflicts.stdout.splitlines())
    assert "candidates" in conflicts.stdout and "decision" in conflicts.stdout
    for args in (["status"], ["conflicts", "--all"], ["deletes", "list"], ["plan"], ["config", "check"]):
        result = runner.invoke(app, [*args, "-c", cfg, "--json"])
        assert result.exit_code in (0, 5), (args, result.output)
        json.loads(result.stdout)
    dumped = runner.invoke(app, ["config", "check", "-c", cfg, "--json"]).stdout
    for emulator in world.emulators.values():
        for secret in emulator.credentials.values():
            assert str(secret) not in dumped


def test_fit_table_wraps_then_drops_but_never_cuts_a_header() -> None:
    from rich.console import Console

    columns = [Column("connection", keep=True, wrap=True), *(Column(f"column {i}", rank=i) for i in range(12))]
    rows = [["a very long connection name (gohighlevel)", *(str(i + 1) for i in range(12))]]
    console = Console(width=80, record=True)
    console.print(fit_table(columns, rows, console=console))
    text = console.export_text()
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "left out to fit 80 columns: column 0" in " ".join(text.split())
    assert "column 11" in text and "connection" in text


def test_describe_cursor_in_words() -> None:
    assert describe_cursor(None) == "everything on the next pull"
    assert describe_cursor({"updatedAfter": "2026-01-02T03:04:05Z"}).startswith("changes since 2026-01-02 03:04:05 UTC")
    assert "page 4" in describe_cursor({"next_page": 4})
    assert "last full scan completed" in describe_cursor(
        {"next_page": None, "completed_at": "2026-01-02T03:04:05+00:00"}
    )
    assert "has not finished" in describe_cursor({}, {"full": True, "started_at": "2026-01-02T03:04:05+00:00"})


# --------------------------------------------------------------------------- logs


def test_library_logs_share_the_json_format_and_requests_are_debug(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    import uvicorn

    from sync.logs import UVICORN_LOG_CONFIG, configure_logging

    configure_logging("INFO", "json")
    uvicorn.Config(lambda *a: None, log_config=UVICORN_LOG_CONFIG, log_level="info")  # as a server would
    logging.getLogger("apscheduler.scheduler").info("Scheduler started")
    logging.getLogger("alembic.runtime.migration").warning("a migration note")
    logging.getLogger("uvicorn.error").info("Uvicorn running")
    logging.getLogger("uvicorn.access").info('127.0.0.1 - "GET /metrics HTTP/1.1" 200')
    seed_overlap(world)
    world.cycle()
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    parsed = [json.loads(line) for line in lines]  # every line is JSON, libraries' included
    events = {p["event"] for p in parsed}
    assert {"Scheduler started", "a migration note", "Uvicorn running"} <= events
    assert not any("GET /metrics" in str(e) for e in events)  # the access log is DEBUG
    assert any(p.get("logger_name") == "apscheduler.scheduler" for p in parsed)
    assert not any(str(p["event"]).startswith("HTTP Request") for p in parsed)
    configure_logging("DEBUG", "json")
    world.cycle()
    debug = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert any(str(p["event"]).startswith("HTTP Request") and p["level"] == "debug" for p in debug)


def test_pull_pages_carry_the_platform_total(world: World) -> None:
    seed_overlap(world)

    async def pages(name: str) -> list[int | None]:
        connector = world.engine.connector(name)
        try:
            return [p.total async for p in connector.pull(None)]
        finally:
            await connector.aclose()

    assert run(pages("ghl"))[-1] == 2
    assert run(pages("comm100"))[-1] == 2
    assert run(pages("acquire"))[-1] == 3
