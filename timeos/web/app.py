"""The dashboard's ASGI application: the /ui/ routes, their gate, and how they mount beside the API.

Every page reads through Service and every button calls a Service method, the same ones the
HTTP API calls; the JSON shapes (job_json, event_json, ...) are the API's, so a page shows what
`timeos ... --json` shows.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from timeos.daemon.service import Service
from timeos.daemon.sse import EventStream
from timeos.daemon.telemetry import Lifecycle
from timeos.errors import TimeOSError
from timeos.web.activity import Activity
from timeos.web.auth import COOKIE, COOKIE_PATH, Credentials, same_origin
from timeos.web.pages import Pages, read_form

log = logging.getLogger("timeos.web")

PREFIX = "/ui"
HERE = Path(str(files("timeos.web")))
# No inline script or style anywhere; htmx is told not to add its indicator <style> (base.html).
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
}
OPEN = frozenset({f"{PREFIX}/login"})  # pages that need no login (and /ui/static/)

Handler = Callable[[Request], Awaitable[Response]]


def templates() -> Environment:
    """The Jinja2 environment: every value HTML-escaped unless a template says otherwise."""
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    # Not Jinja's tojson (markup, with <>& as \u003c...): here JSON is text, escaped like any.
    env.filters["tojson_text"] = lambda value: json.dumps(value, ensure_ascii=False)
    env.globals["asset"] = asset_url
    return env


@functools.cache
def asset_url(name: str) -> str:
    """An asset's URL with a hash of its contents: browsers cache assets for a day, and an
    upgraded daemon's app.js or app.css must not be paired with yesterday's copy."""
    digest = hashlib.sha256((HERE / "static" / name).read_bytes()).hexdigest()[:12]
    return f"{PREFIX}/static/{name}?v={digest}"


END_FRAME = b"event: end\ndata: session ended\n\n"


def live_frame(event: Lifecycle) -> bytes:
    """One SSE frame for the dashboard: `event: update`, the kind and ids as data."""
    data = " ".join(str(v) for v in (event.kind, event.fields.get("job_id") or "") if v)
    return f"event: update\ndata: {data}\n\n".encode()


class Dashboard:
    """The /ui/ application for one daemon: its service, token and read-only switch."""

    def __init__(self, service: Service, token: bytes | None, *, read_only: bool = False) -> None:
        self.service = service
        self.credentials = Credentials(token) if token is not None else None
        self.read_only = read_only
        self.activity = Activity()
        service.bus.subscribe(self.activity.observe)
        self.env = templates()
        self.pages = Pages(service, self.activity, self.render)
        self.app = Starlette(routes=self._routes())
        self.app.router.redirect_slashes = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        refusal = self.gate(request)
        if refusal is not None:
            await _secured(refusal)(scope, receive, send)
            return
        if request.url.path.startswith(f"{PREFIX}/static/"):
            await self.app(scope, receive, send)  # _Static adds the headers and its caching
            return
        # Every other answer (a button's 303, Starlette's own 404 and 405 too) carries the
        # security headers and no-store, not only the pages rendered here.
        await self.app(scope, receive, _adding_headers(send, "no-store"))

    # ---- the gate -----------------------------------------------------------------------------

    def gate(self, request: Request) -> Response | None:
        """The response refusing this request, or None when it may go on."""
        path = request.url.path
        if path.startswith(f"{PREFIX}/static/"):
            return None
        if self.credentials is None:
            return self.render(
                request,
                "message.html",
                {
                    "title": "Dashboard needs a token",
                    "message": "Start timeosd with --http-token-file: the dashboard shows jobs, "
                    "events and payloads, which this listener serves only to holders of the token.",
                },
                status=403,
            )
        writes = request.method not in ("GET", "HEAD")
        if writes and not same_origin(
            request.headers.get("origin"),
            request.headers.get("referer"),
            request.headers.get("host"),
        ):
            return self.refuse(request, "this request did not come from a page of this dashboard")
        if path in OPEN:
            return None
        if not self.credentials.session_valid(request.cookies.get(COOKIE), self._now()):
            if writes:
                return self.refuse(request, "log in with the token first", status=401)
            # The query too: a link to /ui/jobs?status=dead lands there after logging in.
            target = path + (f"?{request.url.query}" if request.url.query else "")
            query = urlencode({"next": target}) if path.startswith(f"{PREFIX}/") else ""
            if request.headers.get("hx-request") == "true":
                # A live region's refresh: a 303 would be followed inside the XHR and the login
                # page's missing #live swapped in, blanking the region. Send the page there.
                return Response(status_code=204, headers={"hx-redirect": f"{PREFIX}/login?{query}"})
            return RedirectResponse(f"{PREFIX}/login?{query}", status_code=303)
        if writes and path != f"{PREFIX}/logout":
            if self.read_only:
                return self.refuse(request, "this dashboard is read-only (--http-read-only)")
            # Forms are read here and again by the route; Starlette caches the parsed form.
            return None
        return None

    def _now(self) -> datetime:
        return self.service.clock.now()

    def refuse(self, request: Request, why: str, status: int = 403) -> Response:
        return self.render(request, "message.html", {"title": "Refused", "message": why}, status)

    # ---- rendering ----------------------------------------------------------------------------

    def render(
        self, request: Request, name: str, context: dict[str, Any], status: int = 200
    ) -> Response:
        """A page from its template, with what every page needs (CSRF token, read-only, nav)."""
        session = request.cookies.get(COOKIE)
        creds = self.credentials
        logged_in = creds is not None and creds.session_valid(session, self._now())
        html = self.env.get_template(name).render(
            request=request,
            path=request.url.path,
            # The live regions' refresh URL: path and query only. request.url is absolute, built
            # from the Host header and uvicorn's scheme: http:// behind a TLS proxy, which the
            # browser blocks (mixed content, and CSP connect-src 'self').
            here=request.url.path + (f"?{request.url.query}" if request.url.query else ""),
            csrf=creds.csrf(session) if creds and session and logged_in else "",
            read_only=self.read_only,
            logged_in=logged_in,
            **context,
        )
        return _secured(HTMLResponse(html, status_code=status))

    # ---- routes -------------------------------------------------------------------------------

    def _routes(self) -> list[Route | Mount]:
        pages = self.pages
        get = [
            ("/", pages.overview),
            ("/jobs", pages.jobs),
            ("/jobs/{id}", pages.job),
            ("/dlq", pages.dlq),
            ("/events", pages.events),
            ("/events/{id}", pages.event),
            ("/rules", pages.rules),
            ("/rules/{name}", pages.rule),
        ]
        post = [
            ("/jobs/{id}/cancel", pages.cancel_job),
            ("/jobs/{id}/retry", pages.retry_job),
            ("/dlq/retry", pages.dlq_retry),
            ("/dlq/delete", pages.dlq_delete),
            ("/events/{id}/replay", pages.replay),
            ("/rules/{name}/enable", pages.enable_rule),
            ("/rules/{name}/disable", pages.disable_rule),
            ("/rules/{name}/run", pages.run_rule),
        ]
        routes: list[Route | Mount] = [
            Route(f"{PREFIX}/login", self.login_page, methods=["GET"]),
            Route(f"{PREFIX}/login", self.login, methods=["POST"]),
            Route(f"{PREFIX}/logout", self.logout, methods=["POST"]),
            Route(f"{PREFIX}/live", self.live, methods=["GET"]),
            Route(PREFIX, lambda r: RedirectResponse(f"{PREFIX}/", 308), methods=["GET"]),
            *(Route(f"{PREFIX}{p}", self._guard(h), methods=["POST"]) for p, h in post),
            *(Route(f"{PREFIX}{p}", self._guard(h), methods=["GET"]) for p, h in get),
            # Assets only are compressed (htmx: 52 KB -> 16 KB): pages hold the CSRF token next
            # to reflected query text, which compression would expose to a BREACH-style probe.
            Mount(
                f"{PREFIX}/static",
                app=_Static(GZipMiddleware(StaticFiles(directory=HERE / "static"), 500)),
            ),
        ]
        return routes

    def _guard(self, handler: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            try:
                if request.method == "POST":
                    form = await read_form(request)
                    creds = self.credentials
                    session = request.cookies.get(COOKIE)
                    if creds is None or not creds.csrf_valid(session, form.get("csrf")):
                        return self.refuse(request, "the form's CSRF token is missing or wrong")
                return await handler(request)
            except TimeOSError as exc:
                return self.render(
                    request,
                    "message.html",
                    {"title": type(exc).__name__, "message": exc.message},
                    status=exc.http_status,
                )
            except Exception as exc:  # one bad page must not take the daemon down
                log.exception("dashboard %s %s failed", request.method, request.url.path)
                return self.render(
                    request,
                    "message.html",
                    {"title": "Internal error", "message": f"{type(exc).__name__}: {exc}"},
                    status=500,
                )

        return guarded

    async def login_page(self, request: Request) -> Response:
        creds = self.credentials
        if creds is not None and creds.session_valid(request.cookies.get(COOKIE), self._now()):
            return RedirectResponse(_next(request), status_code=303)  # already logged in
        return self.render(request, "login.html", {"next": _next(request), "error": None})

    async def login(self, request: Request) -> Response:
        try:
            form = await read_form(request)
        except TimeOSError as exc:  # not a form, or too big: say so (the gate let it through)
            context = {"next": _next(request), "error": exc.message}
            return self.render(request, "login.html", context, status=exc.http_status)
        given = form.get("token")
        creds = self.credentials
        assert creds is not None  # the gate refused every request without one
        if not isinstance(given, str) or not creds.token_matches(given):
            context = {"next": _next(request, form.get("next")), "error": "wrong token"}
            return self.render(request, "login.html", context, status=401)
        response = RedirectResponse(_next(request, form.get("next")), status_code=303)
        response.set_cookie(
            COOKIE,
            creds.open_session(self._now()),
            max_age=int(creds.ttl.total_seconds()),
            path=COOKIE_PATH,
            httponly=True,
            samesite="strict",
        )
        return _secured(response)

    async def logout(self, request: Request) -> Response:
        if self.credentials is not None:
            self.credentials.close_session(request.cookies.get(COOKIE))
        response = RedirectResponse(f"{PREFIX}/login", status_code=303)
        response.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")
        return _secured(response)

    async def live(self, request: Request) -> Response:
        watcher = self.service.watch(None, None)
        session, creds = request.cookies.get(COOKIE), self.credentials

        def framer(event: Lifecycle) -> bytes:
            # The gate checked the session when the stream opened; it may since have been logged
            # out or expired. Send this update (its refresh takes the page to the login) and end.
            if creds is None or not creds.session_valid(session, self._now()):
                watcher.close()
                # `end` is the body's sse-close event: the browser closes the stream itself
                # instead of seeing it cut (an error, and a reconnect to a login page).
                return live_frame(event) + END_FRAME
            return live_frame(event)

        return EventStream(watcher, self.service.unwatch, framer=framer)


def _next(request: Request, given: Any = None) -> str:
    """Where to go after logging in: a dashboard path only (never another site)."""
    target = given if isinstance(given, str) else request.query_params.get("next", "")
    if target.startswith(f"{PREFIX}/") and not target.startswith("//") and "\\" not in target:
        return target
    return f"{PREFIX}/"


def _secured(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    response.headers.setdefault("cache-control", "no-store")
    return response


class _Static:
    """Static assets with the dashboard's security headers and a day of caching."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, _adding_headers(send, "max-age=86400"))


def _adding_headers(send: Send, cache_control: str) -> Send:
    """`send`, adding the security headers (and `cache_control` unless set) to the response."""

    async def send_secured(message: Any) -> None:
        if message["type"] == "http.response.start":
            headers = [
                (k, v)
                for k, v in message.get("headers", [])
                if k.decode("latin-1").lower() not in SECURITY_HEADERS
            ]
            headers += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
            if not any(k.lower() == b"cache-control" for k, _ in headers):
                headers.append((b"cache-control", cache_control.encode()))
            message = {**message, "headers": headers}
        await send(message)

    return send_secured


class WithDashboard:
    """The TCP listener's application: /ui/... to the dashboard, everything else to `api`."""

    def __init__(self, api: ASGIApp, dashboard: Dashboard) -> None:
        self.api = api
        self.dashboard = dashboard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path == PREFIX or path.startswith(f"{PREFIX}/"):
            await self.dashboard(scope, receive, send)
        else:
            await self.api(scope, receive, send)
