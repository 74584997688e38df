"""/live: a page's regions pushed as server-sent events whenever they change.

One event stream per open page (`EventSource` in bot/web/static/app.js, which
reconnects by itself after a restart of the bot). Each `regions` event carries
only the regions whose HTML changed since the last one; a comment every
`KEEPALIVE` seconds keeps proxies from closing an idle stream.
"""

from __future__ import annotations

import json

from aiohttp import web

from bot.web.auth import COOKIE
from bot.web.context import context_of, session_of
from bot.web.regions import VIEWS, RegionCache, render_regions

KEEPALIVE = 15.0


async def live(request: web.Request) -> web.StreamResponse:
    ctx = context_of(request)
    view = request.query.get("view", "now")
    if view not in VIEWS:
        raise web.HTTPBadRequest(text=f"no view {view!r}")
    job_text = request.query.get("job", "")
    job_id = (
        int(job_text) if job_text.isascii() and job_text.isdigit() and len(job_text) < 19 else None
    )
    csrf = session_of(request).csrf
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    sent: dict[str, str] = {}
    cache = RegionCache()
    async with ctx.live.subscribe(follow=job_id if view == "job" else None) as feed:
        snapshot = await feed.current()
        try:
            while not feed.stopped:
                # a session that logged out or expired meanwhile is told to log in again
                if ctx.auth.sessions.read(request.cookies.get(COOKIE)) is None:
                    await response.write(b"event: login\ndata: {}\n\n")
                    break
                regions = await render_regions(
                    ctx, view, snapshot, csrf, job_id=job_id, cache=cache
                )
                changed = {k: v for k, v in regions.items() if sent.get(k) != v}
                if changed:
                    sent.update(changed)
                    data = json.dumps(changed, separators=(",", ":"))
                    await response.write(f"event: regions\ndata: {data}\n\n".encode())
                if not await feed.changed(snapshot.version, KEEPALIVE):
                    await response.write(b": keep-alive\n\n")
                snapshot = feed.snapshot
        except (ConnectionResetError, ConnectionError):
            pass  # the page was closed
    return response
