"""The host's page as an aiohttp application: its routes, and the guards every
request passes (bot/web/auth.py says why each is as it is).

Order of the guards: the session is read from its cookie (a fresh anonymous one
when there is none); a request for anything but the login page, the static
files, /healthz and /metrics needs a logged-in session (a page redirects to the
login, anything else is refused with 403); every POST, the login's too, needs the
session's CSRF token. Every response gets the security headers, set as it is
prepared so that errors, files and the event stream carry them too.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from bot.web import actions, health, media, metrics, pages, stream
from bot.web.auth import COOKIE, CSRF_FIELD, CSRF_HEADER, csrf_ok
from bot.web.context import (
    CONTEXT,
    SESSION,
    SESSION_CHANGED,
    WebContext,
    context_of,
    session_of,
)

STATIC = Path(__file__).with_name("static")
PUBLIC = frozenset({"/login", "/healthz", "/metrics"})
# The page runs our own script and styles only; pictures and videos come from this
# server; nobody may frame it (clickjacking of its buttons).
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "media-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # The login link carries its token in the address: never send it on.
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
UPLOAD_MARGIN = 1 << 20  # the form's other fields and the multipart framing


def build_app(ctx: WebContext) -> web.Application:
    gen = ctx.settings.generation
    # Two pictures at their largest (each is then checked like a chat picture); a
    # larger body is refused before it is read.
    app = web.Application(
        middlewares=[sessions, guard], client_max_size=2 * gen.max_image_bytes + UPLOAD_MARGIN
    )
    app[CONTEXT] = ctx
    app.on_response_prepare.append(_finish_response)
    app.add_routes(
        [
            web.get("/", pages.now),
            web.get("/queue", pages.queue),
            web.get("/videos", pages.videos),
            web.get("/users", pages.users),
            web.get("/animate", pages.animate_form),
            web.get("/jobs/{job_id:[0-9]{1,18}}", pages.job),
            web.get("/login", pages.login_page),
            web.post("/login", actions.login),
            web.post("/logout", actions.logout),
            web.post("/animate", actions.animate),
            web.post("/jobs/{job_id:[0-9]{1,18}}/cancel", actions.cancel),
            web.post("/videos/{job_id:[0-9]{1,18}}/delete", actions.delete_video),
            web.post("/queue/pause", actions.pause),
            web.post("/queue/resume", actions.resume),
            web.post("/users/ban", actions.ban),
            web.post("/users/unban", actions.unban),
            web.post("/users/limits", actions.limits),
            web.get("/live", stream.live),
            web.get("/media/{job_id:[0-9]{1,18}}/{kind:input|poster|end|video}", media.job_file),
            web.get(
                "/media/{job_id:[0-9]{1,18}}/{area:previews|work}/{name:[A-Za-z0-9_.-]{1,80}}",
                media.work_file,
            ),
            web.get("/healthz", health.healthz),
            web.get("/metrics", metrics.metrics),
            web.static("/static", STATIC, append_version=False),
        ]
    )
    return app


@web.middleware
async def sessions(request: web.Request, handler: web.Handler) -> web.StreamResponse:
    """The request's session: its cookie's, or a new anonymous one (sent back)."""
    auth = context_of(request).auth
    session = auth.sessions.read(request.cookies.get(COOKIE))
    if session is None:
        session = auth.sessions.new()
        request[SESSION_CHANGED] = True
    request[SESSION] = session
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # a redirect after a login or an action, too
        _set_cookie(request, exc)
        raise
    _set_cookie(request, response)
    return response


def _set_cookie(request: web.Request, response: web.StreamResponse) -> None:
    """The session cookie, when the session changed (set before the response is
    prepared: aiohttp writes cookies into the headers before its prepare signal)."""
    if not request.get(SESSION_CHANGED) or response.prepared:
        return
    ctx: WebContext = request.app[CONTEXT]
    response.set_cookie(
        COOKIE,
        ctx.auth.sessions.dump(request[SESSION]),
        max_age=int(ctx.auth.sessions.max_age),
        path="/",
        httponly=True,
        # Lax, not Strict: the login link opened from a terminal or another app is a
        # cross-site navigation that must end logged in. Cross-site POSTs carry no
        # cookie either way, and every POST needs the CSRF token besides.
        samesite="Lax",
        secure=request.secure,
    )


def _public(request: web.Request) -> bool:
    return request.path in PUBLIC or request.path.startswith("/static/")


@web.middleware
async def guard(request: web.Request, handler: web.Handler) -> web.StreamResponse:
    """Logged in for all but the public paths; the CSRF token on every POST."""
    session = session_of(request)
    if not _public(request) and not session.logged_in:
        if (
            request.method == "GET"
            and request.path not in ("/live",)
            and not (request.path.startswith("/media/"))
        ):
            raise web.HTTPFound("/login")
        raise web.HTTPForbidden(text="Log in first.")
    if request.method not in ("GET", "HEAD"):
        token = request.headers.get(CSRF_HEADER)
        if token is None and request.content_type in (
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ):
            token = (await request.post()).get(CSRF_FIELD)  # type: ignore[assignment]
        if not csrf_ok(session, token if isinstance(token, str) else None):
            raise web.HTTPForbidden(text="The form is out of date: reload the page and try again.")
    return await handler(request)


async def _finish_response(request: web.Request, response: web.StreamResponse) -> None:
    """Security headers on every response, errors and files and streams included."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if not request.path.startswith(("/static/", "/media/")):
        response.headers.setdefault("Cache-Control", "no-store")
