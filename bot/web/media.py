"""A job's files for the page: its pictures, its step previews, its partial videos
and its finished video. Only files that belong to the job are ever served: the
paths its record names, or a plain file name inside its own folders of the data
dir; anything else is a 404. aiohttp's `FileResponse` answers range requests, so
a video element can seek and play while it loads."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from bot.web.context import context_of
from storage.files import DataDir, poster_of

# Previews are new files each step, and a job's files never change under one name
# except when deleted: the browser may keep them a while (they stay private).
CACHE = "private, max-age=600"


def _inside(path: Path, folder: Path) -> bool:
    try:
        return path.resolve().is_relative_to(folder.resolve())
    except OSError:
        return False


def _send(path: Path | None, folder: Path) -> web.FileResponse:
    if path is None or not _inside(path, folder) or not path.is_file():
        raise web.HTTPNotFound(text="No such file.")
    return web.FileResponse(path, headers={"Cache-Control": CACHE})


async def job_file(request: web.Request) -> web.StreamResponse:
    """/media/<job>/input | poster | end | video: the files the job's record names (a
    poster: the last frame of a video the job continues)."""
    ctx = context_of(request)
    job = await ctx.service.store.find(int(request.match_info["job_id"]))
    if job is None:
        raise web.HTTPNotFound(text="No such job.")
    data: DataDir = ctx.data
    kind = request.match_info["kind"]
    if kind == "video":
        # the full video, not the copy fitted to a chat's upload limit
        path = job.result_path or job.delivery_path
        return _send(Path(path) if path else None, data.videos_dir(job.id))
    if kind == "poster":
        return _send(poster_of(job.input_path), data.inputs)
    path = job.input_path if kind == "input" else job.end_image_path
    return _send(Path(path) if path else None, data.inputs)


async def work_file(request: web.Request) -> web.StreamResponse:
    """/media/<job>/previews|work/<name>: a step preview or a partial video."""
    data = context_of(request).data
    job_id = int(request.match_info["job_id"])
    folder = (
        data.previews_dir(job_id)
        if request.match_info["area"] == "previews"
        else (data.work_dir(job_id))
    )
    name = request.match_info["name"]
    if name.startswith("."):  # half-written files and the like
        raise web.HTTPNotFound(text="No such file.")
    return _send(folder / name, folder)
