"""Benchmark: bulk staging throughput of the store (target >= 20,000 records/s per store).

Stages N synthetic records (pages of 1,000, two identity keys each) into a fresh store: a new
SQLite file in a temp directory, and, when CONTACTSYNC_TEST_DATABASE_URL is set, a scratch
schema in that PostgreSQL database, dropped afterwards (test data is never touched).
Building the records (payload hashes included) is not timed; the store work is. With
``--repeat R`` each store is measured R times on fresh stores and the median reported.

The LAST line printed is a JSON object:
    {"records": N, "sqlite_records_per_s": X, "postgres_records_per_s": Y, "load_avg_1m": [A, B]}
(``postgres_records_per_s`` only with the environment variable; ``load_avg_1m``: the machine's
1-minute load average before and after, since a busy machine slows both stores).

    .venv/bin/python bench/stage.py [--records N] [--page-size 1000] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url

from sync.normalize import IdentityKey
from sync.store import StagedRecord, Store, payload_hash, upgrade
from sync.store.connect import make_engine


def synthetic(n: int) -> list[StagedRecord]:
    """N contact-like records with an email and a phone key each."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    out = []
    for i in range(n):
        email = f"person{i}@example{i % 97}.com"
        phone = f"+1555{i:07d}"
        payload = {
            "id": f"c{i:08d}",
            "firstName": f"First{i}",
            "lastName": f"Last{i % 5000}",
            "email": email,
            "phone": phone,
            "companyName": f"Company {i % 1000}",
            "tags": ["lead", f"t{i % 13}"],
            "customFields": [{"id": "cf1", "value": str(i)}],
            "dateUpdated": (t0 + timedelta(seconds=i)).isoformat(),
        }
        keys = [IdentityKey("email", email), IdentityKey("phone", phone)]
        out.append(StagedRecord(payload["id"], payload, payload_hash(payload), t0 + timedelta(seconds=i), keys))
    return out


def stage_all(url: str, records: list[StagedRecord], page_size: int) -> float:
    """Seconds to stage every page (cursor advanced per page) into the migrated store at url."""
    store = Store.open(url)
    try:
        start = time.perf_counter()
        for i in range(0, len(records), page_size):
            page = records[i : i + page_size]
            store.staging.stage_page("bench", page, cursor={"since": page[-1].payload["dateUpdated"]})
        elapsed = time.perf_counter() - start
        result = store.staging.stage_page("bench", records[:page_size])  # sanity: a repeat is unchanged
        assert result.unchanged == min(page_size, len(records)), result
        return elapsed
    finally:
        store.close()


@contextmanager
def fresh_sqlite() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="cs-bench-") as d:
        url = f"sqlite:///{Path(d) / 'bench.db'}"
        upgrade(url)
        yield url


@contextmanager
def fresh_postgres(base_url: str) -> Iterator[str]:
    """A scratch schema in the configured database (reached through search_path), dropped
    afterwards: the bench never touches the tables the tests use."""
    name = f"cs_bench_{uuid.uuid4().hex[:12]}"
    admin = make_engine(base_url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{name}"'))
    try:
        url = make_url(base_url).update_query_dict({"options": f"-csearch_path={name}"})
        scratch = url.render_as_string(hide_password=False)
        upgrade(scratch)
        yield scratch
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        admin.dispose()


def measure(fresh, records: list[StagedRecord], page_size: int, repeat: int) -> float:  # type: ignore[no-untyped-def]
    rates = []
    for _ in range(repeat):
        with fresh() as url:
            rates.append(len(records) / stage_all(url, records, page_size))
    return statistics.median(rates)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--page-size", type=int, default=1_000)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args(argv)

    records = synthetic(args.records)
    load_before = os.getloadavg()[0]
    figures: dict[str, object] = {"records": args.records}
    sqlite_rate = measure(fresh_sqlite, records, args.page_size, args.repeat)
    print(f"sqlite:     {sqlite_rate:,.0f} records/s", file=sys.stderr)
    figures["sqlite_records_per_s"] = round(sqlite_rate)
    pg = os.environ.get("CONTACTSYNC_TEST_DATABASE_URL")
    if pg:
        pg_rate = measure(lambda: fresh_postgres(pg), records, args.page_size, args.repeat)
        print(f"postgresql: {pg_rate:,.0f} records/s", file=sys.stderr)
        figures["postgres_records_per_s"] = round(pg_rate)
    figures["load_avg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
