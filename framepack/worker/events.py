"""What a rendering job leaves for the bot: its events in the store, the preview
pictures they name, and one log line per job event for the host.

Step events are rate limited (a long job must not write thousands of rows):
at most one per `interval` seconds per job, but always the first and the last
step of a section, so a message never shows a section as half done when it is
finished. Every section event is written. Each preview is a new file (the bot
may still be uploading the last one); only the latest few are kept.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from framepack.engine.events import EngineEvent, Section, Started, Step
from framepack.engine.previews import save_png
from storage.files import DataDir
from storage.records import EventKind, Job
from storage.store import JobStore

log = logging.getLogger("framepack.worker")

# Previews of one job kept on disk: the bot shows the newest, and this many
# leave it minutes of slack at one step event a second.
KEEP_PREVIEWS = 20


class JobLog:
    """One line per job event: seconds since the claim, a glyph, the job (as arq does)."""

    def __init__(self, job_id: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.job_id = job_id
        self.clock = clock
        self.claimed_at = clock()

    def elapsed(self) -> float:
        return self.clock() - self.claimed_at

    def __call__(self, glyph: str, text: str, level: int = logging.INFO) -> None:
        log.log(level, "%6.2fs %s job %d %s", self.elapsed(), glyph, self.job_id, text)


class StepThrottle:
    """Whether a step gets an event: the first and last of a section, else one per interval."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self.last = float("-inf")

    def allow(self, step: int, steps: int) -> bool:
        now = self.clock()
        if step in (1, steps) or now - self.last >= self.interval:
            self.last = now
            return True
        return False


@dataclass
class RenderTimes:
    """When this attempt's rendering started and how many steps it ran (for estimates)."""

    started_at: float | None = None
    steps_run: int = 0
    first_section: int = 0
    sections: int = 0
    last_step_at: float | None = None
    # seconds per step lately (a moving mean: a section's decode and encode show
    # in it for a step or two without hiding the sampler's pace)
    step_seconds: float | None = None

    def stepped(self, now: float) -> None:
        if self.last_step_at is not None:
            gap = now - self.last_step_at
            self.step_seconds = (
                gap if self.step_seconds is None else (0.7 * self.step_seconds + 0.3 * gap)
            )
        self.last_step_at = now


class JobEventWriter:
    """Turns one attempt's engine events into store events and the files they name."""

    def __init__(
        self,
        store: JobStore,
        job: Job,
        data: DataDir,
        job_log: JobLog,
        *,
        step_interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.job = job
        self.previews = data.previews_dir(job.id)
        self.job_log = job_log
        self.throttle = StepThrottle(step_interval, clock)
        self.clock = clock
        self.times = RenderTimes()
        self._kept: deque[Path] = deque()

    async def write(self, event: EngineEvent) -> None:
        if isinstance(event, Step):
            await self._step(event)
        elif isinstance(event, Section):
            await self._section(event)
        elif isinstance(event, Started):
            await self._started(event)

    async def _started(self, event: Started) -> None:
        self.times = RenderTimes(self.clock(), 0, event.first_section, event.sections)
        await self.store.add_event(
            self.job.id,
            EventKind.STARTED,
            {
                "sections": event.sections,
                "steps": event.steps,
                "first_section": event.first_section,
                "attempt": self.job.attempts,
            },
        )
        if event.first_section:
            self.job_log("↻", f"resumed after section {event.first_section}/{event.sections}")
        else:
            sections = _count(event.sections, "section")
            self.job_log("▶", f"started: {sections} of {event.steps} steps")

    async def _step(self, event: Step) -> None:
        self.times.steps_run += 1
        self.times.stepped(self.clock())
        if not self.throttle.allow(event.step, event.steps):
            return
        # attempt in the name: a resumed job renders the same steps again
        name = f"{self.job.attempts}-{event.section:03d}-{event.step:03d}.png"
        preview = save_png(event.preview, self.previews / name)
        self._kept.append(preview)
        if len(self._kept) > KEEP_PREVIEWS:
            self._kept.popleft().unlink(missing_ok=True)
        await self.store.add_event(
            self.job.id,
            EventKind.STEP,
            {
                "section": event.section,
                "sections": self.times.sections,
                "step": event.step,
                "steps": event.steps,
                "preview": str(preview),
            },
        )

    async def _section(self, event: Section) -> None:
        # The engine names each section's video apart (partial_NNN.mp4, the last
        # one video.mp4) and renames each into place whole: the file the bot is
        # told about stays readable while it uploads it.
        await self.store.add_event(
            self.job.id,
            EventKind.SECTION,
            {
                "section": event.section,
                "sections": event.sections,
                "frames": event.frames,
                "video": str(event.video),
            },
        )
        self.job_log("·", f"section {event.section + 1}/{event.sections} ({event.frames} frames)")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
