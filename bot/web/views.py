"""The page's facts in the words the page shows them, from a `Snapshot` and the
store's records: each job with the same headline and details as its chat message
(bot/progress.py's `render`), the workers' state, the queue with its estimates,
the gallery and the users. Templates only lay these out.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.formatting import format_bytes, format_duration, format_eta
from bot.progress import JobProgress, Media, model_activity_text, option_facts, render
from bot.web.live import Snapshot
from storage.files import DataDir, poster_of
from storage.records import (
    Job,
    JobStatus,
    ModelActivity,
    QueuePosition,
    UserUsage,
    VideoRecord,
    WorkerRecord,
    WorkerState,
)
from storage.workers import GONE

GIB = 1024**3


def media_url(data: DataDir, job: Job, path: str | None) -> str | None:
    """The page's address of one of a job's files, or None when it is not one of them
    (only files in the job's own folders, and its pictures, are ever served)."""
    if not path:
        return None
    file = Path(path)
    if path == job.input_path:
        return f"/media/{job.id}/input"
    if path == str(poster_of(job.input_path)):  # the last frame of a video to continue
        return f"/media/{job.id}/poster"
    if path == job.end_image_path:
        return f"/media/{job.id}/end"
    if path in (job.result_path, job.delivery_path):
        return f"/media/{job.id}/video"
    for area, folder in (
        ("previews", data.previews_dir(job.id)),
        ("work", data.work_dir(job.id)),
    ):
        if file.parent == folder:
            return f"/media/{job.id}/{area}/{file.name}"
    return None


def when(timestamp: float | None) -> str:
    """A moment as the host reads it on their own clock."""
    if timestamp is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(timestamp))


@dataclass(frozen=True)
class JobCard:
    id: int
    platform: str
    owner: str
    prompt: str
    status: str
    headline: str
    details: tuple[str, ...]
    fraction: float | None  # rendering: share of the steps done
    picture: str | None  # the preview, else the input picture
    video: str | None  # the partial video while it renders, the final one when done
    params: str
    cancellable: bool
    deletable: bool
    finished: str


def owner_of(job: Job) -> str:
    return job.user_name or job.user_id


def params_text(job: Job) -> str:
    p = job.params
    text = (
        f"seed {p.seed} · {p.seconds:g} s · {p.steps} steps · guidance {p.guidance:g} · {p.model}"
    )
    return text + option_facts(p)


def job_card(
    data: DataDir,
    job: Job,
    progress: JobProgress | None,
    position: QueuePosition | None = None,
    *,
    paused: bool = False,
    model: ModelActivity | None = None,
    tiny: bool = False,
) -> JobCard:
    view = render(job, progress, position, tiny=tiny, paused=paused, model=model)
    media: Media | None = view.media
    picture = video = None
    if media is not None and media.kind == "video":
        video = media_url(data, job, media.path)
        # the last preview stays beside the partial video: it shows the step now
        picture = media_url(data, job, progress.preview if progress else None)
    elif media is not None:
        picture = media_url(data, job, media.path)
    rendering = job.status is JobStatus.RUNNING and progress is not None and progress.sections
    return JobCard(
        id=job.id,
        platform=job.platform,
        owner=owner_of(job),
        prompt=job.params.prompt,
        status=job.status.value,
        headline=view.headline,
        details=view.details,
        fraction=progress.fraction if rendering and progress is not None else None,
        picture=picture,
        video=video,
        params=params_text(job),
        cancellable=not job.status.finished and not job.cancel_requested,
        deletable=job.status.finished
        and (job.status is not JobStatus.DONE or bool(job.delivered_at)),
        finished=when(job.finished_at),
    )


@dataclass(frozen=True)
class WorkerCard:
    id: str
    state: str  # the state's name, for the page's colours
    label: str  # what it does, in words
    facts: tuple[str, ...]  # device, memory mode, VRAM, seconds per step
    live: bool


def worker_cards(
    snapshot: Snapshot, heartbeat_timeout: float, heartbeat_seconds: float
) -> list[WorkerCard]:
    """The workers heard of lately, the live ones first, and the supervisor's restart
    of a worker that died until the next one reports."""
    now = snapshot.taken_at
    live_cards, other_cards = [], []
    newest_live_start = float("-inf")
    for worker in snapshot.workers:
        age = now - worker.updated_at
        live = age <= heartbeat_timeout and worker.state not in GONE
        card = WorkerCard(
            id=worker.worker_id,
            state=worker.state.value if live else "gone",
            label=_worker_label(worker, live, age, snapshot, heartbeat_seconds),
            facts=_worker_facts(worker),
            live=live,
        )
        (live_cards if live else other_cards).append(card)
        if live:
            newest_live_start = max(newest_live_start, worker.started_at)
    restart = snapshot.restart
    # The worker that replaces a dead one reports within a heartbeat of its start.
    if (
        restart is not None
        and newest_live_start < restart.at
        and now - restart.at <= restart.delay + heartbeat_timeout
    ):
        due = restart.at + restart.delay - now
        code = "" if restart.exit_code is None else f" (exit code {restart.exit_code})"
        next_start = f", next start in {format_duration(due)}" if due >= 1 else ", starting again"
        live_cards.insert(
            0,
            WorkerCard(
                "supervisor", "restarting", f"restarting after a crash{code}{next_start}", (), True
            ),
        )
    return live_cards + other_cards


