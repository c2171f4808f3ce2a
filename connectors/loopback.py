"""Platform emulators on real loopback sockets, served from a background thread.

The demo and the crash tests need emulators that live in *this* process (to seed them, edit
contacts "on the platform" and inspect their state) while the engine reaches them over real
HTTP — and, in the crash tests, from a worker process that is SIGKILLed and restarted while the
emulators keep their state. Ports are bound before the emulators are built, so each emulator
knows its own base URL (Comm100 returns absolute ``nextPage`` URLs).
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from connectors.emulation import Emulator

EmulatorFactory = Callable[[str], Emulator]  # base URL -> emulator


class LoopbackEmulators:
    """Serve emulators on 127.0.0.1 until :meth:`stop` (or the end of a ``with`` block)."""

    def __init__(self, factories: Mapping[str, EmulatorFactory], *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self._sockets: dict[str, socket.socket] = {}
        for i, name in enumerate(factories):
            # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says
            # TCP, and accepted connections inherit the listener's (0 by default). Without it,
            # Nagle holds each response's last segment until the client's delayed ACK: ~40 ms
            # added to every request.
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port + i if port else 0))
            sock.listen(128)
            sock.set_inheritable(False)
            self._sockets[name] = sock
        self.urls: dict[str, str] = {
            name: f"http://{host}:{sock.getsockname()[1]}" for name, sock in self._sockets.items()
        }
        self.emulators: dict[str, Emulator] = {name: f(self.urls[name]) for name, f in factories.items()}
        self._servers: list[Any] = []
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> LoopbackEmulators:
        import uvicorn

        ready = threading.Event()

        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            tasks = []
            for name, emulator in self.emulators.items():
                config = uvicorn.Config(
                    # log_config=None: uvicorn's records go to the root logger (one log format)
                    emulator.app,
                    log_level="error",
                    lifespan="off",
                    access_log=False,
                    log_config=None,
                )
                server = uvicorn.Server(config)
                self._servers.append(server)
                tasks.append(asyncio.create_task(server.serve(sockets=[self._sockets[name]])))
            while not all(s.started for s in self._servers):
                await asyncio.sleep(0.01)
            ready.set()
            await asyncio.gather(*tasks)

        self._thread = threading.Thread(target=lambda: asyncio.run(main()), name="loopback-emulators", daemon=True)
        self._thread.start()
        if not ready.wait(timeout=15):
            raise RuntimeError("emulators did not start listening")
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        for sock in self._sockets.values():
            sock.close()

    def __enter__(self) -> LoopbackEmulators:
        return self.start()

    def __exit__(self, *_: Any) -> None:
        self.stop()

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the servers' event loop thread (emulator state is not locked: edits
        made while requests are served should go through here)."""
        if self._loop is None:
            return fn()
        done = threading.Event()
        out: dict[str, Any] = {}

        def run() -> None:
            try:
                out["value"] = fn()
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                out["error"] = exc
            finally:
                done.set()

        self._loop.call_soon_threadsafe(run)
        if not done.wait(timeout=10):
            raise TimeoutError("emulator loop did not answer")
        if "error" in out:
            raise out["error"]
        return out.get("value")


def emulator_config(
    emulators: Mapping[str, Emulator],
    urls: Mapping[str, str],
    store_url: str,
    *,
    interval_seconds: float = 300.0,
    conflicts: Mapping[str, Any] | None = None,
    max_concurrency: int = 4,
    extra: Mapping[str, Any] | None = None,
    secrets_dir: Path | None = None,
) -> dict[str, Any]:
    """A contactsync configuration (as a dict, ready for YAML) whose connections point at the
    given emulators: their accepted credentials, the options their connectors need, their
    (scaled) rate limits and backoff. Connection names are the keys of ``emulators``."""
    connections: dict[str, Any] = {}
    for name, emulator in emulators.items():
        settings = emulator.connection_settings(base_url=urls[name])
        creds: dict[str, Any] = dict(emulator.credentials)
        if emulator.platform == "comm100" and "token" in creds:
            creds = {"token": creds["token"]}
        if secrets_dir is not None:
            # Secrets as files, the way a deployment would hold them (no literal in the YAML).
            secrets_dir.mkdir(parents=True, exist_ok=True)
            for key, value in list(creds.items()):
                path = secrets_dir / f"{name}.{key}"
                path.write_text(value)
                path.chmod(0o600)
                creds[key] = {"file": str(path)}
        conn: dict[str, Any] = {
            "platform": emulator.platform,
            "base_url": urls[name],
            "credentials": creds,
            "options": dict(settings.options),
            "timeout_s": settings.timeout_s,
            "max_concurrency": max_concurrency,
        }
        if emulator.rate_limit is not None:
            conn["rate_limit"] = {
                "requests": emulator.rate_limit.requests,
                "per_seconds": emulator.rate_limit.per_seconds,
            }
        connections[name] = conn
    config: dict[str, Any] = {
        "store": {"url": store_url},
        "connections": connections,
        "profiles": {
            "default": {
                "connections": list(emulators),
                "schedule": {"interval_seconds": interval_seconds},
                "misfire_grace_seconds": 30,
            }
        },
        "logging": {"level": "WARNING", "format": "json"},
    }
    if conflicts:
        config["conflicts"] = dict(conflicts)
    config.update(extra or {})
    return config
