"""Shared pieces of the crash, chaos and scale-out tests: overlapping seed people, emulators on
loopback sockets (they outlive any killed worker), a config for them, worker subprocesses and
the end-state checks against the emulators."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from connectors import fleet
from connectors.emulation import Emulator, FaultConfig
from connectors.fleet import CONNECTIONS, typed_for
from connectors.loopback import LoopbackEmulators
from connectors.registry import emulator_class
from sync.config import Config, load_config

ROOT = Path(__file__).resolve().parents[2]


def human(i: int) -> dict[str, Any]:
    return {"first_name": f"P{i}", "last_name": "Seed", "email": f"p{i}@example.com", "phone": f"+1415555{i:04d}"}


SEED_RANGES = {
    "acquire": range(0, 30),
    "ghl": range(12, 40),
    "comm100": list(range(0, 8)) + list(range(26, 40)),
    "dmchamp": range(3, 8),
}
HUMANS = 40


def seed(emulators: Mapping[str, Emulator]) -> None:
    for name, ids in SEED_RANGES.items():
        emulators[name].seed([typed_for(name, human(i)) for i in ids])


def start_emulators(*, rate_scale: float, faults: FaultConfig | None = None) -> LoopbackEmulators:
    def factory(platform: str):  # type: ignore[no-untyped-def]
        return lambda url: emulator_class(platform)(base_url=url, rate_scale=rate_scale, faults=faults)

    served = LoopbackEmulators({n: factory(p) for n, p in CONNECTIONS.items()}).start()
    seed(served.emulators)
    return served


def write_config(served: LoopbackEmulators, db_url: str, tmp_path: Path, **kwargs: Any) -> tuple[Path, Config]:
    path = fleet.write_config(served.emulators, served.urls, db_url, tmp_path, **kwargs)
    return path, load_config(path)


WORKER = """
import sys
import sync.cli, sync.commands.backfill, sync.commands.run, sync.cycle, sync.plan.build
for p in ("acquire", "dmchamp", "gohighlevel", "comm100"):
    __import__("connectors." + p)
print("ready", flush=True)
sys.stdin.readline()  # "go": imports are paid before the clock starts
sync.cli.app(sys.argv[1:])
"""


def worker_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CONTACTSYNC_DATABASE_URL"}
    env["PYTHONPATH"] = str(ROOT)
    env["TERM"] = "dumb"
    return env


class Worker:
    """``contactsync ARGS`` in a subprocess, spawned ahead (imports done), started by :meth:`go`."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", WORKER, *args],
            cwd=ROOT,
            env=worker_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def go(self) -> subprocess.Popen[str]:
        proc = self.proc
        assert proc.stdout is not None and proc.stdin is not None
        line = proc.stdout.readline()
        assert line.strip() == "ready", (line, proc.stderr.read() if proc.poll() is not None and proc.stderr else "")
        proc.stdin.write("go\n")
        proc.stdin.flush()
        return proc


def start_worker(*args: str) -> subprocess.Popen[str]:
    """Spawn a worker and start it at once."""
    return Worker(*args).go()


def live_contacts(served: LoopbackEmulators, config: Config, name: str) -> list[dict[str, Any]]:
    mapping = config.mapping(name)
    raws = served.call(lambda: served.emulators[name].records())
    return [dict(mapping.read(r).fields) for r in raws]


def duplicates(served: LoopbackEmulators, config: Config) -> dict[str, list[str]]:
    """Per platform, the emails/phones held by more than one live contact."""
    out: dict[str, list[str]] = {}
    for name in CONNECTIONS:
        seen: Counter[str] = Counter()
        for c in live_contacts(served, config, name):
            for key in set(c.get("emails") or ()) | set(c.get("phones") or ()):
                seen[key] += 1
        dups = sorted(k for k, n in seen.items() if n > 1)
        if dups:
            out[name] = dups
    return out


def missing(served: LoopbackEmulators, config: Config) -> dict[str, list[int]]:
    """Per platform, the humans it does not hold."""
    out: dict[str, list[int]] = {}
    for name in CONNECTIONS:
        have = set()
        for c in live_contacts(served, config, name):
            have |= set(c.get("phones") or ())
        gone = [i for i in range(HUMANS) if human(i)["phone"] not in have]
        if gone:
            out[name] = gone
    return out


def last_names(served: LoopbackEmulators, config: Config, i: int) -> dict[str, Any]:
    phone = human(i)["phone"]
    out = {}
    for name in CONNECTIONS:
        for c in live_contacts(served, config, name):
            if phone in (c.get("phones") or ()):
                out[name] = c.get("last_name")
    return out


def raw_id(served: LoopbackEmulators, name: str, config: Config, i: int) -> str | None:
    phone = human(i)["phone"]
    mapping = config.mapping(name)
    for r in served.call(lambda: served.emulators[name].records()):
        if phone in (mapping.read(r).fields.get("phones") or ()):
            return str(r["id"])
    return None


def edit(platform: str, i: int, last: str) -> dict[str, Any]:
    """Raw changes that set human ``i``'s last name on a platform."""
    return fleet.last_name_edit(platform, f"P{i}", last)