def _worker_label(
    worker: WorkerRecord, live: bool, age: float, snapshot: Snapshot, beat: float
) -> str:
    detail = worker.detail
    if worker.state is WorkerState.FAILED:
        return str(detail.get("error") or "failed")
    if worker.state is WorkerState.STOPPED:
        return f"stopped {format_duration(age)} ago"
    if not live:
        return f"not responding: last heard {format_duration(age)} ago"
    if detail.get("disk_full"):
        return "waiting for room: the data dir's disk has less than [storage] min_free_mb free"
    if worker.state is WorkerState.DOWNLOADING:
        done, total = detail.get("download_done"), detail.get("download_total")
        label = model_activity_text(snapshot.model or ModelActivity(WorkerState.DOWNLOADING))
        label = label.removeprefix("the worker is ")
        if isinstance(done, int) and isinstance(total, int) and total > 0:
            label += f": {format_bytes(done)} of {format_bytes(total)}"
        return label
    if worker.state is WorkerState.LOADING:
        return "loading the model"
    if worker.state is WorkerState.RENDERING:
        label = f"rendering job #{detail.get('job_id', '?')}"
    else:
        label = "paused: no job starts until the queue is resumed" if snapshot.paused else "ready"
    if age > 3 * beat:
        label += f" (last heard {format_duration(age)} ago)"
    return label


def _worker_facts(worker: WorkerRecord) -> tuple[str, ...]:
    d = worker.detail
    facts = []
    if d.get("device"):
        facts.append(f"device {d['device']}")
    if d.get("memory_mode"):
        facts.append(f"memory mode {d['memory_mode']}")
    if isinstance(d.get("vram_used"), int) and isinstance(d.get("vram_total"), int):
        vram = f"VRAM {d['vram_used'] / GIB:.1f} of {d['vram_total'] / GIB:.1f} GiB in use"
        if isinstance(d.get("vram_reserved"), int):
            vram += f" ({d['vram_reserved'] / GIB:.1f} GiB by this worker)"
        facts.append(vram)
    if isinstance(d.get("step_seconds"), int | float):
        facts.append(f"{d['step_seconds']:.2f} s per step")
    if d.get("host"):
        facts.append(f"on {d['host']} (pid {d.get('pid', '?')})")
    return tuple(facts)


@dataclass(frozen=True)
class QueueRow:
    position: int
    card: JobCard
    starts: str


def queue_rows(data: DataDir, snapshot: Snapshot, *, tiny: bool) -> list[QueueRow]:
    rows = []
    for job in snapshot.waiting:
        position = snapshot.positions.get(job.id)
        if position is None:
            continue
        if snapshot.paused:
            starts = "when the queue is resumed"
        elif snapshot.model is not None:
            starts = "after " + model_activity_text(snapshot.model).removeprefix("the worker is ")
        elif position.estimated_start < 1:
            starts = "next"
        else:
            starts = f"in about {format_eta(position.estimated_start)}"
        card = job_card(
            data,
            job,
            snapshot.progress.get(job.id),
            position,
            paused=snapshot.paused,
            model=snapshot.model,
            tiny=tiny,
        )
        rows.append(QueueRow(position.position, card, starts))
    return rows


@dataclass(frozen=True)
class VideoCard:
    card: JobCard
    rendered: str


def video_cards(data: DataDir, videos: Sequence[VideoRecord]) -> list[VideoCard]:
    cards = []
    for video in videos:
        job = video.job
        card = job_card(data, job, None)
        rendered = format_duration(video.render_seconds) if video.render_seconds else ""
        cards.append(VideoCard(card, rendered))
    return cards


@dataclass(frozen=True)
class UserRow:
    usage: UserUsage
    key: str
    limits: str
    gpu_day: str
    gpu_week: str


def user_rows(usage: Sequence[UserUsage], defaults: Any) -> list[UserRow]:
    rows = []
    for user in usage:
        over = user.overrides
        if over:
            waiting = over.get("max_waiting_per_user", defaults.max_waiting_per_user)
            per_day = over.get("max_video_seconds_per_day", defaults.max_video_seconds_per_day)
            limits = f"{waiting} waiting · " + (
                "no daily limit" if not per_day else f"{per_day:g} s a day"
            )
        else:
            limits = "the usual"
        rows.append(
            UserRow(
                user,
                f"{user.platform}:{user.user_id}",
                limits,
                format_duration(user.gpu_seconds_day),
                format_duration(user.gpu_seconds_week),
            )
        )
    return rows
