"""The emulator framework: clock, rate limiter, fault injection (writes never half-applied or
doubled), page faults, request log, test helpers, and ``contactsync emulate`` as a real
process on a loopback socket.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from connectors.base import RateLimit
from connectors.emulation import Clock, FaultConfig, SlidingWindow, fake_person
from connectors.gohighlevel import CONNECTOR, EMULATOR

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def ghl_headers(emulator: EMULATOR) -> dict[str, str]:
    return {"Authorization": f"Bearer {emulator.credentials['token']}", "Version": "2021-07-28"}


def test_clock_frozen_and_advanced() -> None:
    clock = Clock(T0)
    assert clock.frozen and clock.now() == T0
    clock.advance(90)
    assert clock.now() == T0 + timedelta(seconds=90)
    live = Clock()
    before = live.now()
    live.advance(3600)
    assert live.now() - before >= timedelta(seconds=3600)


def test_sliding_window_counts_and_tells_when() -> None:
    window = SlidingWindow(RateLimit(2, 60.0))
    assert window.hit()[:2] == (True, 1)
    assert window.hit()[:2] == (True, 0)
    allowed, remaining, retry_after = window.hit()
    assert not allowed and remaining == 0 and 0 < retry_after <= 60


def test_fault_config_rejects_unknown_kinds() -> None:
    with pytest.raises(ValueError, match="unknown fault kinds"):
        FaultConfig(rate=0.5, kinds=frozenset({"explode"}))


def test_connection_settings_are_ready_to_use() -> None:
    emulator = EMULATOR(rate_scale=50)
    settings = emulator.connection_settings(options={"page_size": 3}, max_concurrency=2)
    assert isinstance(settings.credentials["token"], SecretStr)
    assert settings.credentials["token"].get_secret_value() == emulator.credentials["token"]
    assert settings.rate_limit == RateLimit(100, 10.0 / 50)
    assert settings.options["location_id"] == emulator.location_id and settings.options["page_size"] == 3
    assert settings.max_concurrency == 2


def test_seed_records_and_external_edit() -> None:
    emulator = EMULATOR(clock=Clock(T0))
    ids = emulator.seed(5, rng_seed=3)
    assert len(emulator.records()) == 5 and len(set(ids)) == 5
    emulator.clock.advance(60)
    record = emulator.external_edit(ids[0], {"firstName": "Edited"})
    assert record["firstName"] == "Edited"
    assert record["dateUpdated"] == "2026-01-01T00:01:00.000Z"
    rng = random.Random(3)
    emails = [fake_person(rng, i)["email"] for i in range(5)]
    assert sorted(r["email"] for r in emulator.records()) == sorted(emails)


def test_request_log_and_rate_limit_429() -> None:
    emulator = EMULATOR(rate_limit=RateLimit(2, 60.0))

    async def body() -> list[int]:
        async with httpx.AsyncClient(transport=emulator.transport(), base_url=emulator.base_url) as client:
            return [(await client.get("/contacts/nope", headers=ghl_headers(emulator))).status_code for _ in range(3)]

    assert asyncio.run(body()) == [400, 400, 429]
    assert [(e.method, e.path, e.status) for e in emulator.request_log] == [("GET", "/contacts/nope", 400)] * 2 + [
        ("GET", "/contacts/nope", 429)
    ]
    assert emulator.count_status(429) == 1


def test_write_faults_apply_once_or_not_at_all() -> None:
    """Every create hits a dropped connection; each fault is either before the handler (nothing
    stored) or after it (stored once, response lost) - never anything else."""
    emulator = EMULATOR(faults=FaultConfig(rate=1.0, seed=4, kinds=frozenset({"drop", "500"})))

    async def body() -> None:
        async with httpx.AsyncClient(transport=emulator.transport(), base_url=emulator.base_url) as client:
            for i in range(12):
                try:
                    await client.post(
                        "/contacts/",
                        headers=ghl_headers(emulator),
                        json={"locationId": emulator.location_id, "email": f"p{i}@example.org"},
                    )
                except httpx.RemoteProtocolError:
                    pass

    asyncio.run(body())
    whens = [f.when for f in emulator.fault_log]
    assert len(whens) == 12 and {"before", "after"} == set(whens)
    stored = sorted(r["email"] for r in emulator.records())
    expected = sorted(f"p{i}@example.org" for i, w in enumerate(whens) if w == "after")
    assert stored == expected


def test_page_faults_repeat_or_shift_back_only() -> None:
    emulator = EMULATOR(faults=FaultConfig(rate=1.0, seed=1, kinds=frozenset({"repeat_page"})))
    # page_window is what list handlers call; outside a faulted request there is no fault.
    assert emulator.page_window(10, 5) == (10, 15)

    emulator.seed(12)

    async def body() -> list[list[str]]:
        pages = []
        async with httpx.AsyncClient(transport=emulator.transport(), base_url=emulator.base_url) as client:
            for page in (1, 2):
                r = await client.post(
                    "/contacts/search",
                    headers=ghl_headers(emulator),
                    json={"locationId": emulator.location_id, "pageLimit": 5, "page": page},
                )
                pages.append([c["id"] for c in r.json()["contacts"]])
        return pages

    first, second = asyncio.run(body())
    assert second == first  # page 2 served page 1 again

    shifting = EMULATOR(faults=FaultConfig(rate=1.0, seed=1, kinds=frozenset({"shift_page"})))
    shifting.seed(12)
    emulator = shifting
    first, second = asyncio.run(body())
    assert len(second) == 6 and second[0] == first[-1]  # one record earlier, still ends in place


def test_slow_fault_past_timeout_then_retry_succeeds() -> None:
    emulator = EMULATOR(faults=FaultConfig(rate=0.5, seed=2, kinds=frozenset({"slow"}), slow_seconds=0.3))
    emulator.seed(9)

    async def body() -> int:
        connector = CONNECTOR(emulator.connection_settings(options={"page_size": 2}), emulator.transport())
        n = 0
        async for page in connector.pull(None):
            n += len(page.records)
        assert connector.stats.timeouts > 0
        await connector.aclose()
        return n

    assert asyncio.run(body()) == 9


# --------------------------------------------------------------------------- the emulate command


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_emulate_serves_over_a_socket_and_stops_on_sigterm() -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sync.cli",
            "emulate",
            "--platform",
            "gohighlevel",
            "--port",
            str(port),
            "--seed-contacts",
            "25",
            "--rate-scale",
            "100",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith(f"gohighlevel http://127.0.0.1:{port} "), line + (
            proc.stderr.read() if proc.poll() else ""
        )
        assert EMULATOR.default_credentials["token"] in line  # it prints what it accepts
        assert "serving" in proc.stdout.readline()

        async def pull() -> int:
            settings = EMULATOR(rate_scale=100).connection_settings(
                base_url=f"http://127.0.0.1:{port}", options={"page_size": 10}
            )
            connector = CONNECTOR(settings)  # a real socket, no in-process transport
            n = 0
            async for page in connector.pull(None):
                n += len(page.records)
            await connector.aclose()
            return n

        assert asyncio.run(pull()) == 25
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_emulate_rejects_bad_usage() -> None:
    from connectors.emulate import serve

    assert serve(None, False, "127.0.0.1", 1, 0, None, 1.0, 0.0, 0) == 2
    assert serve("nosuch", False, "127.0.0.1", 1, 0, None, 1.0, 0.0, 0) == 2
    assert serve("gohighlevel", True, "127.0.0.1", 1, 0, None, 1.0, 0.0, 0) == 2


def test_loopback_listeners_say_tcp_so_asyncio_disables_nagle_on_their_connections() -> None:
    """asyncio sets TCP_NODELAY only on sockets whose ``proto`` is IPPROTO_TCP, and accepted
    connections inherit the listener's. A listener made with proto 0 left Nagle on: every
    response's last segment waited for the client's delayed ACK (~40 ms a request)."""
    from connectors.loopback import LoopbackEmulators

    with LoopbackEmulators({"ghl": lambda url: EMULATOR(base_url=url)}) as served:
        listener = served._sockets["ghl"]  # noqa: SLF001
        assert listener.proto == socket.IPPROTO_TCP
        with socket.create_connection(("127.0.0.1", listener.getsockname()[1])) as client:
            client.sendall(b"GET /contacts/x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            assert client.recv(12).startswith(b"HTTP/1.1")


def test_emulate_runs_inferred_behaviour_variants() -> None:
    """``contactsync emulate --variant comm100.put_semantics=replace``: each variant goes to the
    emulator of the platform it names; an unknown behaviour, variant or platform is bad usage."""
    from connectors.emulate import build_emulators, serve

    emulators = build_emulators(
        ["acquire", "comm100"],
        host="127.0.0.1",
        port=1,
        variants={"comm100.put_semantics": "replace", "acquire.paging_base": "zero"},
    )
    acquire, comm100 = emulators
    assert comm100.variants["comm100.put_semantics"] == "replace"  # type: ignore[attr-defined]
    assert comm100.state.put_replaces  # type: ignore[attr-defined]
    assert acquire.variants["acquire.paging_base"] == "zero"  # type: ignore[attr-defined]
    args = ("127.0.0.1", 1, 0, None, 1.0, 0.0, 0)
    assert serve("comm100", False, *args, variants=["comm100.put_semantics"]) == 2  # no =VARIANT
    assert serve("comm100", False, *args, variants=["comm100.put_semantics=sometimes"]) == 2
    assert serve("comm100", False, *args, variants=["comm100.nosuch=x"]) == 2
    assert serve("comm100", False, *args, variants=["acquire.paging_base=zero"]) == 2  # not served
