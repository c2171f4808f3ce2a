"""Benchmark: the whole engine over the four emulators — backfill, a quiet cycle (twice), an
incremental cycle with 1% of contacts edited.

Each emulator is seeded with ``--contacts`` people (default 25,000), overlapping: platform k
holds people ``[k*shift, k*shift + contacts)``, typed differently (email case, phone format), so
the backfill both matches existing contacts and creates missing ones. Each emulator serves a real
loopback socket from its OWN process (as ``contactsync emulate`` would: four servers do not share
one interpreter lock), driven by this process over a pipe (seed, read state and request log,
make outside edits); each phase runs the engine in its own process too (as ``contactsync`` would),
against a SQLite store (or ``--store URL``).

Phases are separated by ``--gap`` seconds (default: the longest scaled rate window, 15 s for
Comm100 at scale 20): a scheduled cycle starts minutes after the previous one, with the platforms'
rate windows clear of its requests, not while the backfill's last window still counts.

Documented rate limits are scaled by ``--rate-scale`` (windows divided by it): GoHighLevel
100 per 10 s, Comm100 300 per 5 min; Acquire and DM Champ document none. The default scale is
20, chosen so that the rate floor, not CPU, bounds the run on a small shared machine: a 2k x 4
backfill costs about 31 s of engine CPU plus 15 s of emulator CPU (measured with this bench,
2 cores, load ~4) against a Comm100 floor of 24 s at scale 100 — 1.9 CPU-seconds per
floor-second, which two cores shared with other work cannot give, so at 100 the run measures
CPU. At 20 the same work needs 0.38 CPU-seconds per floor-second: the floor should bound it
even with only half the machine. (The serial pull and plan steps before the push, not rate
bound, still add to the wall.)

Per phase and platform:

* ``writes``: write calls made (POST/PUT/DELETE other than searches), from the emulator's log;
* ``min_writes`` (the *oracle* minimum): the least a perfect engine that could see every
  platform's state needs — one call per contact created or changed on that platform (read back
  from the emulator before and after), plus one per tag add and per tag remove on GoHighLevel
  (tags go through their own endpoints there);
* ``min_writes_api`` (the minimum *achievable through the platform's API*): the oracle minimum,
  plus, on a platform with no read API (DM Champ: a lookup returns an id, never values), one
  write per existing contact the engine adopted in this phase (linked in the store after the
  phase, not before) whose values did not change — its values are unknowable to any client, so
  leaving it unwritten could leave it stale forever;
* ``requests`` (all calls), ``http_429``, and ``first_request_s`` / ``last_request_s``: when the
  platform saw its first and last request, counted from the start of the run (so the slowest
  platform's idle time before and after its busy span shows);
* ``reads_by_id``: GETs of one contact by its id. A sync never needs them (a list page or a
  search returns the same contact, a hundred at a time), so they count against the engine: they
  are left out of the floor below;
* ``rate_floor_s``: (reads made other than by id + min_writes) / the platform's allowed rate
  (0 without a documented limit);
* ``service_floor_s``: the platform's own busy time, i.e. the emulator process's CPU seconds in
  the phase, scaled by the share of its requests the floor counts. A platform with no rate
  limit is still not infinitely fast: no client can be answered sooner than the (single
  threaded) server computes the answers, and a full scan of such a platform (Acquire) is bound
  by exactly that. Making an emulator faster lowers this floor, never raises it;
* ``floor_s``: the larger of the two; the phase's floor is the slowest platform's, and
  ``wall_over_floor`` = wall / floor, where ``wall_s`` is the engine run itself
  (``process_wall_s`` adds the process start);
* ``engine_cpu_s`` (the engine process during the run) and ``emulator_cpu_s`` per platform, so
  CPU per request can be compared across runs whatever the machine's load.

``wall_over_floor`` in the summary is the largest ratio of the three phases the target is set
for: the backfill, the first cycle with no edits and the 1% cycle. The second quiet cycle is
shown beside it (``noop2_wall_over_floor``), not folded in: it has almost no rate-limited work
(Comm100 re-reads nothing any more), so its floor is the Acquire emulator's busy time for a full
scan and its ratio compares the engine's CPU per scanned contact with the emulator's, not how
well a rate limit is used.

``write_amplification`` = writes / min_writes_api over the backfill and incremental phases: the
writes made against the fewest a *correct* sync needs through these APIs (leaving an adopted DM
Champ contact unwritten is not an option for a sync that promises the same values everywhere).
``write_amplification_oracle`` = writes / min_writes, against the emulators' own state, which no
client can see; the two differ only by DM Champ's adopted contacts.
The last line is one JSON object.

    .venv/bin/python bench/cycle.py --contacts 25000 --rate-scale 20
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from connectors.base import PullMode  # noqa: E402
from connectors.emulation import fake_person  # noqa: E402
from connectors.fleet import CONNECTIONS, last_name_edit, typed_for, write_config  # noqa: E402
from connectors.loopback import LoopbackEmulators  # noqa: E402
from connectors.registry import connector_class, emulator_class  # noqa: E402
from sync.canonical import fields_to_json  # noqa: E402
from sync.config import Config, load_config  # noqa: E402
from sync.logs import configure_logging  # noqa: E402
from sync.store import Store, upgrade  # noqa: E402
from sync.store.outbox import OutboxStore  # noqa: E402

WRITE_METHODS = {"POST", "PUT", "DELETE", "PATCH"}


def person(i: int, platform: str) -> dict[str, Any]:
    p = fake_person(random.Random(i), i)
    p.pop("custom", None)
    return typed_for(platform, p)


# One contact by id on each platform's API (not a list, a search or a sub-resource).
_BY_ID = re.compile(r"/(?:crm/objects/contact|global/contacts|contacts)/(?!search$)[^/]+$")


def is_write(method: str, path: str) -> bool:
    return method in WRITE_METHODS and not path.rstrip("/").endswith("/search")


def is_read_by_id(method: str, path: str) -> bool:
    return method == "GET" and bool(_BY_ID.search(path.split("?", 1)[0].rstrip("/")))


# --------------------------------------------------------------------------- emulator processes


def _on_loop(served: LoopbackEmulators, fn: Callable[[], Any], timeout: float = 600.0) -> Any:
    """Run ``fn`` on the server's event loop thread (emulator state is not locked)."""
    assert served._loop is not None  # noqa: SLF001
    done, out = threading.Event(), {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - sent back to the bench
            out["error"] = exc
        finally:
            done.set()

    served._loop.call_soon_threadsafe(run)  # noqa: SLF001
    if not done.wait(timeout):
        raise TimeoutError("emulator loop did not answer")
    if "error" in out:
        raise out["error"]
    return out.get("value")


def _emulator_main(platform: str, rate_scale: float, conn: Connection) -> None:
    """An emulator process: serve one platform on loopback, answer the bench's commands."""
    served = LoopbackEmulators({platform: lambda url: emulator_class(platform)(base_url=url, rate_scale=rate_scale)})
    served.start()
    em = served.emulators[platform]
    conn.send(served.urls[platform])
    commands: dict[str, Callable[..., Any]] = {
        "seed": lambda people: len(em.seed(people)),
        "records": lambda: em.records(),
        "log_mark": lambda: len(em.request_log),
        "log_since": lambda mark: [(e.method, e.path, e.status, e.time) for e in em.request_log[mark:]],
        "ids": lambda: sorted(em.contacts),
        "contact": lambda rid: dict(em.contacts[rid]),
        "edit": lambda rid, change: bool(em.external_edit(rid, change)),
    }
    while True:
        cmd, args = conn.recv()
        if cmd == "stop":
            break
        if cmd == "cpu":  # the whole process: server thread and this one
            conn.send(("ok", time.process_time()))
            continue
        try:
            conn.send(("ok", _on_loop(served, lambda: commands[cmd](*args))))  # noqa: B023 - called at once
        except Exception as exc:  # noqa: BLE001 - reported in the bench process
            conn.send(("error", repr(exc)))
    served.stop()
    conn.send(("ok", None))


class EmulatorProcess:
    """The bench's handle on one emulator process."""

    def __init__(self, platform: str, rate_scale: float) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_emulator_main, args=(platform, rate_scale, child), daemon=True)
        self.process.start()
        self.url: str = self._conn.recv()
        # A local, never served instance: the connection settings (credentials, options, the
        # scaled rate limit) of the served one, which are fixed per platform and scale.
        self.local = emulator_class(platform)(base_url=self.url, rate_scale=rate_scale)
        self.rate_limit = self.local.rate_limit

    def __call__(self, cmd: str, *args: Any) -> Any:
        self._conn.send((cmd, args))
        status, value = self._conn.recv()
        if status != "ok":
            raise RuntimeError(f"emulator command {cmd} failed: {value}")
        return value

    def stop(self) -> None:
        try:
            self("stop")
        except (OSError, EOFError, RuntimeError):
            pass
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.terminate()


