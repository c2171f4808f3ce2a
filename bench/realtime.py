"""Benchmark (issue 16): how fast an edit reaches every platform with the daemon running, and
what the daemon spends while nothing changes.

The four emulators serve loopback sockets at their documented rate limits (not scaled:
GoHighLevel 100 per 10 s, Comm100 300 per 5 min; Acquire and DM Champ document none), each
seeded with ``--contacts`` people (the same people everywhere, typed the way each platform's
users type them). ``contactsync probe`` measures the accounts (``--no-probe``: not), a backfill
links them; then ``contactsync run`` starts as a process of its own (the worktree's code:
``python -m sync.cli`` with this checkout first on the path), with its HTTP listener and the
GoHighLevel emulator delivering signed webhooks to it (``--drop-share`` of them lost;
``--no-webhooks``: no listener, no deliveries, polling only). The schedule is adaptive: polls
every ``--poll-seconds`` while changes come, backing off to ``--max-poll-seconds``, never more
than ``--budget-share`` of a documented limit, a full cycle every ``--full-seconds``
(``--fixed-schedule``: a full cycle every ``--poll-seconds`` instead).

1. Idle: ``--idle-seconds`` with no edit; the requests each platform saw, as a share of its
   documented limit over that time (null where none is documented).
2. Edits: ``--edits`` last-name edits at random moments over ``--minutes``, on GoHighLevel,
   Acquire and Comm100 in turn (DM Champ cannot be read, so no edit starts there), each on a
   different person. An edit's latency runs from the moment it is made to the moment the last
   platform that can hold the value (all four) holds it, read from the emulators' own state.
   An edit not everywhere ``--grace`` seconds after the last edit is lost.

Printed per origin platform: p50, p95 and max latency; then the idle shares, the lost edits
and the 429s the platforms answered from the daemon's start (with each platform's requests as
a share of its limit over the run); the last line is one JSON object::

    {"latency_s": {"gohighlevel": {"p50":…, "p95":…, "max":…}, "acquire": {…}, "comm100": {…}},
     "idle_budget_share": {…}, "lost_edits": N, "http_429": N}

Run it small to check it works; the full run (the defaults: 10,000 contacts, 300 edits over 10
minutes) belongs on a quiet machine::

    .venv/bin/python bench/realtime.py --contacts 1000 --edits 30 --minutes 1
    .venv/bin/python bench/realtime.py --no-webhooks
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from connectors.emulation import Emulator, fake_person  # noqa: E402
from connectors.fleet import CONNECTIONS, last_name_edit, typed_for, write_config  # noqa: E402
from connectors.gohighlevel.emulator import GoHighLevelEmulator  # noqa: E402
from connectors.gohighlevel.webhooks import emulator_public_keys  # noqa: E402
from connectors.loopback import LoopbackEmulators  # noqa: E402
from connectors.registry import emulator_class  # noqa: E402
from sync.config import load_config  # noqa: E402
from sync.cycle import CycleRunner  # noqa: E402
from sync.logs import configure_logging  # noqa: E402
from sync.store import Store, upgrade  # noqa: E402

ORIGINS = ("ghl", "acquire", "comm100")  # connection names; DM Champ cannot be read
PLATFORM = {"ghl": "gohighlevel", "acquire": "acquire", "comm100": "comm100", "dmchamp": "dmchamp"}


def person(i: int, name: str) -> dict[str, Any]:
    p = fake_person(random.Random(i), i)
    p.pop("custom", None)
    p["email"] = f"p{i}@bench.example"  # unique, so every edit's person is found by email
    return typed_for(name, p)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q * (len(ordered) - 1))))
    return round(ordered[k], 3)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dir = Path(tempfile.mkdtemp(prefix="cs-realtime-"))
        self.store_url = args.store or f"sqlite:///{self.dir / 'store.db'}"
        self.served = LoopbackEmulators(
            {name: (lambda url, p=platform: emulator_class(p)(base_url=url)) for name, platform in CONNECTIONS.items()}
        )
        self.emulators: dict[str, Emulator] = self.served.emulators
        self.port = free_port()
        self.daemon: subprocess.Popen[bytes] | None = None

    def call(self, fn: Any) -> Any:
        return self.served.call(fn)

    # -- set up ------------------------------------------------------------------------------

    def setup(self) -> None:
        n = self.args.contacts
        for name, emulator in self.emulators.items():
            # Stamped a minute apart over the days before the daemon starts: an incremental pull
            # re-reads what lies within its overlap window (30 s on Comm100) of the newest change
            # it saw, and a fleet stamped in one moment would sit in that window for ever.
            back = n * 60.0 + 3600.0
            emulator.clock.advance(-back)
            for i in range(n):
                emulator.seed([person(i, name)])
                emulator.clock.advance(60.0)
            emulator.clock.advance(back - n * 60.0)
        self.served.start()
        webhooks = not self.args.no_webhooks
        extra: dict[str, Any] = {
            "http": {"enabled": webhooks, "host": "127.0.0.1", "port": self.port},
            "webhooks": {"gohighlevel": {**emulator_public_keys(), "enabled": webhooks}},
            "logging": {"level": "WARNING", "format": "json"},
        }
        if not self.args.fixed_schedule:
            # Adaptive polls of each connection between full cycles (README, schedule.adaptive):
            # every --poll-seconds while changes come, backing off to --max-poll-seconds when
            # idle, never more than --budget-share of a documented limit on polling.
            extra["profiles"] = {
                "default": {
                    "connections": list(self.emulators),
                    "schedule": {
                        "interval_seconds": self.args.full_seconds,
                        "adaptive": True,
                        "min_interval_s": self.args.poll_seconds,
                        "max_interval_s": self.args.max_poll_seconds,
                        "max_budget_share": self.args.budget_share,
                    },
                    "misfire_grace_seconds": 30,
                }
            }
        urls = dict(self.served.urls)
        self.config_path = write_config(
            self.emulators, urls, self.store_url, self.dir, interval_seconds=self.args.poll_seconds, extra=extra
        )
        self.config = load_config(self.config_path)
        upgrade(self.store_url)
        configure_logging("WARNING", "json")
        if not self.args.no_probe:
            # What a user does once per account: measure the behaviours the vendor docs leave
            # open (contactsync probe), so the engine takes the cheaper path where it is safe
            # (e.g. Comm100 PUT measured to merge: no GET before each update).
            from rich.console import Console

            from sync.commands.probe import run_probe

            t = time.monotonic()
            run_probe(self.config, yes=True, console=Console(file=sys.stderr, quiet=True))
            print(f"probe: {time.monotonic() - t:.1f} s", file=sys.stderr)
        store = Store.open(self.store_url)
        try:
            engine = CycleRunner(self.config, store)
            t = time.monotonic()
            report = engine.run("default", kind="backfill", full=True)
            print(f"backfill: {report.status} in {time.monotonic() - t:.1f} s", file=sys.stderr)
            for _ in range(3):
                if engine.run("default").write_calls() == 0:
                    break
        finally:
            store.close()
        # Remote ids per person, per platform (emails are unique and typed per platform).
        self.ids: dict[str, dict[str, str]] = {name: {} for name in CONNECTIONS}
        for name, emulator in self.emulators.items():
            mapping = self.config.mapping(name)
            for rid, raw in self.call(lambda e=emulator: list(e.contacts.items())):
                emails = mapping.read(dict(raw)).fields.get("emails") or ()
                for email in emails:
                    self.ids[name][str(email).lower()] = str(rid)
        if webhooks:
            ghl = self.emulators["ghl"]
            assert isinstance(ghl, GoHighLevelEmulator)
            self.call(
                lambda: ghl.deliver_webhooks(
                    f"http://127.0.0.1:{self.port}/webhooks/gohighlevel",
                    drop_share=self.args.drop_share,
                    retry_interval_s=self.args.retry_interval_s,
                    seed=self.args.seed,
                )
            )

    def start_daemon(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        log = open(self.dir / "daemon.log", "wb")  # noqa: SIM115 - kept for the daemon's life
        self.daemon = subprocess.Popen(
            [sys.executable, "-m", "sync.cli", "run", "-c", str(self.config_path)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        # Until the first scheduled cycle (run at start) has finished.
        store = Store.open(self.store_url)
        try:
            before = {r.id for r in store.runs.recent_runs(100)}
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                runs = [r for r in store.runs.recent_runs(20) if r.id not in before and r.finished_at is not None]
                if runs:
                    return
                if self.daemon.poll() is not None:
                    raise RuntimeError(f"the daemon exited ({self.daemon.returncode}); see {self.dir / 'daemon.log'}")
                time.sleep(0.2)
        finally:
            store.close()
        raise RuntimeError("the daemon's first cycle did not finish")

    def stop_daemon(self) -> float:
        if self.daemon is None:
            return 0.0
        t = time.monotonic()
        self.daemon.send_signal(signal.SIGTERM)
        try:
            self.daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.daemon.kill()
        return time.monotonic() - t

    # -- measuring ---------------------------------------------------------------------------

    def log_marks(self) -> dict[str, int]:
        return self.call(lambda: {n: len(e.request_log) for n, e in self.emulators.items()})

    def idle(self) -> dict[str, float | None]:
        time.sleep(self.args.poll_seconds)  # past the cycles the backfill's writes left due
        marks = self.log_marks()
        time.sleep(self.args.idle_seconds)
        after = self.log_marks()
        out: dict[str, float | None] = {}
        for name, emulator in self.emulators.items():
            limit = emulator.rate_limit
            spent = after[name] - marks[name]
            key = PLATFORM[name]
            if limit is None:
                out[key] = None
                print(f"idle {key}: {spent} requests in {self.args.idle_seconds:.0f} s (no documented limit)")
            else:
                allowed = limit.requests / limit.per_seconds * self.args.idle_seconds
                out[key] = round(spent / allowed, 4)
                print(f"idle {key}: {spent} requests in {self.args.idle_seconds:.0f} s = {out[key]:.1%} of its limit")
        return out

    def holds(self, name: str, rid: str, last: str) -> bool:
        raw = self.emulators[name].contacts.get(rid)
        if raw is None:
            return False
        return self.config.mapping(name).read(dict(raw)).fields.get("last_name") == last

    def edits(self) -> tuple[dict[str, list[float]], int]:
        rng = random.Random(self.args.seed)
        n_edits, span = self.args.edits, self.args.minutes * 60.0
        moments = sorted(rng.uniform(0, span) for _ in range(n_edits))
        people = rng.sample(range(self.args.contacts), n_edits)
        pending: dict[int, tuple[str, int, str, float]] = {}  # edit -> (origin, person, last, made at)
        done: dict[str, list[float]] = {o: [] for o in ORIGINS}
        lock = threading.Lock()
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                with lock:
                    items = list(pending.items())
                if items:

                    def check(items: list[tuple[int, tuple[str, int, str, float]]] = items) -> list[int]:
                        landed = []
                        for k, (_o, i, last, _t) in items:
                            email = f"p{i}@bench.example"
                            if all(self.holds(name, self.ids[name][email], last) for name in CONNECTIONS):
                                landed.append(k)
                        return landed

                    now = time.monotonic()
                    for k in self.call(check):
                        with lock:
                            origin, _i, _last, made = pending.pop(k)
                        done[origin].append(now - made)
                stop.wait(0.2)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        start = time.monotonic()
        for k, (at, i) in enumerate(zip(moments, people, strict=True)):
            delay = start + at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            origin = ORIGINS[k % len(ORIGINS)]
            first = person(i, origin)["first_name"]
            last = f"Edit{k:04d}"
            rid = self.ids[origin][f"p{i}@bench.example"]
            change = last_name_edit(origin, first, last)
            made = time.monotonic()
            self.call(lambda o=origin, r=rid, c=change: self.emulators[o].external_edit(r, c))
            with lock:
                pending[k] = (origin, i, last, made)
        deadline = time.monotonic() + self.args.grace
        while time.monotonic() < deadline:
            with lock:
                if not pending:
                    break
            time.sleep(0.2)
        stop.set()
        watcher.join(5)
        return done, len(pending)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--contacts", type=int, default=10_000)
    ap.add_argument("--edits", type=int, default=300)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--no-webhooks", action="store_true", help="no listener, no deliveries: polling only")
    ap.add_argument("--drop-share", type=float, default=0.10, help="share of webhooks lost (default 0.10)")
    ap.add_argument(
        "--poll-seconds",
        type=float,
        default=2.0,
        help="adaptive polls' shortest interval (with --fixed-schedule: the cycle's)",
    )
    ap.add_argument("--max-poll-seconds", type=float, default=20.0, help="adaptive polls' longest interval (idle)")
    ap.add_argument("--budget-share", type=float, default=0.2, help="adaptive polls' share of a documented limit")
    ap.add_argument("--full-seconds", type=float, default=120.0, help="the full cycle's interval (the safety net)")
    ap.add_argument(
        "--fixed-schedule", action="store_true", help="no adaptive polls: a full cycle every --poll-seconds"
    )
    ap.add_argument("--no-probe", action="store_true", help="do not run contactsync probe before the backfill")
    ap.add_argument("--idle-seconds", type=float, default=60.0)
    ap.add_argument("--grace", type=float, default=120.0, help="seconds after the last edit before one is lost")
    ap.add_argument("--retry-interval-s", type=float, default=600.0, help="the emulator's 429 retry interval")
    ap.add_argument("--store", help="store URL (default: a SQLite file in a temporary directory)")
    ap.add_argument("--seed", type=int, default=16)
    args = ap.parse_args()
    if args.edits > args.contacts:
        ap.error("--edits must not exceed --contacts (each edit is made on a different person)")

    bench = Bench(args)
    t0 = time.monotonic()
    try:
        bench.setup()
        print(f"setup: {time.monotonic() - t0:.1f} s ({args.contacts} contacts each)", file=sys.stderr)
        marks = bench.log_marks()  # the run is measured from the daemon's start
        bench.start_daemon()
        idle = bench.idle()
        done, lost = bench.edits()
        after = bench.log_marks()
        stopped_in = bench.stop_daemon()
    finally:
        if bench.daemon is not None and bench.daemon.poll() is None:
            bench.daemon.kill()
        bench.served.stop()
    http_429 = sum(
        1
        for name, e in bench.emulators.items()
        for entry in e.request_log[marks[name] : after[name]]
        if entry.status == 429
    )
    latency = {PLATFORM[o]: {"p50": pct(v, 0.5), "p95": pct(v, 0.95), "max": pct(v, 1.0)} for o, v in done.items()}
    # Where the 429s and the requests of the measured span went, per platform.
    for name, e in bench.emulators.items():
        span = e.request_log[marks[name] : after[name]]
        if not span:
            continue
        seconds = max(1e-9, span[-1].time - span[0].time)
        limited = [x for x in span if x.status == 429]
        limit = e.rate_limit
        share = f" = {len(span) / (limit.requests / limit.per_seconds * seconds):.0%} of its limit" if limit else ""
        line = f"requests {PLATFORM[name]}: {len(span)} in {seconds:.0f} s{share}"
        if limited:
            paths: dict[str, int] = {}
            for x in limited:
                paths[f"{x.method} {x.path}"] = paths.get(f"{x.method} {x.path}", 0) + 1
            line += f"; 429 x{len(limited)} at {limited[0].time - span[0].time:.0f}-{limited[-1].time - span[0].time:.0f} s {paths}"
        print(line)
    mode = "polling only" if args.no_webhooks else f"webhooks on ({args.drop_share:.0%} dropped)"
    print(f"mode: {mode}; poll every {args.poll_seconds:g} s; daemon stopped in {stopped_in:.1f} s")
    for origin, values in done.items():
        s = latency[PLATFORM[origin]]
        print(f"from {PLATFORM[origin]:<12} n={len(values):>4}  p50 {s['p50']} s  p95 {s['p95']} s  max {s['max']} s")
    if not args.no_webhooks:
        ghl = bench.emulators["ghl"]
        assert isinstance(ghl, GoHighLevelEmulator) and ghl.webhooks is not None
        print(f"webhooks: {dict(ghl.webhooks.stats)} statuses {dict(ghl.webhooks.statuses)}")
    print(
        f"lost edits: {lost}; http 429: {http_429}; mean latency {statistics.mean(sum(done.values(), [])) if any(done.values()) else 0:.2f} s"
    )
    print(json.dumps({"latency_s": latency, "idle_budget_share": idle, "lost_edits": lost, "http_429": http_429}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
