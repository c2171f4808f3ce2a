"""Issue 14, part G: process-level faults.

- fencing: a run whose profile lock is taken from it stops before its next commit;
- a stop signal takes effect within seconds while a write waits for the rate budget, and no
  write starts after it;
- Comm100's ``nextPage`` is followed on the configured origin only;
- a failed request rendered by rich's traceback with ``show_locals`` shows no credential;
- a SQLite store locked by another process is one paragraph and a non-zero exit, no traceback.
"""

from __future__ import annotations

import asyncio
import fcntl
import io
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console
from rich.traceback import Traceback
from sqlalchemy import func, select, text
from typer.testing import CliRunner

from connectors.base import ConnectorError, RateLimit
from connectors.comm100.client import Comm100Connector
from connectors.registry import connector_class, emulator_class
from sync.cli import app
from sync.store.locks import ProfileLock, lock_key
from sync.store.models import Outbox, OutboxStatus, Run
from tests.e2e.world import World, make_emulators


class Tap(httpx.AsyncBaseTransport):
    """Forwards to ``inner``; calls ``before(request)`` first (a test's hook into the run)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, before: Callable[[httpx.Request], None]) -> None:
        self.inner = inner
        self.before = before

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.before(request)
        return await self.inner.handle_async_request(request)


WRITES = ("POST", "PUT", "DELETE", "PATCH")


def _is_write(request: httpx.Request) -> bool:
    return request.method in WRITES and "search" not in request.url.path


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[World]:
    w = World(db_url, tmp_path, emulators=make_emulators())
    yield w
    w.close()


def _outbox_claimed(w: World) -> set[int]:
    """Rows a run claimed or finished (in flight or done). Read on the engine directly: the
    test plays another process, outside the run's fenced store transactions."""
    statuses = [OutboxStatus.IN_FLIGHT.value, OutboxStatus.DONE.value]
    with w.store.engine.connect() as c:
        return {r[0] for r in c.execute(select(Outbox.id).where(Outbox.status.in_(statuses)))}


def _outbox_done(w: World) -> int:
    with w.store.engine.connect() as c:
        return int(c.execute(select(func.count()).where(Outbox.status == OutboxStatus.DONE.value)).scalar_one())


# --------------------------------------------------------------------------- 1. fencing


