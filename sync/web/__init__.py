"""The operator's web page (DESIGN.md, "The HTTP surface of the daemon"): overview, failed
writes, conflicts, the review queue (ambiguous matches, held deletes), person search and
history. Starlette + Jinja2 templates, plain HTML forms; everything through the store.

``web_routes(store, config)`` gives the routes for the daemon's listener to mount;
``build_web_app(store, config)`` an app of their own (``contactsync serve``)."""

from __future__ import annotations

from sync.web.app import build_web_app, web_routes

__all__ = ["build_web_app", "web_routes"]
