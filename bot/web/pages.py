"""The page's screens (GET): Now, Queue, Videos, Users, Animate, one job, and the
login. Each renders its live regions once here; the browser then keeps them up
to date from /live (bot/web/stream.py)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from markupsafe import Markup

from bot.service import PLATFORMS
from bot.web.context import context_of, page, session_of
from bot.web.regions import render_regions

TITLES = {
    "now": "Now",
    "queue": "Queue",
    "videos": "Videos",
    "users": "Users",
    "animate": "Animate",
    "job": "Job",
}


async def screen(
    request: web.Request, view: str, template: str, *, job_id: int | None = None, **values: Any
) -> web.Response:
    ctx = context_of(request)
    snapshot = await ctx.live.current()
    regions = await render_regions(ctx, view, snapshot, session_of(request).csrf, job_id=job_id)
    return page(
        request,
        template,
        view=view,
        title=TITLES[view],
        job_id=job_id,
        # rendered by our own autoescaping templates
        regions={key: Markup(html) for key, html in regions.items()},
        **values,
    )


async def now(request: web.Request) -> web.Response:
    """The render now, the workers, the next jobs."""
    return await screen(request, "now", "now.html")


async def queue(request: web.Request) -> web.Response:
    """Every waiting job in the order it will run, with its estimated start."""
    return await screen(request, "queue", "queue.html")


async def videos(request: web.Request) -> web.Response:
    """The finished videos."""
    return await screen(request, "videos", "videos.html")


async def users(request: web.Request) -> web.Response:
    """Who used how much; bans and limits."""
    return await screen(request, "users", "users.html", platforms=PLATFORMS)


async def animate_form(request: web.Request) -> web.Response:
    """The host's own /animate: a picture, an end picture, a prompt and options."""
    settings = context_of(request).settings
    gen = settings.generation
    form = {
        "prompt": "",
        "seconds": f"{gen.seconds:g}",
        "seed": "",
        "steps": str(gen.steps),
        "guidance": f"{gen.guidance:g}",
        "model": "framepack",
        "cache": gen.cache,
        "lora": "",
    }
    return await screen(
        request, "animate", "animate.html", gen=gen, form=form, loras=settings.model.loras
    )


async def job(request: web.Request) -> web.Response:
    """One job followed live: queued, rendering with its preview, the video at the end."""
    job_id = int(request.match_info["job_id"])
    return await screen(request, "job", "job.html", job_id=job_id)


async def login_page(request: web.Request) -> web.StreamResponse:
    """The login form; with a token in the address, the one-time login link."""
    from bot.web.actions import redeem_link  # an action, which imports this module

    if "token" in request.query:
        return await redeem_link(request)
    if session_of(request).logged_in:
        raise web.HTTPFound("/")
    ctx = context_of(request)
    return page(
        request, "login.html", view="login", title="Log in", has_password=bool(ctx.auth.password)
    )
