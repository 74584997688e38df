"""What the store hands out: frozen records, never rows.

A job is data; the bot and the worker share it only through these records, the
events and the files of the data dir.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class JobStatus(StrEnum):
    QUEUED = "queued"  # waiting for a worker; also a job whose worker died (it resumes)
    RUNNING = "running"  # claimed by a worker that heart-beats
    DONE = "done"  # the final video is in the data dir (delivery is recorded apart)
    FAILED = "failed"  # ended with a reason a user can read
    CANCELLED = "cancelled"  # by its owner or an admin

    @property
    def finished(self) -> bool:
        return self in FINISHED


FINISHED = frozenset({JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED})

# Every legal change of status. Anything else is a bug and is refused.
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.RUNNING, JobStatus.CANCELLED, JobStatus.FAILED}),
    JobStatus.RUNNING: frozenset(
        {JobStatus.QUEUED, JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED}
    ),
    JobStatus.DONE: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}


class EventKind(StrEnum):
    QUEUED = "queued"  # accepted into the queue (position at the time)
    STARTED = "started"  # a worker began or resumed it: sections, steps, first section
    STEP = "step"  # section, step, steps; preview picture file
    SECTION = "section"  # section, sections, frames so far, partial video file
    REQUEUED = "requeued"  # its worker stopped; it will resume from its last section
    DONE = "done"  # final video file, metadata
    FAILED = "failed"  # reason
    CANCELLED = "cancelled"


# FramePack's section arithmetic, shared by the queue's estimates and the engine
# (framepack.engine.params), so the two agree by construction: each section
# samples LATENT_WINDOW latent frames of 4 video frames, and the number of
# sections comes from the seconds asked at 30 frames a second, as the demo
# computes it, whatever the video's frame rate.
LATENT_WINDOW = 9
SECTION_FPS = 30


def sections_for(seconds: float, latent_window: int = LATENT_WINDOW) -> int:
    """Sections FramePack renders for `seconds` of video (the demo's formula)."""
    return int(max(round(seconds * SECTION_FPS / (latent_window * 4)), 1))


@dataclass(frozen=True)
class JobParams:
    """What the user asked for; validated by the bot before it is queued."""

    prompt: str
    seconds: float = 5.0
    seed: int = 0
    steps: int = 25
    guidance: float = 10.0
    model: str = "framepack"  # framepack | f1
    # None: the host's [generation] default (a job made before it was set keeps its own)
    negative_prompt: str | None = None
    cfg: float | None = None
    # The finished job whose video this one continues ("extend"); `seconds` are then the
    # new part's, and the video delivered is the whole clip.
    extend_of: int | None = None
    # LoRAs of the host's catalogue, (name, scale), in the order asked; () renders the base
    loras: tuple[tuple[str, float], ...] = ()
    # The step cache (off | teacache | magcache) and its threshold, set by the bot when the
    # job is queued; None: the host's [generation] default when it runs
    cache: str | None = None
    cache_threshold: float | None = None

    def sections(self) -> int:
        return sections_for(self.seconds)

    def to_json(self) -> str:
        return json.dumps(vars(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> JobParams:
        data = json.loads(text)
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "loras" in known:  # JSON has lists only
            known["loras"] = tuple((str(name), float(scale)) for name, scale in known["loras"])
        return cls(**known)


@dataclass(frozen=True)
class Job:
    id: int
    platform: str  # "telegram" | "discord" | "cli"
    user_id: str
    user_name: str
    chat_id: str
    params: JobParams
    input_path: str
    end_image_path: str | None
    status: JobStatus
    attempts: int
    worker_id: str | None
    queued_at: float
    started_at: float | None
    heartbeat_at: float | None
    finished_at: float | None
    cancel_requested: bool
    upload_limit: int | None  # bytes; the worker also writes a copy that fits it
    result_path: str | None
    delivery_path: str | None
    error: str | None
    delivered_at: float | None
    origin: dict[str, Any] = field(default_factory=dict)  # platform data: source message, reroll of


@dataclass(frozen=True)
class JobEvent:
    id: int  # global, increasing: read "every event after id N"
    job_id: int
    kind: EventKind
    data: dict[str, Any]
    created_at: float


@dataclass(frozen=True)
class UserRecord:
    platform: str
    user_id: str
    banned: bool
    ban_reason: str
    overrides: dict[str, Any]  # per-user queue limits, e.g. {"max_waiting_per_user": 10}


@dataclass(frozen=True)
class ChatMessageRef:
    """Which chat message shows which job, so a restarted bot edits the same one."""

    job_id: int
    platform: str
    chat_id: str
    message_id: str
    state: dict[str, Any]  # what the adapter last rendered (to skip unchanged edits)
    updated_at: float


@dataclass(frozen=True)
class QueuePosition:
    job_id: int
    position: int  # 1: next to run
    ahead: int  # waiting jobs that run first
    running: int  # jobs rendering now
    estimated_start: float  # seconds from now
    estimated_duration: float  # seconds of rendering for this job


@dataclass(frozen=True)
class Timing:
    job_id: int
    model: str
    video_seconds: float
    steps: int
    sections: int
    render_seconds: float  # first step to done, model loading excluded
    step_seconds: float  # mean seconds per step
    finished_at: float
    cache: str = "off"  # the step cache it ran with: a cached step is timed apart


class WorkerState(StrEnum):
    LOADING = "loading"  # building the model from the files on disk
    DOWNLOADING = "downloading"  # fetching the model's files first (detail: bytes done, total)
    READY = "ready"  # loaded, waiting for a job (or for an admin to resume the queue)
    RENDERING = "rendering"  # a job on the GPU (detail: its id, seconds per step)
    STOPPED = "stopped"  # exited cleanly
    FAILED = "failed"  # could not load the model (detail: why); `run` starts it again


@dataclass(frozen=True)
class WorkerRecord:
    """One worker process as it last reported itself (with its heartbeat)."""

    worker_id: str
    state: WorkerState
    detail: dict[str, Any]  # device, memory mode, VRAM, download bytes, job, step seconds
    started_at: float
    updated_at: float  # its last heartbeat or change of state


@dataclass(frozen=True)
class ModelActivity:
    """Why no worker can start a job yet although one is running: it is fetching or
    loading the model, which takes minutes (hours for a first download), so a queued
    job's estimate cannot hold."""

    state: WorkerState  # DOWNLOADING or LOADING
    percent: int | None = None  # of the download, when its size is known


@dataclass(frozen=True)
class WorkerRestart:
    """A worker that died, and when `framepack-bot run` starts the next one."""

    exit_code: int | None
    uptime: float  # seconds it ran
    delay: float  # seconds until the next start
    at: float  # when it died


@dataclass(frozen=True)
class VideoRecord:
    """A finished video as the host's gallery lists it."""

    job: Job
    render_seconds: float | None  # first step to done (None: not recorded)


@dataclass(frozen=True)
class UserUsage:
    """What one user asked of the GPU in the last day and week, and their standing."""

    platform: str
    user_id: str
    name: str  # the name they had on their latest job
    banned: bool
    ban_reason: str
    overrides: dict[str, Any]
    jobs_day: int
    jobs_week: int
    video_seconds_day: float  # seconds of finished video
    video_seconds_week: float
    gpu_seconds_day: float  # rendering time their jobs took
    gpu_seconds_week: float
    waiting: int  # jobs queued or rendering now
