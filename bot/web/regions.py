"""The live parts of each page ("regions"), rendered the same way for the page's
first load and for each server-sent update, so an update replaces only what
changed (bot/web/static/app.js patches the blocks whose HTML differs: a playing
video is left alone while the step counter beside it moves on)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bot.progress import JobProgress
from bot.web.context import WebContext
from bot.web.live import Snapshot
from bot.web.views import job_card, queue_rows, user_rows, video_cards, worker_cards

# The regions each page shows, by the page's name.
VIEWS: dict[str, tuple[str, ...]] = {
    "now": ("workers", "running", "next"),
    "queue": ("workers", "queue"),
    "videos": ("videos",),
    "users": ("users",),
    "animate": ("workers",),
    "job": ("job",),
}
NEXT_SHOWN = 5  # waiting jobs on the Now page
# waiting jobs on the Queue page: more is more than a host reads, and each change of
# the queue sends the whole list to every open page
QUEUE_SHOWN = 200


@dataclass
class RegionCache:
    """The gallery and the usage table read again only when jobs finished or changed."""

    keys: dict[str, Any] = field(default_factory=dict)
    html: dict[str, str] = field(default_factory=dict)


async def render_regions(
    ctx: WebContext,
    view: str,
    snapshot: Snapshot,
    csrf: str,
    *,
    job_id: int | None = None,
    cache: RegionCache | None = None,
) -> dict[str, str]:
    """Region id -> HTML of the page `view` at `snapshot`."""
    cache = cache or RegionCache()
    forms = {"csrf": csrf, "back": view_path(view, job_id)}
    out: dict[str, str] = {}
    for name in VIEWS.get(view, ()):
        out[f"r-{name}"] = await _region(ctx, name, snapshot, forms, job_id, cache)
    return out


def view_path(view: str, job_id: int | None = None) -> str:
    """Where a page's forms come back to after their action."""
    if view == "job" and job_id is not None:
        return f"/jobs/{job_id}"
    return "/" if view == "now" else f"/{view}"


async def _region(
    ctx: WebContext,
    name: str,
    snapshot: Snapshot,
    forms: dict[str, str],
    job_id: int | None,
    cache: RegionCache,
) -> str:
    settings = ctx.settings
    tiny = ctx.service.tiny
    values: dict[str, Any] = {**forms, "paused": snapshot.paused}
    if name == "workers":
        values["workers"] = worker_cards(
            snapshot, settings.queue.heartbeat_timeout, settings.worker.heartbeat_seconds
        )
    elif name == "running":
        values["cards"] = [
            job_card(ctx.data, job, snapshot.progress.get(job.id), tiny=tiny)
            for job in snapshot.running
        ]
    elif name in ("next", "queue"):
        rows = queue_rows(ctx.data, snapshot, tiny=tiny)
        shown = NEXT_SHOWN if name == "next" else QUEUE_SHOWN
        values["rows"] = rows[:shown]
        values["more"] = max(0, len(rows) - shown)
    elif name in ("videos", "users"):
        # one read per change of the jobs' counts or an action, not per update
        key = (tuple(sorted(snapshot.counts.items())), snapshot.generation)
        if cache.keys.get(name) != key or name not in cache.html:
            cache.keys[name] = key
            cache.html[name] = await _heavy(ctx, name, forms)
        return cache.html[name]
    elif name == "job":
        values["card"] = await _followed(ctx, snapshot, job_id)
    return ctx.templates.get_template(f"_{name}.html").render(**values)


async def _heavy(ctx: WebContext, name: str, forms: dict[str, str]) -> str:
    store = ctx.service.store
    if name == "videos":
        videos = video_cards(ctx.data, await store.gallery())
        return ctx.templates.get_template("_videos.html").render(**forms, videos=videos)
    rows = user_rows(await store.usage(), ctx.settings.queue)
    return ctx.templates.get_template("_users.html").render(**forms, rows=rows)


async def _followed(ctx: WebContext, snapshot: Snapshot, job_id: int | None) -> Any:
    if job_id is None:
        return None
    job = snapshot.job(job_id)
    progress = snapshot.progress.get(job_id)
    if job is None or progress is None:  # not followed yet: read it here
        job = await ctx.service.store.find(job_id)
        if job is None:
            return None
        progress = JobProgress()
        for event in await ctx.service.store.events_since(0, job_id=job_id, limit=100_000):
            progress.apply(event)
    return job_card(
        ctx.data,
        job,
        progress,
        snapshot.positions.get(job_id),
        paused=snapshot.paused,
        model=snapshot.model,
        tiny=ctx.service.tiny,
    )
