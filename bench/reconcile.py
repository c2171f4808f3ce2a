"""Benchmark: matching, reconcile and planning over a large staged store.

Synthetic people spread over four connections (Acquire, GoHighLevel, Comm100, DM Champ): about
40% of people are on several platforms, typed differently there (email case, phone formats), a
few with a different last name on one platform (conflicts) and a few with a Comm100 duplicate
merged into their contact (mergeToContactId). Records are staged through ``sync.detect.stage`` /
``Store.stage_page`` (not timed). Then, timed:

* ``match_s``: clustering with the keys in memory (``sync.match.match_records``);
* ``match_io_s``: loading records and keys from the store, clustering, writing person ids,
  new persons, folds and reviews back, committed;
* ``reconcile_plan_s``: ``sync.plan.build.build_plan`` — views loaded, payloads read through the
  mappings, three-way reconcile, op payloads rendered, golden records/snapshots/conflicts stored;
* ``incremental_s``: ``build_plan`` again after ``--changes`` records (default 1,000) were
  edited and staged: the cost follows the change, not the size of the store.

It runs on a new SQLite store and, when ``CONTACTSYNC_TEST_DATABASE_URL`` is set (a
PostgreSQL database, as for the test suite: EVERY TABLE OF IT IS EMPTIED first), on that store
too, each in a process of its own; the PostgreSQL figures go under ``"postgres"`` in the last
line. ``--store URL`` runs on that one store only.

``peak_rss_mb`` is the peak of the process's resident set plus its planning workers' (large
plans are planned in worker processes, one per core, ``--workers``; ``sync.plan.pool``). The LAST line printed is one JSON object:
    {"records", "persons", "match_s", "match_io_s", "reconcile_plan_s", "peak_rss_mb",
     "incremental_changes", "incremental_s", "postgres": {the same keys}}

    .venv/bin/python bench/reconcile.py [--records 1000000] [--store URL] [--seed 7] [--profile FILE] [--profile-incremental FILE]
                                        [--cache DIR]

``--cache DIR`` (SQLite only) keeps a copy of the staged store (and the incremental edits) in
DIR, keyed by records and seed, and starts from that copy next time: iterating on planning
then skips generating and staging, which take longer than the phases measured. (Generating and
staging run in a child process either way: the measured process never holds the input.)

Both ``build_plan`` calls stream (``keep_ops=False``, as a cycle with an outbox queue does):
every payload is rendered and the plan state stored, but the returned Plan keeps counts only.
The reconcile + plan log line also gives the phase's CPU seconds, steadier than wall time on
a shared machine.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import pickle
import random
import resource
import shutil
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from connectors.base import RawRecord  # noqa: E402
from connectors.registry import connector_class  # noqa: E402
from sync.config import Config  # noqa: E402
from sync.detect.stage import stage_record  # noqa: E402
from sync.match import MatchInput, match_records  # noqa: E402
from sync.plan.build import build_plan, run_match  # noqa: E402
from sync.plan.context import match_policy  # noqa: E402
from sync.plan.pool import default_workers  # noqa: E402
from sync.store import Store, display_url, upgrade  # noqa: E402
from sync.store.bulk import empty_tables  # noqa: E402
from sync.store.persons import load_match_input  # noqa: E402

NAMES = ["acq", "c100", "dm", "ghl"]
PLATFORMS = {"acq": "acquire", "ghl": "gohighlevel", "c100": "comm100", "dm": "dmchamp"}
FIRST = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "John", "Margaret", "Ken"]
LAST = ["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Backus", "Hamilton", "Thompson"]
T0 = datetime(2026, 1, 1, tzinfo=UTC)
ZERO_GUID = "00000000-0000-0000-0000-000000000000"
# When set (a PostgreSQL URL, as for the test suite), the benchmark runs there too.
PG_ENV = "CONTACTSYNC_TEST_DATABASE_URL"


def config() -> Config:
    return Config.model_validate(
        {
            "connections": {
                "acq": {"platform": "acquire", "base_url": "http://acq.bench"},
                "ghl": {"platform": "gohighlevel", "base_url": "http://ghl.bench", "options": {"location_id": "L1"}},
                "c100": {"platform": "comm100", "base_url": "http://c100.bench", "options": {"site_id": 1}},
                "dm": {"platform": "dmchamp", "base_url": "http://dm.bench"},
            }
        }
    )


def _email(rng: random.Random, email: str) -> str:
    # Varied case: the same address typed differently on different platforms.
    if rng.random() < 0.3:
        local, _, domain = email.partition("@")
        return f"{local.title()}@{domain.upper()}"
    return email


def _phone(rng: random.Random, e164: str) -> str:
    if rng.random() < 0.15:
        n = e164[2:]
        return rng.choice([f"+1 {n[:3]}-{n[3:6]}-{n[6:]}", f"({n[:3]}) {n[3:6]}-{n[6:]}"])
    return e164


def payload(
    conn: str,
    rid: str,
    first: str,
    last: str,
    email: str | None,
    phone: str | None,
    stamp: datetime,
    merged_into: str | None = None,
) -> dict[str, Any]:
    iso = stamp.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    if conn == "acq":
        fields: dict[str, Any] = {"name": f"{first} {last}"}
        if email:
            fields["email"] = email
        if phone:
            fields["phone"] = phone
        return {
            "id": int(rid),
            "archive": "no",
            "companyId": None,
            "dateCreated": iso,
            "dateUpdated": iso,
            "fields": fields,
            "tags": [],
        }
    if conn == "ghl":
        out: dict[str, Any] = {
            "id": rid,
            "locationId": "L1",
            "firstName": first,
            "lastName": last,
            "tags": [],
            "customFields": [],
            "dateAdded": iso,
            "dateUpdated": iso,
        }
        if email:
            out["email"] = email
        if phone:
            out["phone"] = phone
        return out
    if conn == "c100":
        idents = (
            [{"id": rid + "-e", "contactId": rid, "contactIdentityType": "Email", "name": "", "value": email}]
            if email
            else []
        )
        out = {
            "id": rid,
            "name": f"{first} {last}",
            "firstName": first,
            "lastName": last,
            "createTime": iso,
            "lastUpdatedTime": iso,
            "mergeToContactId": merged_into or ZERO_GUID,
            "contactIdentities": idents,
        }
        if phone:
            out["phone"] = phone
        return out
    out = {"phoneNumber": phone, "firstName": first, "lastName": last, "is_bot_active": True, "do_not_disturb": False}
    if email:
        out["email"] = email
    return out


def generate(n: int, seed: int) -> tuple[dict[str, list[RawRecord]], int]:
    """About ``n`` raw records per connection lists, and the number of people behind them."""
    rng = random.Random(seed)
    out: dict[str, list[RawRecord]] = {c: [] for c in NAMES}
    total = 0
    person = 0
    ids = iter(range(1, 10**9))
    while total < n:
        person += 1
        first, last = rng.choice(FIRST), rng.choice(LAST)
        email = f"{first.lower()}.{last.lower()}{person}@example{person % 97}.com" if rng.random() < 0.9 else None
        phone = (
            f"+1{rng.randrange(201, 990)}{person % 10_000_000:07d}" if (rng.random() < 0.8 or email is None) else None
        )
        if rng.random() < 0.6:
            conns = [rng.choice(["acq", "ghl", "c100"])]
        else:
            conns = rng.sample(NAMES, rng.randint(2, 4))
        if phone is None and "dm" in conns:
            conns.remove("dm")
        if not conns:
            conns = ["acq"]
        odd = rng.choice(conns) if len(conns) > 1 and rng.random() < 0.05 else None  # a conflict
        for conn in conns:
            stamp = T0 + timedelta(seconds=rng.randrange(10**7))
            rid = str(next(ids)) if conn == "acq" else f"{conn}-{next(ids)}"
            name = "Byron" if conn == odd else last
            raw = payload(conn, rid, first, name, email and _email(rng, email), phone and _phone(rng, phone), stamp)
            out[conn].append(RawRecord(rid, raw, stamp))
            total += 1
            if conn == "c100" and rng.random() < 0.01:
                # A Comm100 duplicate, merged into this contact.
                dup = f"c100-{next(ids)}"
                raw = payload("c100", dup, first, last, email, phone, stamp, merged_into=rid)
                out["c100"].append(RawRecord(dup, raw, stamp, merged_into=rid))
                total += 1
    return out, person


def edits(records: dict[str, list[RawRecord]], changes: int, seed: int) -> dict[str, list[RawRecord]]:
    """``changes`` records of the readable platforms with a new last name, a day later."""
    rng = random.Random(seed + 1)
    flat = [(c, r) for c in ("acq", "ghl", "c100") for r in records[c] if not r.merged_into]
    out: dict[str, list[RawRecord]] = {}
    for conn, rec in rng.sample(flat, changes):
        raw = json.loads(json.dumps(rec.payload))
        if conn == "acq":
            raw["fields"]["name"] = raw["fields"]["name"].split(" ")[0] + " Edited"
        else:
            raw["lastName"] = "Edited"
            if conn == "c100":
                raw["name"] = f"{raw['firstName']} Edited"
        out.setdefault(conn, []).append(RawRecord(rec.remote_id, raw, T0 + timedelta(days=400)))
    return out


def stage_all(store: Store, cfg: Config, records: dict[str, list[RawRecord]], page: int = 5000) -> None:
    for conn, recs in records.items():
        mapping = cfg.mapping(conn)
        for i in range(0, len(recs), page):
            store.staging.stage_page(conn, [stage_record(mapping, r) for r in recs[i : i + page]])


class RssSampler:
    """The peak of the resident sets of this process and its children (the planning workers)
    added together, sampled from /proc every 50 ms. (A child's own ``ru_maxrss`` cannot be
    used: it starts from the parent's image it was forked from before its exec.)"""

    def __init__(self) -> None:
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def _rss_kb(pid: int) -> int:
        try:
            with open(f"/proc/{pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    @staticmethod
    def _children(pid: int) -> list[int]:
        out: list[int] = []
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/children") as fh:
                    out.extend(int(c) for c in fh.read().split())
        except OSError:
            pass
        return out

    def sample(self) -> int:
        me = os.getpid()
        total = self._rss_kb(me) + sum(self._rss_kb(c) for c in self._children(me))
        self.peak_kb = max(self.peak_kb, total)
        return total

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.sample()

    def peak_mb(self) -> float:
        """The sampled peak, and never less than this process's own peak resident set."""
        self.sample()
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return max(self.peak_kb, own) / 1024


def _cpu_s() -> float:
    """CPU seconds of this process and of its finished children (the planning workers)."""
    own = time.process_time()
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own + kids.ru_utime + kids.ru_stime


def prepare(url: str, records: int, seed: int, changes: int, edits_path: Path) -> None:
    """Generate ``records`` records, stage them into the store at ``url`` and pickle the
    incremental edits (with the record count) to ``edits_path``. Runs in a child process."""
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    store = Store.open(url)
    t = time.perf_counter()
    generated, people = generate(records, seed)
    n = sum(len(v) for v in generated.values())
    log(f"generated {n:,} records of {people:,} people in {time.perf_counter() - t:.1f}s")
    t = time.perf_counter()
    stage_all(store, config(), generated)
    log(f"staged in {time.perf_counter() - t:.1f}s")
    with open(edits_path, "wb") as fh:
        pickle.dump((n, edits(generated, changes, seed)), fh)
    store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--changes", type=int, default=1000)
    ap.add_argument("--store", default=None, help="store URL (default: a new SQLite file)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--profile", default=None, help="write a cProfile of the reconcile + plan phase to this file")
    ap.add_argument("--profile-incremental", default=None, help="write a cProfile of the incremental plan to this file")
    ap.add_argument("--cache", default=None, help="directory keeping staged SQLite stores between runs")
    ap.add_argument(
        "--workers",
        type=int,
        default=None,
        help="planning worker processes (default: one per core, at most four; 1: in this process)",
    )
    args = ap.parse_args()
    if args.store:
        print(json.dumps(measure_apart(args, args.store)))
        return
    result = measure_apart(args, None)
    pg = os.environ.get(PG_ENV)
    if pg:
        print(f"SQLite: {json.dumps(result)}", file=sys.stderr, flush=True)
        print(f"PostgreSQL ({display_url(pg)}):", file=sys.stderr, flush=True)
        result["postgres"] = measure_apart(args, pg, empty=True)
    print(json.dumps(result))


def measure_apart(args: argparse.Namespace, url: str | None, *, empty: bool = False) -> dict[str, Any]:
    """:func:`measure` in a child process of its own, so each store's peak RSS is its own."""
    with tempfile.TemporaryDirectory(prefix="cs-bench-reconcile-result-") as out:
        path = Path(out) / "result.json"
        child = multiprocessing.get_context("spawn").Process(target=_measure_to, args=(args, url, empty, path))
        child.start()
        child.join()
        if child.exitcode != 0:
            raise SystemExit(f"the benchmark on {display_url(url or 'sqlite')} failed (exit {child.exitcode})")
        return dict(json.loads(path.read_text()))


def _measure_to(args: argparse.Namespace, url: str | None, empty: bool, path: Path) -> None:
    path.write_text(json.dumps(measure(args, url, empty=empty)))


def measure(args: argparse.Namespace, given: str | None, *, empty: bool = False) -> dict[str, Any]:
    """Stage, then time matching, planning and an incremental plan on the store at ``given``
    (None: a new SQLite file; ``empty``: every table emptied first); returns the figures."""
    tmp = tempfile.TemporaryDirectory(prefix="cs-bench-reconcile-")
    url = given or f"sqlite:///{Path(tmp.name) / 'store.db'}"
    upgrade(url)
    if empty:
        empty_tables(url)  # the records of an earlier run would be matched again
    store = Store.open(url)
    cfg = config()
    caps = {n: connector_class(PLATFORMS[n]).capabilities for n in NAMES}
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731

    cached = None
    if args.cache and given is None:
        cached = Path(args.cache) / f"reconcile-{args.records}-{args.seed}-{args.changes}"
    if cached is not None and (cached / "store.db").exists():
        store.close()
        shutil.copyfile(cached / "store.db", Path(tmp.name) / "store.db")
        store = Store.open(url)
        with open(cached / "edits.pickle", "rb") as fh:
            n, edited = pickle.load(fh)
        log(f"staged store of {n:,} records copied from {cached}")
    else:
        # Generated and staged in a child process: the figures measure the engine, and this
        # process never holds the generated input (nor the heap it leaves behind).
        edits_path = Path(tmp.name) / "edits.pickle"
        store.close()
        ctx = multiprocessing.get_context("spawn")
        child = ctx.Process(target=prepare, args=(url, args.records, args.seed, args.changes, edits_path))
        child.start()
        child.join()
        if child.exitcode != 0:
            raise SystemExit(f"generating and staging the records failed (exit {child.exitcode})")
        store = Store.open(url)
        with open(edits_path, "rb") as fh:
            n, edited = pickle.load(fh)
        if cached is not None:
            cached.mkdir(parents=True, exist_ok=True)
            store.close()
            shutil.copyfile(Path(tmp.name) / "store.db", cached / "store.db")
            shutil.copyfile(edits_path, cached / "edits.pickle")
            store = Store.open(url)

    workers = default_workers() if args.workers is None else args.workers
    rss = RssSampler()
    policy = match_policy(cfg, caps)
    with store.session() as s:
        rows = load_match_input(s, full=True)
    inp = MatchInput(
        rows.record_ids,
        rows.connections,
        rows.remote_ids,
        rows.person_ids,
        rows.merged_into,
        rows.deleted,
        rows.key_records,
        rows.key_kinds,
        rows.key_values,
    )
    t = time.perf_counter()
    result = match_records(inp, policy)
    match_s = time.perf_counter() - t
    log(f"match: {match_s:.2f}s, {result.new_persons:,} persons, {len(result.reviews):,} reviews")
    del inp, rows, result

    # match_io_s: the same, from the store and back (build_plan's first step, committed alone).
    t = time.perf_counter()
    run_match(store, cfg, caps)
    match_io_s = time.perf_counter() - t
    log(f"match with store IO: {match_io_s:.2f}s, peak RSS so far {rss.peak_mb():.0f} MB")

    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    t, cpu = time.perf_counter(), _cpu_s()
    plan = build_plan(store, cfg, NAMES, caps, commit=True, keep_ops=False, workers=args.workers)
    reconcile_plan_s = time.perf_counter() - t
    cpu = _cpu_s() - cpu  # CPU seconds: steadier than wall time on a shared machine
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(args.profile)
    persons = plan.persons
    log(
        f"reconcile + plan: {reconcile_plan_s:.2f}s ({cpu:.2f}s CPU, up to {workers} workers), {persons:,} persons, summary {plan.summary()}, "
        f"{len(plan.conflicts):,} conflicts, peak RSS so far {rss.peak_mb():.0f} MB"
    )
    del plan

    # Incremental: a few records edited on their platform, staged, then one planning run.
    stage_all(store, cfg, edited)
    inc_profiler = None
    if args.profile_incremental:
        import cProfile

        inc_profiler = cProfile.Profile()
        inc_profiler.enable()
    t = time.perf_counter()
    inc = build_plan(store, cfg, NAMES, caps, commit=True, keep_ops=False, workers=args.workers)
    incremental_s = time.perf_counter() - t
    if inc_profiler is not None:
        inc_profiler.disable()
        inc_profiler.dump_stats(args.profile_incremental)
    log(f"incremental: {incremental_s:.3f}s for {args.changes} changes, summary {inc.summary()}")

    peak = rss.peak_mb()
    store.close()
    tmp.cleanup()
    return {
        "records": n,
        "persons": persons,
        "match_s": round(match_s, 3),
        "match_io_s": round(match_io_s, 3),
        "reconcile_plan_s": round(reconcile_plan_s, 3),
        "peak_rss_mb": round(peak, 1),
        "incremental_changes": args.changes,
        "incremental_s": round(incremental_s, 3),
    }


if __name__ == "__main__":
    main()
