"""/healthz: is the bot up, can it reach its database, and does a worker heart-beat.

200 when all three hold, else 503, with the facts as JSON, for a load balancer, a
container's health check or a monitoring probe (no login: it shows no job, user
or secret). A worker counts while its last heartbeat is within `[queue]
heartbeat_timeout`, as the queue itself judges a running job's worker.
"""

from __future__ import annotations

import time

from aiohttp import web

from bot.web.context import context_of
from storage.workers import GONE


async def healthz(request: web.Request) -> web.Response:
    ctx = context_of(request)
    store = ctx.service.store
    timeout = ctx.settings.queue.heartbeat_timeout
    body: dict[str, object] = {"bot": "up", "uptime_seconds": round(time.time() - ctx.started_at)}
    healthy = True
    try:
        workers = await store.workers()
        body["database"] = "ok"
    except Exception as exc:  # the answer is the point: say what failed
        body["database"] = f"error: {type(exc).__name__}"
        workers = []
        healthy = False
    now = store.clock()
    beating = [w for w in workers if w.state not in GONE]
    if beating:
        latest = max(beating, key=lambda w: w.updated_at)
        age = now - latest.updated_at
        body["worker"] = {"state": latest.state.value, "heartbeat_age_seconds": round(age, 1)}
        if age > timeout:
            healthy = False
    else:
        body["worker"] = None
        healthy = False
    body["healthy"] = healthy
    return web.json_response(body, status=200 if healthy else 503)
