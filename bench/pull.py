"""Benchmark: a full pull of N contacts (default 50,000) from every platform at once.

Each emulator runs in its own ``contactsync emulate --platform P`` process on a real loopback
socket (so the servers do not share a CPU with each other or with the client); the four pulls
run concurrently in this process, each through its connector and the shared HTTP layer.

Documented rate limits are scaled by ``--rate-scale`` (windows divided by it): GoHighLevel
100 per 10 s, Comm100 300 per 5 min. Acquire documents no limit and is pulled as fast as it
answers (its floor is 0). DM Champ cannot list contacts, so it is shown with 0 requests.

Per platform: ``requests`` made, ``min_requests`` (pages needed: ceil(N / page size)),
``http_429`` received, ``wall_s`` of its pull and ``floor_s`` = min_requests / allowed rate.
Overall ``floor_s`` is the slowest platform's and ``wall_s`` the wall time of all pulls
together. (A sliding window lets a first burst of a full window through, so a wall time below
the floor is possible; ``window_floor_s`` is that tighter bound.) ``emulator_cpu_s`` is the
CPU the platform's emulator process used during the pull; ``engine_cpu_s`` (overall) this
process's CPU, all threads. The last line is JSON.

``--platforms`` pulls only some platforms. ``--stage`` stages every page into a fresh SQLite
store as the engine does (``sync.detect.stage.pull_connection``, with each platform's shipped mapping)
and ``--passes N`` pulls N times: the first pass stages everything, the later ones are quiet
scans that find nothing new (what a no-op cycle pays for Acquire, which is scanned in full every
cycle); the JSON line then carries ``passes`` (one summary per pass) as well.

    .venv/bin/python bench/pull.py --contacts 50000 --rate-scale 10
    .venv/bin/python bench/pull.py --contacts 25000 --platforms acquire --stage --passes 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from connectors.base import PullMode  # noqa: E402
from connectors.registry import PLATFORMS, connector_class, emulator_class  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(platform: str, contacts: int, rate_scale: float) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sync.cli",
            "emulate",
            "--platform",
            platform,
            "--port",
            str(port),
            "--seed-contacts",
            str(contacts),
            "--rate-scale",
            str(rate_scale),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    return proc, f"http://127.0.0.1:{port}"


def wait_ready(proc: subprocess.Popen[str], platform: str) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("serving"):
            return
    raise SystemExit(f"{platform} emulator did not start: {proc.stderr.read() if proc.stderr else ''}")


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def pull_one(
    platform: str, url: str, rate_scale: float, contacts: int, pid: int, store: Any = None
) -> dict[str, Any]:
    settings = emulator_class(platform)(rate_scale=rate_scale).connection_settings(base_url=url, timeout_s=60.0)
    connector = connector_class(platform)(settings)
    caps = connector.capabilities
    if caps.pull_mode is PullMode.LOOKUP_ONLY:
        await connector.aclose()
        return {
            "requests": 0,
            "min_requests": 0,
            "http_429": 0,
            "wall_s": 0.0,
            "floor_s": 0.0,
            "records": 0,
            "note": "cannot list contacts (lookup only)",
        }
    page_size = getattr(connector, "page_size", 100)
    server_cpu = process_cpu(pid)
    started = time.perf_counter()
    ids: set[str] = set()
    staged: dict[str, Any] = {}
    if store is None:
        async for page in connector.pull(None):
            ids.update(r.remote_id for r in page.records)
    else:
        from sync.detect.stage import pull_connection
        from sync.mapping import load_mapping

        report = await pull_connection(store, platform, connector, load_mapping(platform))
        staged = {k: v for k, v in report.to_json().items() if k in ("records", "inserted", "changed", "unchanged")}
    wall = time.perf_counter() - started
    server_cpu = process_cpu(pid) - server_cpu
    limit = connector.http.budget.limit
    min_requests = math.ceil(contacts / page_size)
    floor = min_requests / limit.per_second if limit else 0.0
    window_floor = (math.ceil(min_requests / limit.requests) - 1) * limit.per_seconds if limit else 0.0
    stats = connector.stats
    await connector.aclose()
    return {
        "requests": stats.requests,
        "min_requests": min_requests,
        "http_429": stats.http_429,
        "wall_s": round(wall, 3),
        "floor_s": round(floor, 3),
        "window_floor_s": round(window_floor, 3),
        "records": staged.get("records", len(ids)),
        "retries": stats.retries,
        "page_size": page_size,
        "rate_limit": f"{limit.requests}/{limit.per_seconds:g}s" if limit else None,
        "emulator_cpu_s": round(server_cpu, 3),
        **staged,
    }


async def pull_all(
    urls: dict[str, str], pids: dict[str, int], rate_scale: float, contacts: int, stores: dict[str, Any]
) -> tuple[dict[str, Any], float, float]:
    started, cpu = time.perf_counter(), time.process_time()
    results = await asyncio.gather(
        *(pull_one(p, u, rate_scale, contacts, pids[p], stores.get(p)) for p, u in urls.items())
    )
    return dict(zip(urls, results, strict=True)), time.perf_counter() - started, time.process_time() - cpu


def open_stores(platforms: list[str], directory: str) -> dict[str, Any]:
    """A fresh SQLite store per platform (so staging does not serialize on one file)."""
    from sync.store import Store, upgrade

    stores = {}
    for platform in platforms:
        url = f"sqlite:///{directory}/{platform}.db"
        upgrade(url)
        stores[platform] = Store.open(url)
    return stores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--contacts", type=int, default=50_000)
    parser.add_argument("--rate-scale", type=float, default=10.0)
    parser.add_argument(
        "--platforms", default=",".join(PLATFORMS), help=f"comma-separated, of {', '.join(PLATFORMS)} (default: all)"
    )
    parser.add_argument("--stage", action="store_true", help="stage the pages into a SQLite store per platform")
    parser.add_argument("--passes", type=int, default=1, help="pull this many times (later passes: quiet scans)")
    args = parser.parse_args()
    chosen = [p.strip() for p in args.platforms.split(",") if p.strip()]
    unknown = sorted(set(chosen) - set(PLATFORMS))
    if unknown:
        parser.error(f"unknown platforms {unknown}; known: {', '.join(PLATFORMS)}")

    procs: dict[str, subprocess.Popen[str]] = {}
    urls: dict[str, str] = {}
    passes: list[dict[str, Any]] = []
    tmp = tempfile.TemporaryDirectory(prefix="contactsync-pull-")
    try:
        for platform in chosen:
            procs[platform], urls[platform] = start(platform, args.contacts, args.rate_scale)
        for platform, proc in procs.items():
            wait_ready(proc, platform)
        stores = open_stores(chosen, tmp.name) if args.stage else {}
        print(
            f"emulators up (loopback sockets, one process each, rate scale {args.rate_scale:g}); pulling...", flush=True
        )
        pids = {p: proc.pid for p, proc in procs.items()}
        for n in range(max(1, args.passes)):
            load = os.getloadavg()[0]
            platforms, wall, cpu = asyncio.run(pull_all(urls, pids, args.rate_scale, args.contacts, stores))
            passes.append(
                {
                    "platforms": platforms,
                    "wall_s": round(wall, 3),
                    "engine_cpu_s": round(cpu, 3),
                    "load": round(load, 2),
                }
            )
            for name, r in platforms.items():
                print(
                    f"pass {n + 1} {name:12s} records={r['records']:>6} requests={r['requests']:>5} "
                    f"(min {r['min_requests']}) 429s={r['http_429']} wall={r['wall_s']:.2f}s "
                    f"floor={r['floor_s']:.2f}s emulator_cpu={r.get('emulator_cpu_s', 0):.2f}s",
                    flush=True,
                )
            print(f"pass {n + 1} wall={wall:.2f}s engine_cpu={cpu:.2f}s load={load:.2f}", flush=True)
        for store in stores.values():
            store.close()
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            proc.wait(timeout=30)
        tmp.cleanup()

    last = passes[-1]
    platforms = last["platforms"]
    floor = max(r["floor_s"] for r in platforms.values())
    summary = {
        "platforms": platforms,
        "contacts": args.contacts,
        "rate_scale": args.rate_scale,
        "transport": "loopback sockets, one emulator process per platform",
        "staged": args.stage,
        "wall_s": last["wall_s"],
        "engine_cpu_s": last["engine_cpu_s"],
        "floor_s": round(floor, 3),
        "wall_over_floor": round(last["wall_s"] / floor, 3) if floor else None,
        "http_429": sum(r["http_429"] for r in platforms.values()),
        "load": last["load"],
    }
    if len(passes) > 1:
        summary["passes"] = [
            {k: v for k, v in p.items() if k != "platforms"}
            | {"emulator_cpu_s": {n: r.get("emulator_cpu_s") for n, r in p["platforms"].items()}}
            for p in passes
        ]
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
