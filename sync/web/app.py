"""The operator's web page: Starlette routes over the store, Jinja2 templates, plain forms.

:func:`web_routes` is what the daemon's listener mounts (``build_app(store, config,
extra_routes=web_routes(store, config))``); :func:`build_web_app` wraps them in an app of their
own for ``contactsync serve`` and the tests. Every handler reads and writes through the store
(``store.status``, ``store.outbox``, ``store.held``, ``store.operator``), so the page can run
beside daemons on other machines. Links and redirects use route names (``url_for``), so the
routes can be mounted under any prefix.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.templating import Jinja2Templates

from sync.config import Config
from sync.fieldvalues import FieldValueError, expected, parse_field_value, show_value
from sync.store import Store
from sync.store.models import OutboxStatus
from sync.store.operator import NotAllowed, NotFound
from sync.web import views
from sync.web.security import CSRF_COOKIE, CSRF_FIELD, SESSION_COOKIE, Guard

TEMPLATES = Path(__file__).parent / "templates"

_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
}


@dataclass
class Ctx:
    """One request as a handler sees it."""

    request: Request
    form: FormData | None
    csrf: str

    def field(self, name: str) -> str:
        value = self.form.get(name) if self.form is not None else None
        return value if isinstance(value, str) else ""


Handler = Callable[[Ctx], Response]


class WebPage:
    """The routes' shared state: store, config, templates, guard."""

    def __init__(self, store: Store, config: Config) -> None:
        self.store = store
        self.config = config
        self.guard = Guard.from_config(config)
        self.templates = Jinja2Templates(directory=str(TEMPLATES))
        env = self.templates.env
        secrets_ = [s for s in config.secret_values() if len(s) >= 4]

        def redact(value: Any) -> Any:
            # Last line of defence: a secret never reaches a page, whatever a platform echoed.
            if isinstance(value, str):
                for s in secrets_:
                    if s in value:
                        value = value.replace(s, "***")
            return value

        env.finalize = redact
        env.globals.update(show_value=show_value, expected=expected, CSRF_FIELD=CSRF_FIELD)
        env.filters["when"] = lambda d: d.strftime("%Y-%m-%d %H:%M:%S UTC") if d else "—"

    # -- plumbing ----------------------------------------------------------------------------

    def render(self, ctx: Ctx, name: str, status_code: int = 200, **context: Any) -> Response:
        context.setdefault("flash", ctx.request.query_params.get("done"))
        context.setdefault("problem", ctx.request.query_params.get("problem"))
        return self.templates.TemplateResponse(
            ctx.request,
            name,
            {"csrf": ctx.csrf, "nav": name, "auth": self.guard.token is not None, **context},
            status_code=status_code,
        )

    def back(
        self, ctx: Ctx, route: str, *, done: str | None = None, problem: str | None = None, **params: Any
    ) -> Response:
        url = str(ctx.request.url_for(route, **params))
        query = {k: v for k, v in (("done", done), ("problem", problem)) if v}
        if query:
            url += "?" + urllib.parse.urlencode(query)
        return RedirectResponse(url, status_code=303)

    def by(self, ctx: Ctx) -> str:
        host = ctx.request.client.host if ctx.request.client else "?"
        return f"web ({host})"

    def endpoint(self, handler: Handler, *, public: bool = False) -> Callable[[Request], Any]:
        guard = self.guard

        async def run(request: Request) -> Response:
            if not public and not guard.authenticated(request):
                if request.method == "GET" and guard.token is not None:
                    login = str(request.url_for("login")) + "?" + urllib.parse.urlencode({"next": request.url.path})
                    return RedirectResponse(login, status_code=303)
                return self._refusal(request, 401 if guard.token is not None else 403)
            form: FormData | None = None
            if request.method == "POST":
                form = await request.form()
                if not guard.csrf_ok(request, form):
                    return self._plain(
                        request, 403, "refused: the form's CSRF token is missing or wrong (reload the page)"
                    )
            sid, new = guard.csrf_id(request)
            response = await run_in_threadpool(handler, Ctx(request, form, guard.csrf_token(sid)))
            if new:
                response.set_cookie(CSRF_COOKIE, sid, httponly=True, samesite="strict", path="/")
            for k, v in _HEADERS.items():
                response.headers.setdefault(k, v)
            return response

        return run

    def _plain(self, request: Request, status: int, message: str) -> Response:
        return Response(message + "\n", status_code=status, media_type="text/plain", headers=_HEADERS)

    def _refusal(self, request: Request, status: int) -> Response:
        if status == 401:
            msg = "authentication required: send Authorization: Bearer <token>, or sign in at the login page"
            return Response(
                msg + "\n", status_code=401, media_type="text/plain", headers={**_HEADERS, "WWW-Authenticate": "Bearer"}
            )
        return self._plain(
            request,
            403,
            "refused: this page serves only loopback clients unless web.auth_token (or http.auth_token) is "
            "configured; set one (as ${ENV_VAR}) and sign in with it",
        )

    # -- pages -------------------------------------------------------------------------------

    def overview(self, ctx: Ctx) -> Response:
        return self.render(ctx, "overview.html", data=views.overview(self.store, self.config))

    def failures(self, ctx: Ctx) -> Response:
        outbox = self.store.outbox
        failed = outbox.items([OutboxStatus.FAILED.value, OutboxStatus.HELD.value], limit=300)
        excluded = outbox.items([OutboxStatus.EXCLUDED.value], limit=300)
        quarantined = self.store.staging.quarantined()[-200:]
        return self.render(ctx, "failures.html", failed=failed, excluded=excluded, quarantined=quarantined)

    def retry(self, ctx: Ctx) -> Response:
        item = int(ctx.request.path_params["item"])
        try:
            self.store.operator.retry_write(item, self.by(ctx))
        except (NotFound, NotAllowed) as exc:
            return self.back(ctx, "failures", problem=str(exc))
        return self.back(ctx, "failures", done=f"write #{item} queued: the next cycle sends it")

    def skip(self, ctx: Ctx) -> Response:
        item = int(ctx.request.path_params["item"])
        try:
            self.store.operator.skip_write(item, self.by(ctx))
        except (NotFound, NotAllowed) as exc:
            return self.back(ctx, "failures", problem=str(exc))
        return self.back(ctx, "failures", done=f"write #{item} skipped: it will not be sent")

    def conflicts(self, ctx: Ctx) -> Response:
        # The ones needing review first, then the latest decided ones: any may be overridden.
        rows = self.store.status.conflicts(open_only=True, limit=200)
        seen = {r.id for r in rows}
        decided = [r for r in self.store.status.conflicts(limit=100) if r.id not in seen]
        return self.render(ctx, "conflicts.html", open=rows, decided=decided)

    def resolve(self, ctx: Ctx) -> Response:
        cid = int(ctx.request.path_params["conflict"])
        try:
            row = self.store.operator.conflict(cid)
        except NotFound as exc:
            return self.back(ctx, "conflicts", problem=str(exc))
        choice = ctx.field("choice")
        typed = ctx.field("value")
        value: Any
        # A value typed in the box wins (without JavaScript, typing does not move the radio).
        if choice.startswith("candidate:") and not typed.strip():
            try:
                value = row.candidates[int(choice.split(":", 1)[1])].get("value")
            except (ValueError, IndexError):
                return self.back(ctx, "conflicts", problem=f"conflict #{cid}: no such candidate")
        else:
            if not typed.strip():
                return self.back(ctx, "conflicts", problem=f"conflict #{cid}: pick a value or type one")
            try:
                value = parse_field_value(row.field, typed, region=self.config.default_phone_region)
            except FieldValueError as exc:
                return self.back(ctx, "conflicts", problem=f"conflict #{cid}: {exc}")
        self.store.status.resolve_conflict(cid, value, self.by(ctx))
        return self.back(
            ctx,
            "conflicts",
            done=f"conflict #{cid} resolved: {row.field} = {show_value(value)}; the next cycle carries it everywhere",
        )

    def review(self, ctx: Ctx) -> Response:
        reviews = self.store.status.reviews(open_only=True, limit=300)
        decided = [r for r in self.store.status.reviews(open_only=False, limit=100) if r.status in ("linked", "apart")]
        owners = self.store.operator.record_owners(
            [(str(rec.get("connection")), str(rec.get("remote_id"))) for r in reviews for rec in r.records]
        )
        held = self.store.held.rows(limit=500)
        by_conn: dict[str, list[Any]] = {}
        for h in held:
            by_conn.setdefault(h.connection, []).append(h)
        return self.render(
            ctx,
            "review.html",
            reviews=reviews,
            owners=owners,
            decided=decided[:30],
            held=by_conn,
            held_counts=self.store.held.counts(),
            reasons=self.store.held.reasons(),
            policy=self.config.deletes.policy,
        )

    def decide(self, ctx: Ctx) -> Response:
        rid = int(ctx.request.path_params["review"])
        decision = ctx.field("decision")
        try:
            row = self.store.operator.decide_match(rid, decision, self.by(ctx))
        except (NotFound, NotAllowed) as exc:
            return self.back(ctx, "review", problem=str(exc))
        what = "linked: the next cycle joins them into one person" if decision == "link" else "kept apart for good"
        return self.back(ctx, "review", done=f"{row.key} {what}")

    def _connections(self, ctx: Ctx) -> list[str] | None:
        name = ctx.field("connection")
        if not name:
            return None
        if name not in self.config.connections:
            raise NotAllowed(f"unknown connection {name!r}")
        return [name]

    def approve(self, ctx: Ctx) -> Response:
        # The same store call as `contactsync deletes approve`.
        try:
            done = self.store.held.approve(self._connections(ctx))
        except NotAllowed as exc:
            return self.back(ctx, "review", problem=str(exc))
        text = "; ".join(f"{c}: {n} records marked deleted" for c, n in sorted(done.items())) or "no held deletes"
        return self.back(
            ctx, "review", done=f"{text}; the next cycle applies deletes.policy ({self.config.deletes.policy})"
        )

    def reject(self, ctx: Ctx) -> Response:
        try:
            dropped = self.store.held.reject(self._connections(ctx))
        except NotAllowed as exc:
            return self.back(ctx, "review", problem=str(exc))
        text = "; ".join(f"{c}: {n} held deletes dropped" for c, n in sorted(dropped.items())) or "no held deletes"
        return self.back(ctx, "review", done=f"{text}; nothing deleted")

    def persons(self, ctx: Ctx) -> Response:
        q = ctx.request.query_params.get("q", "")
        hits = views.find_persons(self.store, self.config, q) if q.strip() else []
        return self.render(ctx, "persons.html", q=q, hits=hits, searched=bool(q.strip()))

    def person(self, ctx: Ctx) -> Response:
        pid = int(ctx.request.path_params["person"])
        try:
            report = views.person_report(self.store, self.config, pid)
        except NotFound:
            return self.render(ctx, "persons.html", status_code=404, q=str(pid), hits=[], searched=True)
        return self.render(ctx, "person.html", p=report)

    def login(self, ctx: Ctx) -> Response:
        nxt = ctx.request.query_params.get("next") or ctx.field("next") or ""
        if not nxt.startswith("/") or nxt.startswith("//"):
            nxt = str(ctx.request.url_for("overview").path)
        if ctx.request.method == "GET":
            return self.render(ctx, "login.html", next=nxt, wrong=False)
        if self.guard.token is None or not self.guard.token_ok(ctx.field("token")):
            return self.render(ctx, "login.html", status_code=401, next=nxt, wrong=True)
        response = RedirectResponse(nxt, status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            self.guard.session_value(),
            httponly=True,
            samesite="strict",
            secure=ctx.request.url.scheme == "https",
            path="/",
        )
        return response

    def logout(self, ctx: Ctx) -> Response:
        response = RedirectResponse(str(ctx.request.url_for("login")), status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    def routes(self) -> list[BaseRoute]:
        e = self.endpoint
        return [
            Route("/", e(self.overview), name="overview"),
            Route("/failures", e(self.failures), name="failures"),
            Route("/failures/{item:int}/retry", e(self.retry), methods=["POST"], name="retry"),
            Route("/failures/{item:int}/skip", e(self.skip), methods=["POST"], name="skip"),
            Route("/conflicts", e(self.conflicts), name="conflicts"),
            Route("/conflicts/{conflict:int}/resolve", e(self.resolve), methods=["POST"], name="resolve"),
            Route("/review", e(self.review), name="review"),
            Route("/review/{review:int}/decide", e(self.decide), methods=["POST"], name="decide"),
            Route("/deletes/approve", e(self.approve), methods=["POST"], name="approve_deletes"),
            Route("/deletes/reject", e(self.reject), methods=["POST"], name="reject_deletes"),
            Route("/persons", e(self.persons), name="persons"),
            Route("/persons/{person:int}", e(self.person), name="person"),
            Route("/login", e(self.login, public=True), methods=["GET", "POST"], name="login"),
            Route("/logout", e(self.logout, public=True), methods=["POST"], name="logout"),
        ]


def web_routes(store: Store, config: Config) -> list[BaseRoute]:
    """The page's routes, for the daemon's listener to mount (at ``/`` or under a prefix).
    They carry their own authentication and CSRF checks: no middleware is needed."""
    return WebPage(store, config).routes()


def build_web_app(store: Store, config: Config) -> Starlette:
    """The page alone, as an ASGI app (``contactsync serve`` and the tests)."""
    return Starlette(routes=web_routes(store, config))
