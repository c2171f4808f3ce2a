"""Planning a large plan in worker processes (``sync.plan.pool``), over a real store (SQLite
file; PostgreSQL when configured): the same plan, the same stored state and the same intents as
planning in one process, each slice committed with its intents, secrets kept in the parent,
and a failing worker failing the plan without marking anything clean it did not plan."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from sync.apply import PlanQueue, intents_for
from sync.config import Config
from sync.plan.build import build_plan
from sync.plan.pool import PlanningWorkerError, worker_config
from sync.store import Store
from sync.store.models import Conflict, Outbox, Person, Snapshot
from tests.reconcile.test_planning_store import (
    CAPS,
    NAMES,
    _without_person_ids,
    acq,
    c100,
    count,
    ghl,
    make_config,
    stage,
)


def _stage_people(store: Store, config: Config, n: int = 60) -> None:
    # Overlapping people (acq + ghl share emails), a conflicting last name on every third
    # shared person, and a Comm100 contact with a duplicate merged into it.
    stage(store, config, "acq", *[acq(i, f"P{i} X", f"p{i}@x.com", f"+1415555{i:04d}", minute=i) for i in range(1, n)])
    stage(
        store,
        config,
        "ghl",
        *[ghl(f"g{i}", f"P{i}", "Z" if i % 3 == 0 else "X", f"P{i}@X.com", minute=2 * i) for i in range(1, n, 2)],
    )
    stage(
        store, config, "c100", c100("c-1", "P1", "X", "p1@x.com"), c100("c-2", "P1", "X", "p1@x.com", merged_into="c-1")
    )


def _outbox(store: Store) -> list[dict[str, Any]]:
    with store.session() as s:
        rows = s.scalars(select(Outbox).order_by(Outbox.connection, Outbox.op, Outbox.remote_id, Outbox.id)).all()
        out = [
            {
                "connection": r.connection,
                "op": r.op,
                "remote_id": r.remote_id,
                "payload": r.payload,
                "fields": r.fields,
                "status": r.status,
            }
            for r in rows
        ]
    return sorted(out, key=lambda r: json.dumps(r, sort_keys=True, default=str))


def _golden(store: Store) -> list[str]:
    with store.session() as s:
        return sorted(
            json.dumps(f, sort_keys=True) for f in s.scalars(select(Person.fields).where(Person.merged_into.is_(None)))
        )


def test_workers_plan_the_same_plan_state_and_intents_as_one_process(store: Store) -> None:
    config = make_config()
    _stage_people(store, config)
    reference = build_plan(store, config, NAMES, CAPS, commit=False, workers=1)  # a dry run, in this process
    queue = PlanQueue(CAPS)
    commits: list[int] = []
    parallel = build_plan(
        store,
        config,
        NAMES,
        CAPS,
        chunk_size=8,
        queue=queue,
        workers=2,
        parallel_from=1,
        on_commit=lambda: commits.append(count(store, Person, Person.dirty.is_(False))),
    )
    # Every slice committed on its own, and the push was told after each one.
    assert len(commits) == 8 and commits[-1] == parallel.persons
    assert parallel.summary() == reference.summary() and parallel.persons == len(reference.golden) == 59
    assert sorted(
        json.dumps(c, sort_keys=True, default=str)
        for c in _without_person_ids([c.to_json() for c in parallel.conflicts])
    ) == sorted(
        json.dumps(c, sort_keys=True, default=str)
        for c in _without_person_ids([c.to_json() for c in reference.conflicts])
    )
    assert parallel.conflicts and count(store, Conflict) == len(parallel.conflicts)
    # The state stored: every person clean with the reference's golden record, its snapshots.
    assert count(store, Person, Person.dirty.is_(True)) == 0
    live_golden = sorted(json.dumps(_json_fields(g), sort_keys=True) for g in reference.golden.values())
    assert _golden(store) == live_golden
    # (Read-confirmed ones; a create's snapshot is stored with the push's result.)
    assert count(store, Snapshot) == len(reference.snapshots)
    # The intents: one per op, counted by the parent's queue from the workers' reports.
    assert queue.result.added + queue.result.excluded == len(reference.ops)
    assert count(store, Outbox) == len(reference.ops)
    expected = sorted(
        json.dumps([i.connection, i.op, i.remote_id, i.payload], sort_keys=True, default=str)
        for i in intents_for(reference.ops, CAPS)
    )
    got = [
        json.dumps([r["connection"], r["op"], r["remote_id"], r["payload"]], sort_keys=True, default=str)
        for r in _outbox(store)
    ]
    assert sorted(got) == expected
    # Nothing new: nothing planned, in workers or not.
    assert build_plan(store, config, NAMES, CAPS, queue=queue, workers=2, parallel_from=1).is_empty()


def _json_fields(fields: Any) -> Any:
    from sync.canonical import fields_to_json

    return fields_to_json(fields)


def test_a_plan_below_the_threshold_or_with_one_worker_is_planned_in_this_process(store: Store) -> None:
    config = make_config()
    _stage_people(store, config, n=20)
    queued: list[Any] = []
    # A plain callable cannot be rebuilt in a worker: planned here, through it.
    plan = build_plan(
        store, config, NAMES, CAPS, queue=lambda _s, part: queued.append(part), workers=2, parallel_from=1
    )
    assert plan.persons == 19 and sum(len(p.golden) for p in queued) == 19


def test_workers_get_no_credentials() -> None:
    base = make_config()
    connections = dict(base.connections)
    connections["acq"] = connections["acq"].model_copy(update={"credentials": {"api_key": SecretStr("s3cret-acq-key")}})
    config = base.model_copy(update={"connections": connections})
    config.mapping("acq")  # loaded in the parent: not sent (mappings hold closures)
    copy = worker_config(config)
    assert all(not c.credentials for c in copy.connections.values())
    assert config.connections["acq"].credentials["api_key"].get_secret_value() == "s3cret-acq-key"
    import pickle

    blob = pickle.dumps(copy)
    assert b"s3cret-acq-key" not in blob
    assert pickle.loads(blob).mapping("acq").platform == "acquire"


def test_a_failing_worker_fails_the_plan_and_leaves_its_persons_dirty(store: Store, tmp_path: Path) -> None:
    # A mapping file the parent loaded and that is gone when the workers start (it was edited
    # away mid-run): the workers cannot build the plan, so nothing of it is stored as planned.
    mapping = tmp_path / "acq.yaml"
    from sync.mapping.loader import shipped_mapping_text

    mapping.write_text(shipped_mapping_text("acquire"))
    base = make_config()
    connections = dict(base.connections)
    connections["acq"] = connections["acq"].model_copy(update={"mapping": mapping})
    config = base.model_copy(update={"connections": connections})
    _stage_people(store, config, n=20)
    mapping.unlink()
    queue = PlanQueue(CAPS)
    with pytest.raises(PlanningWorkerError, match="acq.yaml"):
        build_plan(store, config, NAMES, CAPS, chunk_size=4, queue=queue, workers=2, parallel_from=1)
    # The match committed (it stands on its own); no person was marked clean, no intent queued.
    assert count(store, Person) == 19
    assert count(store, Person, Person.dirty.is_(False)) == 0
    with store.session() as s:
        assert s.execute(select(func.count()).select_from(Outbox)).scalar_one() == 0


_ORPHAN_SCRIPT = """
import multiprocessing, os, sys, time
from sync.plan.pool import _die_with_parent

def child(parent):
    _die_with_parent(parent)
    print("ready", flush=True)
    time.sleep(60)

if __name__ == "__main__":
    proc = multiprocessing.get_context("spawn").Process(target=child, args=(os.getpid(),))
    proc.start()
    print(proc.pid, flush=True)
    time.sleep(60)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return not any(line.startswith("State:") and "Z" in line.split()[1] for line in fh)
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="Linux only")
def test_a_worker_dies_with_its_parent(tmp_path: Path) -> None:
    """A kill -9 of the daemon takes its planning workers with it (no orphan commits a slice
    while a restarted daemon plans the same persons)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "orphan.py"
    script.write_text(_ORPHAN_SCRIPT)
    root = Path(__file__).resolve().parents[2]
    parent = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert parent.stdout.readline().strip() == "ready"
        assert _alive(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child)
    finally:
        parent.kill()