def _take_lock_away(w: World, store_kind: str, profile: str = "default") -> Callable[[], None]:
    """What "another daemon takes the profile" does to this run's lock, per store."""
    if store_kind == "postgresql":
        key = lock_key(profile)
        classid, objid = (key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF

        def terminate() -> None:
            with w.store.engine.connect() as c:
                pid = c.execute(
                    text(
                        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                        "AND classid = :c AND objid = :o AND objsubid = 1"
                    ),
                    {"c": classid, "o": objid},
                ).scalar_one()
                c.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
                c.commit()
                for _ in range(200):  # until the backend is gone (its goodbye is sent by then)
                    gone = c.execute(text("SELECT count(*) FROM pg_stat_activity WHERE pid = :p"), {"p": pid})
                    c.commit()
                    if gone.scalar_one() == 0:
                        return
                    time.sleep(0.01)
                raise AssertionError("the lock's backend did not go away")

        return terminate

    lock = ProfileLock(w.store.engine, profile)
    path = lock._lock_path()  # noqa: SLF001 - the test plays the other process
    assert path is not None
    held: list[Any] = []

    def replace_file() -> None:
        # The lock file removed (by hand, a clean-up job) and recreated by another process,
        # which locks the new file: two holders, unless the first one notices.
        path.unlink()
        f = open(path, "a+")  # noqa: SIM115
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.append(f)

    return replace_file


def test_a_run_that_lost_its_profile_lock_stops_before_its_next_commit(world: World, store_kind: str) -> None:
    for name in ("acquire", "comm100"):
        world.emulators[name].seed(120, rng_seed=7 if name == "acquire" else 8)
    take_away = _take_lock_away(world, store_kind)
    at_loss: dict[str, Any] = {}
    writes_after: list[str] = []

    def before(request: httpx.Request) -> None:
        if not _is_write(request):
            return
        if at_loss:
            writes_after.append(f"{request.method} {request.url.path}")
            return
        if len(world.emulators["ghl"].request_log) < 20:
            return
        take_away()
        at_loss["claimed"] = _outbox_claimed(world)
        at_loss["done"] = _outbox_done(world)
        at_loss["time"] = time.monotonic()

    world.engine.transports["ghl"] = Tap(world.emulators["ghl"].transport(), before)
    world.engine.chunk_size = 8
    report = world.engine.run("default", kind="backfill", full=True)

    assert at_loss, "the lock was never taken away: the test did not reach its point"
    assert report.status in ("failed", "interrupted"), report.counts()
    assert report.error and "lost the profile lock" in report.error
    # Nothing was committed after the loss: no row finished, none claimed for sending.
    assert _outbox_done(world) == at_loss["done"]
    assert _outbox_claimed(world) <= at_loss["claimed"]
    # Only writes already claimed before the loss may still have gone out (at most a chunk).
    assert len(writes_after) <= world.engine.chunk_size, writes_after
    # The run is recorded as ended, with the reason.
    with world.store.session() as s:
        run = s.get(Run, report.run_id)
        assert run is not None and run.status in ("failed", "interrupted") and run.finished_at is not None
        assert "lost the profile lock" in (run.error or "")


# --------------------------------------------------------------------------- 2. stop signals


def test_a_stop_during_a_rate_budget_wait_takes_effect_within_seconds(world: World) -> None:
    for name in ("acquire", "comm100"):
        world.emulators[name].seed(30, rng_seed=3 if name == "acquire" else 4)
    # GoHighLevel allows 6 requests per 2 minutes: one search, the location's custom fields
    # (read once, and once more for the "plan" key it does not define yet), three writes, then
    # a long wait.
    world.engine.settings_overrides["ghl"] = {"rate_limit": RateLimit(6, 120.0)}
    stop = threading.Event()
    stopped_at: list[float] = []
    ghl_writes: list[float] = []

    def before(request: httpx.Request) -> None:
        if _is_write(request):
            ghl_writes.append(time.monotonic())

    world.engine.transports["ghl"] = Tap(world.emulators["ghl"].transport(), before)

    def stopper() -> None:
        deadline = time.monotonic() + 60
        while len(ghl_writes) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.5)  # the fourth write is waiting for the budget by now
        stopped_at.append(time.monotonic())
        stop.set()

    result: list[Any] = []
    runner = threading.Thread(
        target=lambda: result.append(world.engine.run("default", kind="backfill", full=True, stop=stop)),
        daemon=True,
    )
    threading.Thread(target=stopper, daemon=True).start()
    runner.start()
    runner.join(timeout=40)
    assert stopped_at, "the stop was never sent"
    finished = time.monotonic()
    assert not runner.is_alive(), "the run ignored the stop"
    assert finished - stopped_at[0] < 5.0, f"the stop took {finished - stopped_at[0]:.1f}s"
    report = result[0]
    assert report.status in ("partial", "interrupted"), report.counts()
    # No write reached any platform after the stop (a write that passed its check just before
    # the stop may arrive a moment later: 0.25 s of grace for that on a loaded machine).
    late = {
        name: [f"{e.method} {e.path}" for e in emu.request_log if e.time > stopped_at[0] + 0.25 and e.method in WRITES]
        for name, emu in world.emulators.items()
    }
    assert not any(late.values()), late
    # GoHighLevel's unsent writes wait for the next run: pending, not failed, not in flight.
    statuses = {
        i.status for i in world.store.outbox.items([s.value for s in OutboxStatus], connection="ghl", limit=None)
    }
    assert statuses <= {OutboxStatus.PENDING.value, OutboxStatus.DONE.value}, statuses


# --------------------------------------------------------------------------- 3. nextPage origin


