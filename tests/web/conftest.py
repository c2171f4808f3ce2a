"""Fixtures of the web tests: a World (the four emulators, a config, the test's store) and the
page over it, in process (Starlette's TestClient) or served by uvicorn on a loopback port for
the browser."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from sync.config import Config, WebConfig
from sync.web import build_web_app
from tests.e2e.world import World

TOKEN = "web-test-token-5f1c"


@pytest.fixture
def world(db_url: str, tmp_path: Path) -> Iterator[World]:
    w = World(db_url, tmp_path, extra={"deletes": {"policy": "propagate"}})
    yield w
    w.close()


def with_token(config: Config, token: str | None = TOKEN) -> Config:
    web = WebConfig(auth_token=SecretStr(token) if token else None)
    return config.model_copy(update={"web": web})


class Served:
    """The page served by uvicorn on a loopback port, in a thread of this process."""

    def __init__(self, world: World, config: Config) -> None:
        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        app = build_web_app(world.store, config)
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None, access_log=False, lifespan="off")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def served(world: World) -> Iterator[Served]:
    """The page over the world's store, on loopback, with no token (loopback is trusted)."""
    s = Served(world, world.config)
    yield s
    s.stop()