# --------------------------------------------------------------------------- observing a phase


class Observer:
    """Reads the emulators' state, logs and CPU, and the store's links, around a phase."""

    def __init__(self, emulators: dict[str, EmulatorProcess], config: Config, outbox: OutboxStore) -> None:
        self.emulators = emulators
        self.config = config
        self.outbox = outbox
        self.no_read_api = {
            name: connector_class(platform).capabilities.pull_mode is PullMode.LOOKUP_ONLY
            for name, platform in CONNECTIONS.items()
        }

    def state(self) -> dict[str, dict[str, dict[str, Any]]]:
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for name, em in self.emulators.items():
            mapping = self.config.mapping(name)
            out[name] = {str(r["id"]): fields_to_json(mapping.read(r).fields) for r in em("records")}
        return out

    def linked(self) -> dict[str, set[str]]:
        return {name: self.outbox.linked_remote_ids(name) for name in self.emulators}

    def phase(self, label: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        before, linked_before = self.state(), self.linked()
        marks = {n: em("log_mark") for n, em in self.emulators.items()}
        cpu0 = {n: em("cpu") for n, em in self.emulators.items()}
        t0 = time.monotonic()
        report = run()
        process_wall = time.monotonic() - t0
        cpu = {n: em("cpu") - cpu0[n] for n, em in self.emulators.items()}
        wall = report["wall_s"]  # the run itself, without the process start (imports)
        after, linked_after = self.state(), self.linked()
        platforms: dict[str, Any] = {}
        for name, em in self.emulators.items():
            log = em("log_since", marks[name])
            writes = sum(1 for method, path, *_ in log if is_write(method, path))
            by_id = sum(1 for method, path, *_ in log if is_read_by_id(method, path))
            reads = len(log) - writes - by_id
            min_writes = adopted_unchanged = 0
            for rid, fields in after[name].items():
                old = before[name].get(rid)
                if old is None:
                    min_writes += 1
                    continue
                rest_old = {k: v for k, v in old.items() if k != "tags"}
                rest_new = {k: v for k, v in fields.items() if k != "tags"}
                changed = rest_old != rest_new
                min_writes += int(changed)
                if name == "ghl":
                    old_tags, new_tags = set(old.get("tags") or ()), set(fields.get("tags") or ())
                    min_writes += int(bool(new_tags - old_tags)) + int(bool(old_tags - new_tags))
                if (
                    self.no_read_api[name]
                    and not changed
                    and rid in linked_after[name]
                    and rid not in linked_before[name]
                ):
                    adopted_unchanged += 1
            limit = em.rate_limit
            counted = reads + min_writes
            rate_floor = counted / (limit.requests / limit.per_seconds) if limit else 0.0
            service_floor = cpu[name] * min(1.0, counted / len(log)) if log else 0.0
            platforms[name] = {
                "contacts": len(after[name]),
                "writes": writes,
                "min_writes": min_writes,
                "min_writes_api": min_writes + adopted_unchanged,
                "requests": len(log),
                "reads_by_id": by_id,
                "http_429": sum(1 for _, _, status, _ in log if status == 429),
                # When the platform saw its first and last request, in seconds from the run's
                # start (one system-wide monotonic clock): the busy span of the slowest one.
                "first_request_s": round(log[0][3] - report["t0_monotonic"], 2) if log else None,
                "last_request_s": round(log[-1][3] - report["t0_monotonic"], 2) if log else None,
                "rate_floor_s": round(rate_floor, 2),
                "service_floor_s": round(service_floor, 2),
                "floor_s": round(max(rate_floor, service_floor), 2),
                "emulator_cpu_s": round(cpu[name], 2),
            }
        floor = max(p["floor_s"] for p in platforms.values())
        requests = sum(p["requests"] for p in platforms.values())
        result = {
            "status": report["status"],
            "wall_s": round(wall, 2),
            "process_wall_s": round(process_wall, 2),
            "steps_s": report["timings"],
            "floor_s": round(floor, 2),
            "wall_over_floor": round(wall / floor, 3) if floor else None,
            "writes": sum(p["writes"] for p in platforms.values()),
            "min_writes": sum(p["min_writes"] for p in platforms.values()),
            "min_writes_api": sum(p["min_writes_api"] for p in platforms.values()),
            "requests": requests,
            "http_429": sum(p["http_429"] for p in platforms.values()),
            "engine_cpu_s": round(report["cpu_s"], 2),
            "emulator_cpu_s": round(sum(cpu.values()), 2),
            "engine_cpu_ms_per_request": round(1000 * report["cpu_s"] / requests, 3) if requests else None,
            "load": round(os.getloadavg()[0], 2),
            "platforms": platforms,
        }
        print(f"{label}: {json.dumps({k: v for k, v in result.items() if k != 'platforms'})}", flush=True)
        for name, p in platforms.items():
            print(f"  {name:8} {json.dumps(p)}", flush=True)
        return result


RUNNER = """
import json, sys
from sync.config import load_config
from sync.cycle import CycleRunner
from sync.logs import configure_logging
from sync.store import Store
configure_logging("WARNING", "json")
import os as _os
if _os.environ.get("BENCH_SWITCH"): sys.setswitchinterval(float(_os.environ["BENCH_SWITCH"]))
config = load_config(sys.argv[1])
store = Store.open(config.store_url)
if _os.environ.get("BENCH_METRICS_PORT"):  # /metrics of this engine process, live during the run
    import threading, uvicorn
    from starlette.applications import Starlette
    from sync.metrics import metrics_routes
    _server = uvicorn.Server(uvicorn.Config(Starlette(routes=metrics_routes(store, config)), host="127.0.0.1",
                                            port=int(_os.environ["BENCH_METRICS_PORT"]), log_level="warning",
                                            log_config=None))
    threading.Thread(target=_server.run, daemon=True).start()
import time
t0, cpu0 = time.monotonic(), time.process_time()
prefetch = bool(_os.environ.get("BENCH_PREFETCH"))  # --prefetch: listings read before the turn, as the daemon does
run = lambda: CycleRunner(config, store, chunk_size=256, prefetch=prefetch).run("default", kind=sys.argv[2], full=sys.argv[2] == "backfill")
if len(sys.argv) > 3:  # a profile of the engine process, to this file
    import cProfile
    prof = cProfile.Profile()
    report = prof.runcall(run)
    prof.dump_stats(sys.argv[3])
else:
    report = run()
if _os.environ.get("BENCH_METRICS_DIR"):  # the scrape at the end of the run, for the record
    from prometheus_client import generate_latest
    from sync.metrics import build_registry
    _path = _os.path.join(_os.environ["BENCH_METRICS_DIR"], sys.argv[2] + "-" + str(_os.getpid()) + ".prom")
    open(_path, "wb").write(generate_latest(build_registry(store, config)))
store.close()
wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
print(json.dumps({"status": report.status, "timings": report.timings, "error": report.error, "wall_s": wall,
                  "cpu_s": cpu, "t0_monotonic": t0}))
"""


def run_engine(cfg_path: Path, kind: str, tag: str, src: Path = REPO) -> dict[str, Any]:
    """One engine run in a fresh process, importing the engine from ``src``; its report
    (status, per-step timings, CPU). With ``BENCH_PROFILE=DIR`` set, each run's cProfile stats
    are written there."""
    extra = [str(Path(os.environ["BENCH_PROFILE"]) / f"{tag}.prof")] if os.environ.get("BENCH_PROFILE") else []
    out = subprocess.run(
        [sys.executable, "-c", RUNNER, str(cfg_path), kind, *extra],
        cwd=src,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(src), "PYTHONDONTWRITEBYTECODE": "1"},
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"engine run failed: {out.stderr[-2000:]}")
    if os.environ.get("BENCH_STDERR"):
        print(out.stderr[-3000:], file=sys.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--contacts", type=int, default=25_000, help="contacts seeded on each platform")
    ap.add_argument("--rate-scale", type=float, default=20.0, help="rate-limit windows divided by this")
    ap.add_argument("--edit-fraction", type=float, default=0.01)
    ap.add_argument("--concurrency", type=int, default=8, help="max_concurrency per connection")
    ap.add_argument("--store", default=None, help="store URL (default: a SQLite file in a temp dir)")
    ap.add_argument(
        "--gap", type=float, default=None, help="seconds between phases (default: the longest scaled rate window)"
    )
    ap.add_argument(
        "--engine-src",
        type=Path,
        default=REPO,
        help="run the engine from this source tree (e.g. an export of another branch, for A/B)",
    )
    ap.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve each engine run's /metrics on 127.0.0.1:PORT while it runs (curl it to watch)",
    )
    ap.add_argument("--metrics-dir", type=Path, default=None, help="write each engine run's final scrape here")
    ap.add_argument(
        "--prefetch",
        action="store_true",
        help="cycles read their listings before their turn, as the daemon's do (default: a one-shot process's cycle)",
    )
    args = ap.parse_args()
    if args.prefetch:
        os.environ["BENCH_PREFETCH"] = "1"
    src = args.engine_src.resolve()
    if args.metrics_port:
        os.environ["BENCH_METRICS_PORT"] = str(args.metrics_port)
    if args.metrics_dir:
        args.metrics_dir.mkdir(parents=True, exist_ok=True)
        os.environ["BENCH_METRICS_DIR"] = str(args.metrics_dir.resolve())

    configure_logging("WARNING", "json")
    n = args.contacts
    shift = max(1, n // 5)
    tmp = Path(tempfile.mkdtemp(prefix="contactsync-bench-"))
    store_url = args.store or f"sqlite:///{tmp / 'bench.db'}"

    print(f"seeding 4 x {n} contacts (rate limits scaled x{args.rate_scale:g}) ...", flush=True)
    emulators = {name: EmulatorProcess(platform, args.rate_scale) for name, platform in CONNECTIONS.items()}
    store: Store | None = None
    try:
        for k, (name, em) in enumerate(emulators.items()):
            em("seed", [person(i, name) for i in range(k * shift, k * shift + n)])
        cfg_path = write_config(
            {name: em.local for name, em in emulators.items()},
            {name: em.url for name, em in emulators.items()},
            store_url,
            tmp,
            file_name="bench.yaml",
            max_concurrency=args.concurrency,
        )
        config = load_config(cfg_path)
        upgrade(config.store_url)
        store = Store.open(config.store_url)
        obs = Observer(emulators, config, store.outbox)
        # Cycles run minutes apart (the daemon's interval), so each starts with the platforms'
        # rate windows clear of the previous cycle's requests: wait one (scaled) window.
        windows = [em.rate_limit.per_seconds for em in emulators.values() if em.rate_limit]
        gap = args.gap if args.gap is not None else max(windows, default=0.0)
        backfill = obs.phase("backfill", lambda: run_engine(cfg_path, "backfill", "backfill", src))
        time.sleep(gap)
        noop = obs.phase("noop", lambda: run_engine(cfg_path, "cycle", "noop", src))
        time.sleep(gap)
        noop2 = obs.phase("noop (second)", lambda: run_engine(cfg_path, "cycle", "noop2", src))

        rng = random.Random(1)
        edited = 0
        for name in ("acquire", "ghl", "comm100"):
            em = emulators[name]
            ids = em("ids")
            for rid in rng.sample(ids, max(1, int(len(ids) * args.edit_fraction))):
                if name == "acquire":
                    first = (em("contact", rid)["fields"].get("name") or "X").split(" ")[0]
                elif name == "comm100":
                    first = em("contact", rid).get("firstName") or "X"
                else:
                    first = ""  # the last name alone is set there
                em("edit", rid, last_name_edit(name, first, f"Edited{edited}"))
                edited += 1
        # GoHighLevel search is eventually consistent: let the edits become searchable (and the
        # rate windows clear, as between any two cycles).
        time.sleep(max(2.5 / args.rate_scale + 0.2, gap))
        incremental = obs.phase(
            f"incremental ({edited} edits)", lambda: run_engine(cfg_path, "cycle", "incremental", src)
        )
    finally:
        if store is not None:
            store.close()
        for em in emulators.values():
            em.stop()

    writes = backfill["writes"] + incremental["writes"]
    needed = backfill["min_writes"] + incremental["min_writes"]
    needed_api = backfill["min_writes_api"] + incremental["min_writes_api"]
    phases = (backfill, noop, noop2, incremental)
    ratios = [p["wall_over_floor"] for p in (backfill, noop, incremental) if p["wall_over_floor"]]
    summary = {
        "contacts_per_platform": n,
        "rate_scale": args.rate_scale,
        "gap_s": gap,
        "engine_src": str(src),
        "backfill": backfill,
        "noop": noop,
        "noop2": noop2,
        "incremental": incremental,
        "write_amplification": round(writes / needed_api, 4) if needed_api else None,
        "write_amplification_oracle": round(writes / needed, 4) if needed else None,
        "noop_writes": noop["writes"] + noop2["writes"],
        "http_429": sum(p["http_429"] for p in phases),
        "wall_over_floor": max(ratios) if ratios else None,
        "noop2_wall_over_floor": noop2["wall_over_floor"],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
