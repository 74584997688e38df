"""What every request handler of the page shares, and the small helpers they use:
the session of a request, flash messages, and rendering a template."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jinja2
from aiohttp import web

from bot.formatting import format_bytes, format_duration
from bot.service import BotService, Requester
from bot.web.auth import Auth, Session
from bot.web.live import LiveFeed
from storage.config import Settings
from storage.files import DataDir

# The host on the page: an admin of platform "web", whose jobs wait in the same
# fair queue as everybody's.
HOST = Requester(platform="web", user_id="host", name="host", chat_id="web", is_admin=True)


@dataclass
class WebContext:
    service: BotService
    auth: Auth
    live: LiveFeed
    templates: jinja2.Environment
    on_change: Callable[[], None]  # an action changed the queue: the tracker looks now
    rate_limited: Callable[[], Mapping[str, int]] = dict  # 429s answered, by platform
    started_at: float = field(default_factory=time.time)

    @property
    def settings(self) -> Settings:
        return self.service.settings

    @property
    def data(self) -> DataDir:
        return self.service.data

    def changed(self) -> None:
        self.on_change()
        self.live.wake()


CONTEXT = web.AppKey("context", WebContext)
# Typed request keys where aiohttp has them (3.14), plain names before.
_RequestKey: Any = getattr(web, "RequestKey", None)
SESSION: Any = _RequestKey("session", Session) if _RequestKey else "fpb.session"
SESSION_CHANGED: Any = _RequestKey("session_changed", bool) if _RequestKey else "fpb.changed"


def context_of(request: web.Request) -> WebContext:
    return request.app[CONTEXT]


def session_of(request: web.Request) -> Session:
    return request[SESSION]


def set_session(request: web.Request, session: Session) -> None:
    request[SESSION] = session
    request[SESSION_CHANGED] = True


def flash(request: web.Request, text: str, kind: str = "ok") -> None:
    """A message for the next page the browser shows (after a redirect)."""
    set_session(request, dataclasses.replace(session_of(request), flash=(kind, text)))


def take_flash(request: web.Request) -> tuple[str, str] | None:
    session = session_of(request)
    if session.flash is None:
        return None
    set_session(request, dataclasses.replace(session, flash=None))
    return session.flash


def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("bot.web", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),  # every user's text is escaped
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["duration"] = format_duration
    env.filters["bytes"] = format_bytes
    return env


def page(request: web.Request, name: str, **values: Any) -> web.Response:
    """A whole page: the template with the session's CSRF token and its flash message."""
    ctx = context_of(request)
    html = ctx.templates.get_template(name).render(
        csrf=session_of(request).csrf,
        back=request.path,
        flash=take_flash(request),
        path=request.path,
        tiny=ctx.service.tiny,
        **values,
    )
    return web.Response(text=html, content_type="text/html")
