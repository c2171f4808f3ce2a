"""Benchmark: contactsync's matching against Splink 5 on DuckDB doing deterministic linkage of
the same records on email and phone — the reference issue 4 sets for ``match_s``.

The records are ``bench/reconcile.py``'s (same generator, seed and size), staged into a store
(or taken from its ``--cache``); both sides then get the same normalized keys from that store
(``load_match_input``: lower-cased emails, E.164 phones, identity values), in memory:

* ``contactsync_s``: ``sync.match.match_records`` on the keys (what ``match_s`` times there);
* ``splink_s``: Splink's ``deterministic_link`` with blocking rules ``email`` and ``phone``
  over one DuckDB table (one row per record: its email and its phone), then
  ``cluster_pairwise_predictions_at_threshold`` (connected components) — from a table already
  in DuckDB to a cluster id per record, the same job.

Each side runs ``--repeat`` times (default 3); the figures are medians of that one run, and
``ratio`` is splink_s / contactsync_s. The persons found are compared: Splink's plain union
joins records that only share a phone, which contactsync keeps apart when their emails differ
(a weak key), so its cluster count may be lower; the bench prints both.

Needs the ``bench`` extra (``pip install -e '.[bench]'``: Splink 5, DuckDB). Last line:
    {"records", "repeat", "contactsync_s", "splink_s", "ratio", "persons_contactsync", "clusters_splink"}

    .venv/bin/python bench/splink_baseline.py [--records 1000000] [--seed 7] [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from reconcile import config, prepare  # noqa: E402

from connectors.registry import connector_class  # noqa: E402
from sync.match import MatchInput, match_records  # noqa: E402
from sync.plan.context import match_policy  # noqa: E402
from sync.store import Store, upgrade  # noqa: E402
from sync.store.persons import load_match_input  # noqa: E402

PLATFORMS = {"acq": "acquire", "ghl": "gohighlevel", "c100": "comm100", "dm": "dmchamp"}


def staged_store(records: int, seed: int, cache: str | None, workdir: Path) -> str:
    """URL of a SQLite store holding bench/reconcile.py's records (from its cache if there)."""
    path = workdir / "store.db"
    cached = Path(cache) / f"reconcile-{records}-{seed}-1000" / "store.db" if cache else None
    if cached is not None and cached.exists():
        shutil.copyfile(cached, path)
        return f"sqlite:///{path}"
    url = f"sqlite:///{path}"
    upgrade(url)
    child = multiprocessing.get_context("spawn").Process(
        target=prepare, args=(url, records, seed, 1000, workdir / "edits.pickle")
    )
    child.start()
    child.join()
    if child.exitcode != 0:
        raise SystemExit(f"generating and staging the records failed (exit {child.exitcode})")
    return url


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cache", default=None, help="bench/reconcile.py's --cache directory, to reuse its store")
    args = ap.parse_args()
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    try:
        import duckdb
        from splink import Linker, SettingsCreator, block_on
        from splink.backends.duckdb import DuckDBAPI
    except ImportError:
        raise SystemExit("this bench needs the bench extra: .venv/bin/pip install -e '.[bench]'") from None
    logging.getLogger("splink").setLevel(logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="cs-bench-splink-") as tmp:
        store = Store.open(staged_store(args.records, args.seed, args.cache, Path(tmp)))
        with store.session() as s:
            rows = load_match_input(s, full=True)
        store.close()
    n = len(rows)
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
    caps = {c: connector_class(p).capabilities for c, p in PLATFORMS.items()}
    policy = match_policy(config(), caps)

    # One row per record for Splink: its (first) email and phone, the same normalized values.
    email: list[str | None] = [None] * n
    phone: list[str | None] = [None] * n
    for rec, kind, value in zip(rows.key_records.tolist(), rows.key_kinds, rows.key_values):
        if kind == "email" and email[rec] is None:
            email[rec] = value
        elif kind == "phone" and phone[rec] is None:
            phone[rec] = value
    con = duckdb.connect()
    import pyarrow as pa

    con.register("staged", pa.table({"unique_id": list(range(n)), "email": email, "phone": phone}))
    con.execute("CREATE TABLE records AS SELECT * FROM staged").fetchall()
    con.unregister("staged")
    log(f"{n:,} records, keys loaded; timing {args.repeat} runs each")

    ours: list[float] = []
    persons = 0
    for _ in range(args.repeat):
        t = time.perf_counter()
        result = match_records(inp, policy)
        ours.append(time.perf_counter() - t)
        persons = int(result.new_persons)
        del result

    theirs: list[float] = []
    clusters = 0
    settings = SettingsCreator(
        link_type="dedupe_only",
        blocking_rules_to_generate_predictions=[block_on("email"), block_on("phone")],
        retain_intermediate_calculation_columns=False,
        retain_matching_columns=False,
    )
    for i in range(args.repeat):
        db_api = DuckDBAPI(connection=con)
        t = time.perf_counter()
        linker = Linker(db_api.register("records", dataset_display_name=f"records_{i}"), settings)
        pairs = linker.inference.deterministic_link()
        clustered = linker.clustering.cluster_pairwise_predictions_at_threshold(pairs)
        clusters = con.execute(f"SELECT count(DISTINCT cluster_id) FROM {clustered.physical_name}").fetchone()[0]
        theirs.append(time.perf_counter() - t)
        log(
            f"splink run {i + 1}: {theirs[-1]:.2f}s, {clusters:,} clusters; contactsync {ours[i]:.2f}s, {persons:,} persons"
        )

    ours_s, theirs_s = statistics.median(ours), statistics.median(theirs)
    print(
        json.dumps(
            {
                "records": n,
                "repeat": args.repeat,
                "contactsync_s": round(ours_s, 3),
                "splink_s": round(theirs_s, 3),
                "ratio": round(theirs_s / ours_s, 2),
                "persons_contactsync": persons,
                "clusters_splink": clusters,
            }
        )
    )


if __name__ == "__main__":
    main()
