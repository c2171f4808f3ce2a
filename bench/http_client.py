"""Benchmark: client CPU per request of the shared HTTP layer, httpcore's default (anyio) network
backend against connectors/netbackend.py's plain-asyncio one (with and without holding a
request's head back to send it with its body), back to back in one run.

An Acquire emulator runs in its own ``contactsync emulate`` process (so its CPU is not ours);
this process sends ``--requests`` calls (half GET by id, half PUT of one field) with ``--concurrency`` in flight through
``HttpClient``, once per backend per round, alternating, and measures this process's CPU time
(``time.process_time``) and wall time. Medians over ``--rounds``; the last line is one JSON
object with both backends' CPU ms per request and their ratio.

    .venv/bin/python bench/http_client.py --requests 3000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.pull import free_port, wait_ready  # noqa: E402
from connectors.netbackend import AsyncioStream  # noqa: E402
from connectors.registry import connector_class, emulator_class  # noqa: E402


async def one_round(
    url: str, asyncio_backend: bool, requests: int, concurrency: int, hold: bool = True
) -> dict[str, float]:
    AsyncioStream.HOLD_BYTES = 64 * 1024 if hold else 0
    settings = emulator_class("acquire")().connection_settings(
        base_url=url, max_concurrency=concurrency, options={"asyncio_backend": asyncio_backend}
    )
    connector = connector_class("acquire")(settings)
    ids = [r.remote_id async for page in connector.pull(None) for r in page.records][:50]
    sem = asyncio.Semaphore(concurrency)

    async def get(i: int) -> None:
        async with sem:
            rid = ids[i % len(ids)]
            if i % 2:  # half writes: a request with a body (head and body written separately by httpcore)
                await connector.update(rid, {"fields": {"city": f"City {i}"}})
            else:
                await connector.get(rid)

    cpu0, t0 = time.process_time(), time.monotonic()
    await asyncio.gather(*(get(i) for i in range(requests)))
    cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
    await connector.aclose()
    return {"cpu_ms_per_request": 1000 * cpu / requests, "wall_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=8)
    args = ap.parse_args()
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sync.cli",
            "emulate",
            "--platform",
            "acquire",
            "--port",
            str(port),
            "--seed-contacts",
            "100",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        wait_ready(proc, "acquire")
        url = f"http://127.0.0.1:{port}"
        runs: dict[str, list[dict[str, float]]] = {"anyio": [], "asyncio_unbuffered": [], "asyncio": []}
        for _ in range(args.rounds):
            for name in runs:
                runs[name].append(
                    asyncio.run(
                        one_round(url, name != "anyio", args.requests, args.concurrency, hold=name == "asyncio")
                    )
                )
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    out: dict[str, Any] = {"requests": args.requests, "rounds": args.rounds, "load": os.getloadavg()[0]}
    for name, rs in runs.items():
        out[name] = {k: round(statistics.median(r[k] for r in rs), 3) for k in rs[0]}
    out["cpu_ratio_asyncio_over_anyio"] = round(
        out["asyncio"]["cpu_ms_per_request"] / out["anyio"]["cpu_ms_per_request"], 3
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
