"""What a job's message shows, the same on every platform.

`JobProgress` folds a job's events into its latest state; `render` turns a job,
its progress and its queue position into a `JobView` (a headline, detail lines,
the media the message should hold now, and the buttons). Each adapter only
formats a view for its platform.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from bot.formatting import format_duration, format_eta, progress_bar
from storage.files import is_video_input, poster_of
from storage.records import (
    EventKind,
    Job,
    JobEvent,
    JobParams,
    JobStatus,
    ModelActivity,
    QueuePosition,
    WorkerState,
)

TINY_NOTE = "Test model: the video is random noise, not your picture animated."
DISK_FULL_NOTE = (
    "⚠ The server's disk is full: this job waits, and goes on where it stopped once there "
    "is room again. The admins are told."
)

Action = Literal["cancel", "reroll", "extend", "remix", "delete"]
ACTIONS: tuple[Action, ...] = ("cancel", "reroll", "extend", "remix", "delete")


@dataclass(frozen=True)
class Button:
    label: str
    action: Action


@dataclass(frozen=True)
class Media:
    kind: Literal["photo", "video"]
    path: str


@dataclass
class JobProgress:
    """The latest of each kind of event of one job."""

    sections: int = 0
    steps: int = 0
    first_section: int = 0
    section: int = 0  # 0-based section being rendered
    step: int = 0
    preview: str | None = None
    partial_video: str | None = None
    partial_frames: int = 0
    sections_done: int = 0
    attempt: int = 0
    requeued: bool = False
    last_event_id: int = 0
    done: dict = field(default_factory=dict)

    def apply(self, event: JobEvent) -> None:
        data = event.data
        self.last_event_id = max(self.last_event_id, event.id)
        if event.kind is EventKind.STARTED:
            self.sections = int(data.get("sections", 0))
            self.steps = int(data.get("steps", 0))
            self.first_section = int(data.get("first_section", 0))
            self.sections_done = max(self.sections_done, self.first_section)
            self.attempt = int(data.get("attempt", 1))
            self.requeued = False
        elif event.kind is EventKind.STEP:
            self.section = int(data.get("section", 0))
            self.step = int(data.get("step", 0))
            self.steps = int(data.get("steps", self.steps))
            self.sections = int(data.get("sections", self.sections))
            self.preview = data.get("preview") or self.preview
        elif event.kind is EventKind.SECTION:
            self.sections_done = int(data.get("section", 0)) + 1
            self.sections = int(data.get("sections", self.sections))
            self.partial_video = data.get("video") or self.partial_video
            self.partial_frames = int(data.get("frames", 0))
            self.step = 0
        elif event.kind is EventKind.REQUEUED:
            self.requeued = True
        elif event.kind is EventKind.DONE:
            self.done = dict(data)

    @property
    def fraction(self) -> float:
        """Share of all steps done (sections finished count whole)."""
        if not self.sections or not self.steps:
            return 0.0
        done_steps = self.sections_done * self.steps
        if self.section >= self.sections_done:
            done_steps += self.step
        return min(1.0, done_steps / (self.sections * self.steps))


@dataclass(frozen=True)
class JobView:
    job_id: int
    status: JobStatus
    headline: str  # one line, with the state
    prompt: str
    details: tuple[str, ...]  # facts: progress, seed, timings, notes
    media: Media | None  # what the message should hold now
    buttons: tuple[Button, ...]
    final: bool  # done, failed or cancelled: this is the last view

    def text(self, limit: int | None = None, *, prompt_prefix: str = "🎬 ") -> str:
        """Plain text within `limit` characters: the prompt is cut, never the facts."""
        facts = "\n".join(self.details)
        head = self.headline
        fixed = len(head) + len(facts) + 4 + len(prompt_prefix)
        prompt = self.prompt
        if limit is not None and fixed + len(prompt) > limit:
            room = max(0, limit - fixed - 1)
            prompt = prompt[:room].rstrip() + "…" if room > 0 else ""
        parts = [head]
        if prompt:
            parts.append(f"{prompt_prefix}{prompt}")
        if facts:
            parts.append(facts)
        text = "\n".join(parts)
        if limit is not None and len(text) > limit:  # facts alone too long: last resort
            text = text[: limit - 1] + "…"
        return text

    def signature(self) -> tuple:
        """Equal for two views that would render the same message (skip the edit)."""
        return (self.headline, self.prompt, self.details, self.media, self.buttons)

    def with_details(self, *extra: str) -> JobView:
        return replace(self, details=(*self.details, *extra))


def _facts(job: Job, used_cache: str | None = None) -> str:
    """Seed, length, steps, model, and the step cache when one is on: the job's, or for a
    job that left it to the host, the one its done event says it ran with ("magcache 0.1")."""
    p = job.params
    return f"seed {p.seed} · {p.seconds:g} s · {p.steps} steps · {p.model}" + option_facts(
        p, used_cache
    )


def option_facts(p: JobParams, used_cache: str | None = None) -> str:
    """ " · LoRA paint 0.8 · magcache 0.1": the job's LoRAs and its step cache with its
    threshold when one is on (for a job that left the cache to the host, `used_cache`, the
    one its done event says it ran with); empty for neither."""
    facts = ""
    if p.loras:
        facts += " · LoRA " + ", ".join(f"{name} {scale:g}" for name, scale in p.loras)
    if p.cache is not None:
        cache = p.cache if p.cache_threshold is None else f"{p.cache} {p.cache_threshold:g}"
    else:
        cache = str(used_cache or "")
    if cache.partition(" ")[0] not in ("", "off"):
        facts += f" · {cache}"
    return facts


CANCEL = Button("✖ Cancel", "cancel")


def render(
    job: Job,
    progress: JobProgress | None = None,
    position: QueuePosition | None = None,
    *,
    tiny: bool = False,
    paused: bool = False,
    disk_full: bool = False,
    model: ModelActivity | None = None,
) -> JobView:
    """The view of `job` now (`model`: what holds the workers back from any job)."""
    progress = progress or JobProgress()
    notes = (TINY_NOTE,) if tiny else ()
    if disk_full and not job.status.finished:
        notes = (DISK_FULL_NOTE, *notes)
    if job.status is JobStatus.QUEUED:
        view = _queued(job, progress, position, paused=paused, model=model)
    elif job.status is JobStatus.RUNNING:
        view = _running(job, progress)
    elif job.status is JobStatus.DONE:
        view = _done(job, progress)
    elif job.status is JobStatus.FAILED:
        view = _failed(job)
    else:
        view = _cancelled(job)
    return view.with_details(*notes)


def _view(
    job: Job,
    headline: str,
    details: list[str],
    media: Media | None,
    buttons: tuple[Button, ...],
) -> JobView:
    return JobView(
        job.id,
        job.status,
        headline,
        job.params.prompt,
        tuple(details),
        media,
        buttons,
        job.status.finished,
    )


def input_picture(job: Job) -> str:
    """The picture the job starts from (for a video to continue: its last frame)."""
    if is_video_input(job.input_path):
        return str(poster_of(job.input_path))
    return job.input_path


def _input(job: Job) -> Media:
    return Media("photo", input_picture(job))


def model_activity_text(model: ModelActivity) -> str:
    """What the worker does instead of rendering: "downloading the model (40 %)"."""
    if model.state is WorkerState.DOWNLOADING:
        share = f" ({model.percent} %)" if model.percent is not None else ""
        return f"the worker is downloading the model{share}"
    return "the worker is loading the model"


def _queued(
    job: Job,
    progress: JobProgress,
    position: QueuePosition | None,
    *,
    paused: bool,
    model: ModelActivity | None,
) -> JobView:
    head = "⏳ Queued"
    if position is not None:
        head += f" · position {position.position}"
        # While the model downloads or loads, no job starts for minutes to hours,
        # however short the queue: say so instead of an estimate that cannot hold.
        if model is not None:
            head += f" · {model_activity_text(model)}"
        elif position.estimated_start >= 1:
            head += f" · starts in about {format_eta(position.estimated_start)}"
    details = [_facts(job)]
    if job.origin.get("prompt_cleaned"):
        details.append("Invisible control characters were removed from the prompt.")
    if progress.requeued or job.attempts:
        details.append("The renderer restarted; this job resumes where it stopped.")
    if paused:
        details.append("The queue is paused by an admin.")
    return _view(job, head, details, _input(job), (CANCEL,))


def _running(job: Job, progress: JobProgress) -> JobView:
    if job.cancel_requested:
        head = "✖ Cancelling…"
    elif not progress.sections:
        head = "🎞 Starting the renderer…"
    else:
        head = f"🎞 Rendering {progress_bar(progress.fraction)} {progress.fraction:.0%}"
    details = [_facts(job)]
    if progress.sections:
        section = min(progress.section + 1, progress.sections)
        details.insert(
            0, f"section {section}/{progress.sections} · step {progress.step}/{progress.steps}"
        )
    media = _input(job)
    if progress.partial_video:
        media = Media("video", progress.partial_video)
    elif progress.preview:
        media = Media("photo", progress.preview)
    return _view(job, head, details, media, () if job.cancel_requested else (CANCEL,))


def _done(job: Job, progress: JobProgress) -> JobView:
    details = [_facts(job, progress.done.get("cache"))]
    render_s = progress.done.get("render_seconds")
    waited = (job.started_at or job.queued_at) - job.queued_at
    timing = []
    if isinstance(render_s, int | float):
        timing.append(f"rendered in {format_duration(render_s)}")
    if waited >= 1:
        timing.append(f"waited {format_duration(waited)}")
    if timing:
        details.append(" · ".join(timing))
    video = job.delivery_path or job.result_path
    return _view(
        job,
        "✅ Done",
        details,
        Media("video", video) if video else None,
        (
            Button("🎲 Re-roll", "reroll"),
            Button("⏩ Extend", "extend"),
            Button("🎨 Remix", "remix"),
            Button("🗑 Delete", "delete"),
        ),
    )


def _failed(job: Job) -> JobView:
    details = [job.error or "The renderer failed.", _facts(job)]
    buttons = (Button("🔁 Try again", "reroll"), Button("🎨 Remix", "remix"))
    return _view(job, "⚠️ Failed", details, _input(job), buttons)


def _cancelled(job: Job) -> JobView:
    return _view(
        job,
        "✖ Cancelled",
        [_facts(job)],
        _input(job),
        (Button("🎲 Re-roll", "reroll"), Button("🎨 Remix", "remix"), Button("🗑 Delete", "delete")),
    )
