"""Chaos: 10% of requests to every emulator get an injected fault (429 with and without
Retry-After, 5xx, stalls past the client timeout, dropped connections — before or after a write
was applied —, repeated and shifted pages). The sync still converges: one contact per human on
every platform, and the edits made meanwhile arrive everywhere."""

from __future__ import annotations

from pathlib import Path

from connectors.emulation import FaultConfig
from sync.apply import Backoff
from sync.cycle import CycleRunner
from sync.store import Store
from sync.store.models import OutboxStatus

from . import fleet


def test_ten_percent_faults_everywhere_still_converge(db_url: str, tmp_path: Path) -> None:
    faults = FaultConfig(rate=0.10, seed=7, slow_seconds=0.4, retry_after_s=0.01)
    served = fleet.start_emulators(rate_scale=200.0, faults=faults)
    store = Store.open(db_url)
    try:
        _, config = fleet.write_config(served, db_url, tmp_path)
        engine = CycleRunner(config, store, backoff=Backoff(base_s=0.0))
        engine.run("default", kind="backfill", full=True)
        engine.run("default")
        edits = {3: ("ghl", "Chaos1"), 20: ("acquire", "Chaos2"), 30: ("comm100", "Chaos3")}
        for i, (platform, last) in edits.items():
            rid = fleet.raw_id(served, platform, config, i)
            assert rid is not None, (platform, i)
            served.call(lambda: served.emulators[platform].external_edit(rid, fleet.edit(platform, i, last)))  # noqa: B023 - called at once
        reports = []
        for _ in range(12):
            reports.append(engine.run("default"))
            if reports[-1].status == "ok" and reports[-1].write_calls() == 0:
                break
        assert reports[-1].write_calls() == 0 and reports[-1].status == "ok", [r.counts() for r in reports]
        injected = sum(len(e.fault_log) for e in served.emulators.values())
        assert injected > 20, "the faults were not exercised"
        assert fleet.duplicates(served, config) == {}
        assert fleet.missing(served, config) == {}
        for i, (_, last) in edits.items():
            assert set(fleet.last_names(served, config, i).values()) == {last}, i
        assert store.outbox.items([OutboxStatus.IN_FLIGHT.value]) == []
    finally:
        store.close()
        served.stop()