class NextPageTamper(httpx.AsyncBaseTransport):
    """Comm100 answers with a ``nextPage`` pointing at ``elsewhere``; every request that does
    not go to the emulator's host is recorded (and answered empty)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, home: httpx.URL, elsewhere: str) -> None:
        self.inner, self.home, self.elsewhere = inner, home, elsewhere
        self.stray: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if (url.scheme, url.host, url.port) != (self.home.scheme, self.home.host, self.home.port):
            self.stray.append(request)
            return httpx.Response(200, json={"contacts": [], "total": 0, "nextPage": None})
        response = await self.inner.handle_async_request(request)
        body = json.loads(await response.aread())
        if isinstance(body, dict) and body.get("nextPage"):
            nxt = httpx.URL(body["nextPage"])
            body["nextPage"] = str(httpx.URL(self.elsewhere).copy_with(path=nxt.path, query=nxt.query))
        return httpx.Response(response.status_code, json=body)


@pytest.mark.parametrize(
    "elsewhere",
    ["https://attacker.example", "http://{host}", "https://{host}:8443"],
    ids=["other-host", "plain-http", "other-port"],
)
def test_comm100_next_page_off_the_configured_origin_is_refused(elsewhere: str) -> None:
    emu = emulator_class("comm100")(rate_scale=1000.0)
    emu.seed(30)
    base = emu.base_url.replace("http://", "https://")  # the configured origin: https, default port
    home = httpx.URL(base)
    tamper = NextPageTamper(emu.transport(), home, elsewhere.format(host=home.host))
    settings = emu.connection_settings(base_url=base, options={"page_size": 10})
    conn = Comm100Connector(settings, tamper)

    async def pull() -> None:
        try:
            async for _page in conn.pull(None):
                pass
        finally:
            await conn.aclose()

    with pytest.raises(ConnectorError, match="configured origin"):
        asyncio.run(pull())
    assert tamper.stray == [], [str(r.url) for r in tamper.stray]


# --------------------------------------------------------------------------- 4. tracebacks


def _rendered(exc: BaseException) -> str:
    console = Console(file=io.StringIO(), record=True, width=240, color_system=None)
    console.print(Traceback.from_exception(type(exc), exc, exc.__traceback__, show_locals=True, width=240))
    return console.export_text()


@pytest.mark.parametrize("platform", ["gohighlevel", "comm100", "acquire", "dmchamp"])
def test_a_failed_request_rendered_with_locals_shows_no_credential(platform: str) -> None:
    emu = emulator_class(platform)()
    settings = emu.connection_settings()
    secrets = [v.get_secret_value() for v in settings.credentials.values()]

    def explode(request: httpx.Request) -> httpx.Response:
        raise RuntimeError("the transport broke")  # not a classified failure: it escapes

    conn = connector_class(platform)(settings, httpx.MockTransport(explode))

    async def call() -> BaseException:
        # Caught here, so the traceback runs from this frame down (as a library user's own
        # ``except`` would see it), not through this test's frame and its list of secrets.
        try:
            await conn.lookup({"email": "ada@example.com", "phone": "+14155552671"})
        except RuntimeError as exc:
            return exc
        finally:
            await conn.aclose()
        raise AssertionError("the request did not fail")

    text_ = _rendered(asyncio.run(call()))
    assert "the transport broke" in text_ and "request" in text_  # locals were rendered
    for secret in secrets:
        assert secret not in text_, f"{platform}: a credential is in the traceback"
        assert len(secret) >= 4


# --------------------------------------------------------------------------- 5. locked SQLite


def test_a_locked_sqlite_store_is_one_paragraph_and_a_non_zero_exit(
    world: World, store_kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if store_kind != "sqlite":
        pytest.skip("SQLite only: PostgreSQL has no whole-store write lock")
    monkeypatch.setattr("sync.store.connect.SQLITE_BUSY_TIMEOUT_MS", 200)
    database = world.store.engine.url.database
    assert database
    holder = sqlite3.connect(database, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process with a write in progress
        result = CliRunner().invoke(app, ["backfill", "-c", str(world.config_path)])
    finally:
        holder.close()
    assert result.exit_code not in (0, None), result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    message = result.stderr
    assert "is locked" in message and str(Path(database)) in message, message
    assert "another contactsync process" in message
    paragraph = [line for line in message.splitlines() if "is locked" in line]
    assert len(paragraph) == 1 and len(paragraph[0]) > 200  # the whole explanation, one paragraph
