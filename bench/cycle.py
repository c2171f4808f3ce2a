"""Benchmark: the whole engine over the four emulators — backfill, a quiet cycle, an incremental
cycle with 1% of contacts edited.

Each emulator is seeded with ``--contacts`` people (default 25,000), overlapping: platform k
holds people ``[k*shift, k*shift + contacts)``, typed differently (email case, phone format), so
the backfill both matches existing contacts and creates missing ones. The emulators serve real
loopback sockets from a thread of this process; each phase runs the engine in its own process
(as ``contactsync`` would), against a SQLite store (or ``--store URL``), so client and servers
do not share one interpreter.

Documented rate limits are scaled by ``--rate-scale`` (windows divided by it): GoHighLevel
100 per 10 s, Comm100 300 per 5 min; Acquire and DM Champ document none.

Per phase and platform:

* ``writes``: write calls made (POST/PUT/DELETE other than searches), from the emulator's log;
* ``min_writes``: the least a perfect engine needs — one call per contact created or changed on
  that platform (read back from the emulator before and after), plus one per tag add and per
  tag remove on GoHighLevel (tags go through their own endpoints there);
* ``requests`` (all calls), ``http_429``;
* ``floor_s``: (reads made + min_writes) / the platform's allowed rate (0 without a limit);
  the phase's floor is the slowest platform's, and ``wall_over_floor`` = wall / floor, where
  ``wall_s`` is the engine run itself (``process_wall_s`` adds the process start).

``write_amplification`` = writes / min_writes over the backfill and incremental phases. The
last line is one JSON object.

    .venv/bin/python bench/cycle.py --contacts 25000 --rate-scale 50
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from connectors.emulation import fake_person  # noqa: E402
from connectors.registry import emulator_class  # noqa: E402
from sync.canonical import fields_to_json  # noqa: E402
from sync.config import Config, load_config  # noqa: E402
from sync.logs import configure_logging  # noqa: E402
from sync.loopback import LoopbackEmulators, emulator_config  # noqa: E402
from sync.store import upgrade  # noqa: E402

CONNECTIONS = {"acquire": "acquire", "dmchamp": "dmchamp", "ghl": "gohighlevel", "comm100": "comm100"}
WRITE_METHODS = {"POST", "PUT", "DELETE", "PATCH"}


def person(i: int, platform: str) -> dict[str, Any]:
    p = fake_person(random.Random(i), i)
    p.pop("custom", None)
    n = p["phone"][-10:]
    if platform == "acquire":
        p["email"] = p["email"].capitalize()
        p["phone"] = f"({n[:3]}) {n[3:6]}-{n[6:]}"
    elif platform == "comm100":
        p["email"] = p["email"].upper()
        p["phone"] = f"{n[:3]}-{n[3:6]}-{n[6:]}"
    return p


def is_write(method: str, path: str) -> bool:
    return method in WRITE_METHODS and not path.rstrip("/").endswith("/search")


class Observer:
    """Reads the emulators' state and logs around a phase."""

    def __init__(self, served: LoopbackEmulators, config: Config) -> None:
        self.served = served
        self.config = config

    def state(self) -> dict[str, dict[str, dict[str, Any]]]:
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for name in CONNECTIONS:
            mapping = self.config.mapping(name)
            raws = self.served.call(lambda n=name: self.served.emulators[n].records())
            out[name] = {str(r["id"]): fields_to_json(mapping.read(r).fields) for r in raws}
        return out

    def log_marks(self) -> dict[str, int]:
        return {n: len(e.request_log) for n, e in self.served.emulators.items()}

    def phase(self, label: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        before, marks = self.state(), self.log_marks()
        t0 = time.monotonic()
        report = run()
        process_wall = time.monotonic() - t0
        wall = report["wall_s"]  # the run itself, without the process start (imports)
        after = self.state()
        platforms: dict[str, Any] = {}
        for name, emulator in self.served.emulators.items():
            log = emulator.request_log[marks[name]:]
            writes = sum(1 for e in log if is_write(e.method, e.path))
            reads = len(log) - writes
            min_writes = 0
            for rid, fields in after[name].items():
                old = before[name].get(rid)
                if old is None:
                    min_writes += 1
                    continue
                rest_old = {k: v for k, v in old.items() if k != "tags"}
                rest_new = {k: v for k, v in fields.items() if k != "tags"}
                min_writes += int(rest_old != rest_new)
                if name == "ghl":
                    old_tags, new_tags = set(old.get("tags") or ()), set(fields.get("tags") or ())
                    min_writes += int(bool(new_tags - old_tags)) + int(bool(old_tags - new_tags))
            limit = emulator.rate_limit
            floor = (reads + min_writes) / (limit.requests / limit.per_seconds) if limit else 0.0
            platforms[name] = {
                "contacts": len(after[name]),
                "writes": writes,
                "min_writes": min_writes,
                "requests": len(log),
                "http_429": sum(1 for e in log if e.status == 429),
                "floor_s": round(floor, 2),
            }
        floor = max(p["floor_s"] for p in platforms.values())
        result = {
            "status": report["status"],
            "wall_s": round(wall, 2),
            "process_wall_s": round(process_wall, 2),
            "steps_s": report["timings"],
            "floor_s": round(floor, 2),
            "wall_over_floor": round(wall / floor, 3) if floor else None,
            "writes": sum(p["writes"] for p in platforms.values()),
            "min_writes": sum(p["min_writes"] for p in platforms.values()),
            "http_429": sum(p["http_429"] for p in platforms.values()),
            "platforms": platforms,
        }
        print(f"{label}: {json.dumps({k: v for k, v in result.items() if k != 'platforms'})}", flush=True)
        for name, p in platforms.items():
            print(f"  {name:8} {json.dumps(p)}", flush=True)
        return result


RUNNER = """
import json, sys
from sync.config import load_config
from sync.engine import Engine
from sync.logs import configure_logging
from sync.store import Store
configure_logging("WARNING", "json")
import os as _os
if _os.environ.get("BENCH_SWITCH"): sys.setswitchinterval(float(_os.environ["BENCH_SWITCH"]))
config = load_config(sys.argv[1])
store = Store.open(config.store_url)
import time
t0 = time.monotonic()
run = lambda: Engine(config, store, chunk_size=256).run("default", kind=sys.argv[2], full=sys.argv[2] == "backfill")
if len(sys.argv) > 3:  # a profile of the engine process, to this file
    import cProfile
    prof = cProfile.Profile()
    report = prof.runcall(run)
    prof.dump_stats(sys.argv[3])
else:
    report = run()
store.close()
wall = time.monotonic() - t0
print(json.dumps({"status": report.status, "timings": report.timings, "error": report.error, "wall_s": wall}))
"""


def run_engine(cfg_path: Path, kind: str) -> dict[str, Any]:
    """One engine run in a fresh process; its report (status, per-step timings). With
    ``BENCH_PROFILE=DIR`` set, each run's cProfile stats are written there."""
    extra = [str(Path(os.environ["BENCH_PROFILE"]) / f"{kind}.prof")] if os.environ.get("BENCH_PROFILE") else []
    out = subprocess.run([sys.executable, "-c", RUNNER, str(cfg_path), kind, *extra], cwd=REPO, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, check=False)
    if out.returncode != 0:
        raise SystemExit(f"engine run failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--contacts", type=int, default=25_000, help="contacts seeded on each platform")
    ap.add_argument("--rate-scale", type=float, default=50.0, help="rate-limit windows divided by this")
    ap.add_argument("--edit-fraction", type=float, default=0.01)
    ap.add_argument("--concurrency", type=int, default=8, help="max_concurrency per connection")
    ap.add_argument("--store", default=None, help="store URL (default: a SQLite file in a temp dir)")
    args = ap.parse_args()

    configure_logging("WARNING", "json")
    n = args.contacts
    shift = max(1, n // 5)
    tmp = Path(tempfile.mkdtemp(prefix="contactsync-bench-"))
    store_url = args.store or f"sqlite:///{tmp / 'bench.db'}"

    def factory(platform: str) -> Callable[[str], Any]:
        return lambda url: emulator_class(platform)(base_url=url, rate_scale=args.rate_scale)

    print(f"seeding 4 x {n} contacts (rate limits scaled x{args.rate_scale:g}) ...", flush=True)
    served = LoopbackEmulators({name: factory(p) for name, p in CONNECTIONS.items()}).start()
    try:
        for k, name in enumerate(CONNECTIONS):
            served.emulators[name].seed([person(i, name) for i in range(k * shift, k * shift + n)])
        cfg = emulator_config(served.emulators, served.urls, store_url, max_concurrency=args.concurrency,
                              secrets_dir=tmp / "secrets")
        cfg_path = tmp / "bench.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        config = load_config(cfg_path)
        upgrade(config.store_url)
        obs = Observer(served, config)
        backfill = obs.phase("backfill", lambda: run_engine(cfg_path, "backfill"))
        noop = obs.phase("noop", lambda: run_engine(cfg_path, "cycle"))

        rng = random.Random(1)
        edited = 0
        for name in ("acquire", "ghl", "comm100"):
            emulator = served.emulators[name]
            ids = sorted(served.call(lambda e=emulator: list(e.contacts)))
            for rid in rng.sample(ids, max(1, int(len(ids) * args.edit_fraction))):
                last = f"Edited{edited}"
                if name == "acquire":
                    first = (served.call(lambda: emulator.contacts[rid]["fields"].get("name")) or "X").split(" ")[0]
                    change: dict[str, Any] = {"fields": {"name": f"{first} {last}"}}
                elif name == "comm100":
                    first = served.call(lambda: emulator.contacts[rid].get("firstName")) or "X"
                    change = {"lastName": last, "name": f"{first} {last}"}
                else:
                    change = {"lastName": last}
                served.call(lambda e=emulator, r=rid, c=change: e.external_edit(r, c))
                edited += 1
        # GoHighLevel search is eventually consistent: let the edits become searchable.
        time.sleep(2.5 / args.rate_scale + 0.2)
        incremental = obs.phase(f"incremental ({edited} edits)", lambda: run_engine(cfg_path, "cycle"))
    finally:
        served.stop()

    writes = backfill["writes"] + incremental["writes"]
    needed = backfill["min_writes"] + incremental["min_writes"]
    ratios = [p["wall_over_floor"] for p in (backfill, noop, incremental) if p["wall_over_floor"]]
    summary = {
        "contacts_per_platform": n,
        "rate_scale": args.rate_scale,
        "backfill": backfill,
        "noop": noop,
        "incremental": incremental,
        "write_amplification": round(writes / needed, 4) if needed else None,
        "noop_writes": noop["writes"],
        "http_429": backfill["http_429"] + noop["http_429"] + incremental["http_429"],
        "wall_over_floor": max(ratios) if ratios else None,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
