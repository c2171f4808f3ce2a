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
the floor is possible; ``window_floor_s`` is that tighter bound.) The last line is JSON.

    .venv/bin/python bench/pull.py --contacts 50000 --rate-scale 10
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
        [sys.executable, "-m", "sync.cli", "emulate", "--platform", platform, "--port", str(port),
         "--seed-contacts", str(contacts), "--rate-scale", str(rate_scale)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    return proc, f"http://127.0.0.1:{port}"


def wait_ready(proc: subprocess.Popen[str], platform: str) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("serving"):
            return
    raise SystemExit(f"{platform} emulator did not start: {proc.stderr.read() if proc.stderr else ''}")


async def pull_one(platform: str, url: str, rate_scale: float, contacts: int) -> dict[str, Any]:
    settings = emulator_class(platform)(rate_scale=rate_scale).connection_settings(base_url=url, timeout_s=60.0)
    connector = connector_class(platform)(settings)
    caps = connector.capabilities
    if caps.pull_mode is PullMode.LOOKUP_ONLY:
        await connector.aclose()
        return {"requests": 0, "min_requests": 0, "http_429": 0, "wall_s": 0.0, "floor_s": 0.0,
                "records": 0, "note": "cannot list contacts (lookup only)"}
    page_size = getattr(connector, "page_limit", None) or getattr(connector, "page_size", 100)
    started = time.perf_counter()
    ids: set[str] = set()
    async for page in connector.pull(None):
        ids.update(r.remote_id for r in page.records)
    wall = time.perf_counter() - started
    limit = connector.http.budget.limit
    min_requests = math.ceil(contacts / page_size)
    floor = min_requests / limit.per_second if limit else 0.0
    window_floor = (math.ceil(min_requests / limit.requests) - 1) * limit.per_seconds if limit else 0.0
    stats = connector.stats
    await connector.aclose()
    return {
        "requests": stats.requests, "min_requests": min_requests, "http_429": stats.http_429,
        "wall_s": round(wall, 3), "floor_s": round(floor, 3), "window_floor_s": round(window_floor, 3),
        "records": len(ids), "retries": stats.retries, "page_size": page_size,
        "rate_limit": f"{limit.requests}/{limit.per_seconds:g}s" if limit else None,
    }


async def pull_all(urls: dict[str, str], rate_scale: float, contacts: int) -> tuple[dict[str, Any], float]:
    started = time.perf_counter()
    results = await asyncio.gather(*(pull_one(p, u, rate_scale, contacts) for p, u in urls.items()))
    return dict(zip(urls, results, strict=True)), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--contacts", type=int, default=50_000)
    parser.add_argument("--rate-scale", type=float, default=10.0)
    args = parser.parse_args()

    procs: dict[str, subprocess.Popen[str]] = {}
    urls: dict[str, str] = {}
    try:
        for platform in PLATFORMS:
            procs[platform], urls[platform] = start(platform, args.contacts, args.rate_scale)
        for platform, proc in procs.items():
            wait_ready(proc, platform)
        print(f"emulators up (loopback sockets, one process each, rate scale {args.rate_scale:g}); pulling...",
              flush=True)
        platforms, wall = asyncio.run(pull_all(urls, args.rate_scale, args.contacts))
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            proc.wait(timeout=30)

    for name, r in platforms.items():
        print(f"{name:12s} records={r['records']:>6} requests={r['requests']:>5} (min {r['min_requests']}) "
              f"429s={r['http_429']} wall={r['wall_s']:.2f}s floor={r['floor_s']:.2f}s")
    floor = max(r["floor_s"] for r in platforms.values())
    summary = {
        "platforms": platforms,
        "contacts": args.contacts,
        "rate_scale": args.rate_scale,
        "transport": "loopback sockets, one emulator process per platform",
        "wall_s": round(wall, 3),
        "floor_s": round(floor, 3),
        "wall_over_floor": round(wall / floor, 3) if floor else None,
        "http_429": sum(r["http_429"] for r in platforms.values()),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
