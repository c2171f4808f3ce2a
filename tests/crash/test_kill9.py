"""kill -9 at random points, over and over, then a restart: no contact created twice, no edit
lost, convergence. The emulators live in this process on loopback sockets; the worker is a
``contactsync backfill`` subprocess that is SIGKILLed at a random moment of its run (during a
pull, between an outbox intent and its call, between a call and its result)."""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

from sync.apply import Backoff
from sync.cycle import CycleRunner
from sync.store import Store
from sync.store.models import OutboxStatus

from . import fleet

RUNS = 20
# Comm100's 300 calls / 5 min becomes 300 / 15 s: a full backfill takes a couple of seconds,
# so random kills land all over it.
RATE_SCALE = 20.0


def test_random_sigkills_lose_nothing_and_duplicate_nothing(db_url: str, tmp_path: Path) -> None:
    rng = random.Random(20261121)
    served = fleet.start_emulators(rate_scale=RATE_SCALE)
    try:
        cfg_path, config = fleet.write_config(served, db_url, tmp_path)
        expected: dict[int, str] = {}
        killed = 0
        typical = 2.5  # seconds; replaced by the length of each run that completes
        args = ("backfill", "-c", str(cfg_path))
        upcoming = fleet.Worker(*args)
        for run in range(RUNS):
            if run % 4 == 3:
                # An outside edit between (killed) runs must survive and reach everyone.
                i = rng.choice(range(fleet.HUMANS))
                platform = rng.choice([p for p in ("acquire", "ghl", "comm100") if fleet.raw_id(served, p, config, i)])
                rid = fleet.raw_id(served, platform, config, i)
                last = f"Edit{run}"
                served.call(lambda: served.emulators[platform].external_edit(rid, fleet.edit(platform, i, last)))  # noqa: B023 - called at once
                expected[i] = last
            proc = upcoming.go()
            # The next worker pays its imports while this one runs (it waits for "go").
            upcoming = fleet.Worker(*args)
            # Kill at a random point inside a run: draw within the length of the last run that
            # finished (runs get shorter as the platforms converge), so kills land mid-way on a
            # fast machine as on a slow one.
            started = time.monotonic()
            try:
                proc.wait(timeout=rng.uniform(0.05, 0.9 * typical))
            except Exception:
                proc.send_signal(signal.SIGKILL)
                killed += 1
            else:
                typical = max(0.2, time.monotonic() - started)
            proc.wait(timeout=30)
            assert proc.returncode in (0, -signal.SIGKILL), proc.stderr.read() if proc.stderr else ""
            # Whatever happened so far, nothing is on any platform twice.
            assert fleet.duplicates(served, config) == {}, f"after run {run}"
        upcoming.proc.kill()
        upcoming.proc.wait()
        assert killed >= RUNS // 2, f"only {killed} of {RUNS} runs were killed mid-way"

        # Restart and let it finish: convergence, with a quiet cycle at the end.
        store = Store.open(db_url)
        try:
            engine = CycleRunner(config, store, backoff=Backoff(base_s=0.0))
            for _ in range(6):
                report = engine.run("default")
                if report.write_calls() == 0 and report.status == "ok":
                    break
            assert report.write_calls() == 0, report.counts()
            outbox = store.outbox
            assert outbox.items([OutboxStatus.IN_FLIGHT.value, OutboxStatus.FAILED.value]) == []
        finally:
            store.close()
        assert fleet.duplicates(served, config) == {}
        assert fleet.missing(served, config) == {}
        for i, last in expected.items():
            names = fleet.last_names(served, config, i)
            assert set(names.values()) == {last}, (i, names)
    finally:
        served.stop()
