"""The daemon as a process: a clean stop on SIGTERM that leaves the outbox consistent, and two
daemons sharing one store where the profile lock (PostgreSQL advisory lock; a file lock on
SQLite) lets exactly one of them run the profile at a time."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from sync.apply import Backoff
from sync.cycle import CycleRunner
from sync.store import Store
from sync.store.models import OutboxStatus

from . import fleet


def _daemon_config(served, db_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    return fleet.write_config(served, db_url, tmp_path, interval_seconds=1.0)


def _wait_for_run(store: Store, timeout: float = 60.0, *, finished: int = 0) -> None:
    """Until a run has started (and ``finished`` runs have ended): by progress, not by a fixed
    sleep, so a loaded machine only makes the test slower, never wrong."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = store.runs.recent_runs(1000)
        if runs and sum(r.finished_at is not None for r in runs) >= finished:
            return
        time.sleep(0.05)
    raise AssertionError(f"the daemons did not start a run and finish {finished} within {timeout} s")


def test_sigterm_stops_cleanly_and_leaves_the_outbox_consistent(db_url: str, tmp_path: Path) -> None:
    served = fleet.start_emulators(rate_scale=20.0)
    store = Store.open(db_url)
    try:
        cfg_path, config = _daemon_config(served, db_url, tmp_path)
        proc = fleet.start_worker("run", "-c", str(cfg_path))
        _wait_for_run(store)
        time.sleep(1.0)  # well into the first cycle's pushes
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, proc.stderr.read() if proc.stderr else ""
        outbox = store.outbox
        assert outbox.items([OutboxStatus.IN_FLIGHT.value]) == []
        assert all(r.status != "running" for r in store.runs.recent_runs())
        # What was left pending is carried out by the next run, without duplicates.
        engine = CycleRunner(config, store, backoff=Backoff(base_s=0.0))
        for _ in range(4):
            if engine.run("default").write_calls() == 0:
                break
        assert fleet.duplicates(served, config) == {}
        assert fleet.missing(served, config) == {}
    finally:
        store.close()
        served.stop()


def test_two_daemons_on_one_store_never_run_a_profile_at_once(db_url: str, tmp_path: Path) -> None:
    served = fleet.start_emulators(rate_scale=20.0)
    store = Store.open(db_url)
    try:
        cfg_path, config = _daemon_config(served, db_url, tmp_path)
        first, second = fleet.Worker("run", "-c", str(cfg_path)), fleet.Worker("run", "-c", str(cfg_path))
        procs = [first.go(), second.go()]
        # Both daemons race for every scheduled cycle; three finished runs give the lock a
        # chance to be contended more than once.
        _wait_for_run(store, timeout=180.0, finished=3)
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            assert p.wait(timeout=30) == 0, p.stderr.read() if p.stderr else ""
        runs = sorted(store.runs.recent_runs(1000), key=lambda r: r.started_at)
        assert len(runs) >= 2
        for before, after in zip(runs, runs[1:]):
            assert before.finished_at is not None and after.started_at >= before.finished_at, (before, after)
        assert fleet.duplicates(served, config) == {}
    finally:
        store.close()
        served.stop()


def test_the_daemon_serves_webhooks_and_sigterm_stops_it_within_5s(db_url: str, tmp_path: Path) -> None:
    """``contactsync run`` with ``http.enabled``: the listener answers a signed delivery (and
    refuses an unsigned one), the event reaches every platform, and SIGTERM ends it all in 5 s."""
    import json
    import socket
    from datetime import UTC, datetime

    import httpx

    from connectors.gohighlevel.webhooks import emulator_keys, emulator_public_keys, sign
    from connectors.timestamps import iso_ms

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    served = fleet.start_emulators(rate_scale=20.0)
    store = Store.open(db_url)
    try:
        extra = {
            "http": {"enabled": True, "port": port},
            "webhooks": {"gohighlevel": {**emulator_public_keys(), "debounce_s": 0.05}},
        }
        cfg_path, config = fleet.write_config(served, db_url, tmp_path, interval_seconds=3600.0, extra=extra)
        proc = fleet.start_worker("run", "-c", str(cfg_path))
        _wait_for_run(store, finished=1)
        ghl = served.emulators["ghl"]
        rid = fleet.raw_id(served, "ghl", config, 20)
        assert rid is not None
        served.call(lambda: ghl.apply_edit(ghl.contacts[rid], {"lastName": "Hooked"}))
        body = json.dumps(
            {
                "type": "ContactUpdate",
                "locationId": ghl.location_id,
                "id": rid,  # type: ignore[attr-defined]
                "timestamp": iso_ms(datetime.now(UTC)),
                "webhookId": "crash-1",
            }
        ).encode()
        url = f"http://127.0.0.1:{port}/webhooks/gohighlevel"
        assert httpx.post(url, content=body, timeout=10).status_code == 401
        ed, rs = emulator_keys()
        assert httpx.post(url, content=body, headers=sign(body, ("ed25519",), ed, rs), timeout=10).status_code == 200
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if sum(1 for r in store.runs.recent_runs(50) if r.kind == "webhook" and r.finished_at) >= 1:
                break
            time.sleep(0.1)
        names = fleet.last_names(served, config, 20)
        assert set(names.values()) == {"Hooked"} and len(names) >= 3, names
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() - started < 5.0
    finally:
        store.close()
        served.stop()
