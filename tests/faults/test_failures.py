"""Issue 14 F: failure must not be reported as success, and a failed pull must not become
"create everyone there".

* nothing is planned for a connection whose pull failed in that cycle; its persons stay dirty,
  so the cycle after the platform comes back plans them;
* a connection failing ``breaker.max_consecutive_failures`` calls in a row is left alone for
  the rest of the cycle (a circuit breaker), its work left pending with the reason;
* the CLI's exit code tells ok (0), failed (1), skipped (4), partial (5) and interrupted (130)
  apart; every run ends recorded with its status and reason, a run left ``running`` by a dead
  process is marked ``interrupted`` at the next start; ``status`` says each connection's last
  error in words.

Assertions read the emulators' own request logs and records."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

import sync.commands.backfill as backfill_cmd
from sync.apply import Backoff
from sync.cli import app
from sync.cycle import CycleRunner
from tests.e2e.world import World

from .tamper import Tamper, status_for_all, unreachable, writes_fail

runner = CliRunner()


@pytest.fixture
def world(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    w = World(db_url, tmp_path)
    # The CLI's engine reaches the in-process emulators through the world's transports.
    monkeypatch.setattr(
        backfill_cmd,
        "CycleRunner",
        lambda config, store: CycleRunner(
            config,
            store,
            transports=w.engine.transports,
            settings=w.engine.settings_overrides,
            backoff=Backoff(base_s=0.0),
        ),
    )
    yield w
    w.close()


def tamper(world: World, name: str) -> Tamper:
    t = Tamper(world.emulators[name].transport())
    world.engine.transports[name] = t
    return t


def cli_backfill(world: World) -> Any:
    return runner.invoke(app, ["backfill", "-c", str(world.config_path)])


def status_json(world: World) -> dict[str, Any]:
    result = runner.invoke(app, ["status", "-c", str(world.config_path), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def creates(world: World, name: str, path: str) -> int:
    return sum(1 for e in world.emulators[name].request_log if e.method == "POST" and e.path == path)


def test_a_wrong_token_plans_nothing_there_and_the_fixed_token_creates_nobody_twice(world: World) -> None:
    # The same 20 people on Acquire and GoHighLevel.
    world.emulators["acquire"].seed(20)
    world.emulators["ghl"].seed(20)
    tamper(world, "ghl").before(status_for_all(401, "Invalid JWT"))
    result = cli_backfill(world)
    assert result.exit_code == 5, result.output  # partial, not 0
    (run, *_) = world.store.runs.recent_runs(1)
    assert run.status == "partial" and "ghl: pull failed" in (run.error or "")
    assert "ghl" not in run.counts["plan"], run.counts["plan"]  # no "ghl: create 20"
    ghl = status_json(world)["connections"]["ghl"]
    assert ghl["pending"] == ghl["in_flight"] == 0
    assert "pull failed" in ghl["last_error"] and "401" in ghl["last_error"], ghl["last_error"]
    # The token fixed: the pull finds the 20, nobody is created there.
    world.engine.transports["ghl"] = world.emulators["ghl"].transport()
    world.converge()
    assert creates(world, "ghl", "/contacts/") == 0
    assert len(world.contacts("ghl")) == 20
    assert status_json(world)["connections"]["ghl"]["last_error"] is None


def test_an_unreachable_platform_gets_nothing_planned_and_catches_up_after(world: World) -> None:
    world.emulators["acquire"].seed(10)
    world.backfill()
    world.converge()
    (first, *_) = world.contacts("acquire")
    world.emulators["acquire"].external_edit(str(first["_raw"]["id"]), {"fields": {"city": "Reykjavik"}})
    world.engine.settings_overrides["comm100"] = {"max_retries": 1}
    t = tamper(world, "comm100").before(unreachable)
    report = world.cycle()
    assert report.status == "partial"
    assert "comm100" not in report.plan.summary(), report.plan.summary()  # type: ignore[union-attr]
    assert len(t.requests) <= 2  # the pull and its one retry; no write tried
    # Reachable again: the person stayed dirty for comm100 and the edit arrives.
    world.engine.transports["comm100"] = world.emulators["comm100"].transport()
    world.converge()
    email = first["emails"][0]
    (there,) = world.holding("comm100", email=email)
    assert there.get("address.city") == "Reykjavik", there


def test_a_platform_failing_every_write_is_opened_by_the_breaker_and_reported(world: World) -> None:
    world.emulators["acquire"].seed(20)
    world.backfill()
    world.converge()
    for c in world.contacts("acquire"):
        world.emulators["acquire"].external_edit(str(c["_raw"]["id"]), {"fields": {"city": "Oslo"}})
    world.engine.settings_overrides["comm100"] = {"max_retries": 0}
    t = tamper(world, "comm100").before(writes_fail(503))
    report = world.cycle()
    writes = [r for r in t.requests if r.method in ("PUT", "POST")]
    # 5 failures in a row open it (a few more were already on the wire, 4 at a time).
    assert len(writes) <= 5 + 4, len(writes)
    assert report.status == "partial"
    comm = status_json(world)["connections"]["comm100"]
    assert "circuit breaker open" in comm["last_error"], comm["last_error"]
    assert comm["pending"] + comm["in_flight"] == 20
    t.clear()
    world.converge()
    assert all(c.get("address.city") == "Oslo" for c in world.contacts("comm100"))


def test_a_skipped_backfill_exits_4(world: World) -> None:
    with world.store.profile_lock("default") as lock:
        assert lock.held
        result = cli_backfill(world)
    assert result.exit_code == 4, result.output


def test_sigterm_during_a_backfill_is_recorded_interrupted_and_exits_130(world: World) -> None:
    world.emulators["acquire"].seed(5)
    sent = []

    def sigterm_once(request: httpx.Request) -> None:
        if not sent:
            sent.append(request)
            os.kill(os.getpid(), signal.SIGTERM)

    def not_handled(*_: Any) -> None:
        raise AssertionError("the backfill did not handle SIGTERM")

    tamper(world, "acquire").before(sigterm_once)  # type: ignore[arg-type]
    previous = signal.signal(signal.SIGTERM, not_handled)
    try:
        result = cli_backfill(world)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert result.exit_code == 130, result.output
    (run, *_) = world.store.runs.recent_runs(1)
    assert run.status == "interrupted" and run.error, run


def test_ctrl_c_is_recorded_interrupted(world: World) -> None:
    world.emulators["acquire"].seed(5)
    sent = []

    def sigint_once(request: httpx.Request) -> None:
        if not sent:
            sent.append(request)
            os.kill(os.getpid(), signal.SIGINT)

    tamper(world, "acquire").before(sigint_once)  # type: ignore[arg-type]
    # Ctrl-C as a terminal delivers it: a suite started in the background (nohup, `&`) inherits
    # SIGINT ignored, which would make this test depend on how pytest was launched.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            world.engine.run("default", kind="backfill", full=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    (run, *_) = world.store.runs.recent_runs(1)
    assert (
        run.status == "interrupted" and "KeyboardInterrupt" in (run.error or "") or "Cancelled" in (run.error or "")
    ), run


def test_a_run_left_running_by_a_dead_process_is_marked_interrupted(world: World) -> None:
    dead = world.store.runs.start_run("default", "backfill")  # its process was killed -9
    world.cycle()
    (run,) = [r for r in world.store.runs.recent_runs(5) if r.id == dead]
    assert run.status == "interrupted" and "killed or crashed" in (run.error or "")


def test_writes_lost_to_an_outage_make_the_run_partial_not_ok(world: World) -> None:
    world.emulators["acquire"].seed(3)
    world.backfill()
    world.converge()
    for c in world.contacts("acquire"):
        world.emulators["acquire"].external_edit(str(c["_raw"]["id"]), {"fields": {"city": "Lima"}})
    world.engine.settings_overrides["ghl"] = {"max_retries": 0}
    tamper(world, "ghl").before(writes_fail(503))
    report = world.cycle()
    assert report.status == "partial" and report.applied is not None
    (run, *_) = world.store.runs.recent_runs(1)
    assert run.status == "partial" and "ghl" in (run.error or ""), run
