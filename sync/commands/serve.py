"""``contactsync serve``: the operator's web page alone (uvicorn), for a store that another
process — a daemon here or on another machine — syncs."""

from __future__ import annotations

from sync.commands.common import CommandError, open_store
from sync.config import Config
from sync.logs import get_logger
from sync.web.security import configured_token, is_loopback


def serve(config: Config, *, host: str | None = None, port: int | None = None) -> int:
    """Serve the page until SIGINT/SIGTERM. Off loopback a token must be configured."""
    import uvicorn

    from sync.web import build_web_app

    host = host or config.web.host
    port = config.web.port if port is None else port
    if not is_loopback(host) and configured_token(config) is None:
        raise CommandError(
            f"refusing to serve the web page on {host}: off loopback it needs a token; set web.auth_token "
            "(as ${ENV_VAR} or {file: path}) in the config, or serve on 127.0.0.1",
            2,
        )
    store = open_store(config)
    try:
        app = build_web_app(store, config)
        get_logger("contactsync.web").info("web_serving", url=f"http://{host}:{port}/")
        server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False))
        server.run()
    finally:
        store.close()
    return 0
