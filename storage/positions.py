"""Where a waiting job stands and when it will likely start: the fair order, and
seconds per step learnt from the jobs that finished recently."""

from __future__ import annotations

import statistics

from storage.fair_order import FAIR_ORDER_SQL
from storage.lifecycle import Lifecycle
from storage.records import JobParams, QueuePosition, Timing, sections_for

# Until real timings exist, a step is assumed to take this long (a 4090-class GPU
# at 640 takes 1.5-2.5 s per step); estimates improve after the first job.
DEFAULT_STEP_SECONDS = 2.0
RECENT_TIMINGS = 20  # the median of this many recent jobs is the step time
# Each unfused LoRA adapter adds its low-rank products to every layer it adapts: a job
# with n of them is timed (1 + n x this) x the base model's step. The timings table
# keeps base-model step times (a LoRA job's divided by its factor), so both kinds of
# job teach the same median.
LORA_STEP_SHARE = 0.08


def lora_factor(loras: int) -> float:
    """How much slower a step is with `loras` adapters on than with none."""
    return 1.0 + LORA_STEP_SHARE * loras


# What an estimate needs of a waiting job, read out of its parameters by SQLite.
ESTIMATE_COLUMNS = ", ".join(
    ["j.id"]
    + [
        f"COALESCE(json_extract(j.params, '$.{name}'), {getattr(JobParams, name)!r})"
        for name in ("model", "seconds", "steps")
    ]
    + ["COALESCE(json_array_length(j.params, '$.loras'), 0)"]
    + ["json_extract(j.params, '$.cache')"]
)


class Positions(Lifecycle):
    def step_seconds(self, model: str, cache: str | None = None) -> float:
        """Median seconds per step of the recent jobs of the model with this step cache; else
        of the model with any cache (`cache` None: the host's default, unknown here); else of
        any model; else a default."""
        rows = []
        if cache is not None:
            rows = self._all(
                "SELECT step_seconds FROM timings WHERE model = ? AND cache = ? "
                "ORDER BY finished_at DESC LIMIT ?",
                (model, cache, RECENT_TIMINGS),
            )
        if not rows:
            rows = self._all(
                "SELECT step_seconds FROM timings WHERE model = ? "
                "ORDER BY finished_at DESC LIMIT ?",
                (model, RECENT_TIMINGS),
            )
        if not rows:
            rows = self._all(
                "SELECT step_seconds FROM timings ORDER BY finished_at DESC LIMIT ?",
                (RECENT_TIMINGS,),
            )
        return statistics.median(r["step_seconds"] for r in rows) if rows else DEFAULT_STEP_SECONDS

    def estimate_duration(self, params: JobParams) -> float:
        """Seconds of rendering this job will likely take, from recent timings."""
        base = params.sections() * params.steps * self.step_seconds(params.model, params.cache)
        return base * lora_factor(len(params.loras))

    def positions(self, until: int | None = None) -> dict[int, QueuePosition]:
        """The position and estimated start of every waiting job, in one pass.

        With `until`, that job's alone (the jobs after it change nothing for it).
        """
        rows = self._all(FAIR_ORDER_SQL.format(columns=ESTIMATE_COLUMNS))
        running = self.running()
        now = self.clock()
        # Waiting jobs run in order on the first worker to free up. One worker may
        # hold two running jobs for a moment (one finishing its upload copy off the
        # GPU): count workers, not jobs.
        busy: dict[str | None, float] = {}
        for job in running:
            left = max(0.0, self.estimate_duration(job.params) - (now - (job.started_at or now)))
            busy[job.worker_id] = max(busy.get(job.worker_id, 0.0), left)
        free_at = sorted(busy.values()) or [0.0]
        # one timings query per model and cache, not per job
        per_step: dict[tuple[str, str | None], float] = {}
        out: dict[int, QueuePosition] = {}
        for index, (job_id, model, seconds, steps, loras, cache, *_) in enumerate(rows):
            if (model, cache) not in per_step:  # the rest of the row: rank, served
                per_step[model, cache] = self.step_seconds(model, cache)
            duration = sections_for(seconds) * steps * per_step[model, cache] * lora_factor(loras)
            start = min(free_at)
            free_at[free_at.index(start)] = start + duration
            if until is None or job_id == until:
                out[job_id] = QueuePosition(
                    job_id=job_id,
                    position=index + 1,
                    ahead=index,
                    running=len(running),
                    estimated_start=start,
                    estimated_duration=duration,
                )
            if job_id == until:
                break
        return out

    def position(self, job_id: int) -> QueuePosition | None:
        """Where a waiting job stands; None when it is not waiting."""
        return self.positions(until=job_id).get(job_id)

    def record_timing(self, timing: Timing) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO timings (job_id, model, video_seconds, steps, sections, "
            "render_seconds, step_seconds, finished_at, cache) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                timing.job_id,
                timing.model,
                timing.video_seconds,
                timing.steps,
                timing.sections,
                timing.render_seconds,
                timing.step_seconds,
                timing.finished_at,
                timing.cache,
            ),
        )
