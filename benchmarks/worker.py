"""Worker benchmark: the worker's own time around the engine, on the tiny preset.

A real worker (real SQLite file, real engine, real ffmpeg) renders a few
one-section jobs in burst mode. The engine is wrapped so that every event is
time-stamped on the GPU thread where the engine yields it; the store is wrapped
so that the claim, the first step event and the done row are time-stamped when
they are committed. From those:

- claim → first step: from the claim to the first step event in the database,
  less the engine's own time from `generate` to its first step (encoding the
  prompt and the picture): what the worker adds before the first step.
- last step → done: from the engine's last step to the job marked done with its
  file, less the engine's own last step → Done (decoding and encoding the last
  section): what the worker adds before the job is done. With an upload limit
  the final video is re-encoded to fit (ffmpeg, off the GPU, while the next job
  renders); that encode is shown apart and not counted as overhead.
- idle gap: the GPU's wait between two jobs, from the engine's Done of one job
  to the first call into the engine for the next.
- waits between events: how long the engine waits on the worker between two
  of its events (the cancel check).

Model loading is excluded (it happens once, before the first claim). Target
(issue 4): each of the first three under 0.5 s.

    python benchmarks/worker.py [--jobs 6] [--steps 4] [--upload-limit 20000]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse  # noqa: E402
import asyncio  # noqa: E402
import itertools  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

import framepack.worker.loop  # noqa: E402
from framepack.engine.events import Done, EngineEvent, Step  # noqa: E402
from framepack.worker.delivery import deliver  # noqa: E402
from framepack.worker.engines import EngineLike, EngineSlot, engine_factory  # noqa: E402
from framepack.worker.loop import Worker  # noqa: E402
from storage.config import parse_settings  # noqa: E402
from storage.files import DataDir  # noqa: E402
from storage.records import EventKind, JobParams  # noqa: E402
from storage.store import JobStore, QueueLimits  # noqa: E402

TARGET = 0.5


@dataclass
class Marks:
    """Time stamps of one job (time.perf_counter)."""

    claimed: float = 0.0
    generate: float = 0.0  # the worker called engine.generate
    first_pull: float = 0.0  # the engine started working
    first_step: float = 0.0  # the engine yielded step 1
    first_step_row: float = 0.0  # its event is in the database
    last_step: float = 0.0
    done: float = 0.0  # the engine yielded Done
    done_row: float = 0.0  # the job is done in the database, its files in place
    delivery: float = 0.0  # seconds placing the files (re-encoding the upload copy)
    waits: list[float] = field(default_factory=list)  # engine idle between its events


class TimedEngine:
    """The real engine, with each event time-stamped where the engine yields it."""

    def __init__(self, engine: EngineLike, jobs: list[Marks]) -> None:
        self.engine = engine
        self.components = engine.components
        self.memory_mode = engine.memory_mode
        self.jobs = jobs

    def generate(self, params: Any, image: Image.Image, **kw: Any) -> Iterator[EngineEvent]:
        marks = Marks(generate=time.perf_counter())
        self.jobs.append(marks)
        inner = self.engine.generate(params, image, **kw)

        def timed() -> Iterator[EngineEvent]:
            marks.first_pull = time.perf_counter()
            for event in inner:
                now = time.perf_counter()
                if isinstance(event, Step):
                    if not marks.first_step:
                        marks.first_step = now
                    marks.last_step = now
                if isinstance(event, Done):
                    marks.done = now
                yield event
                marks.waits.append(time.perf_counter() - now)

        return timed()


def instrument(store: JobStore, by_job: dict[int, Marks], order: list[int]) -> None:
    """Time-stamp the claim, the first step row, the files and the done row of each job."""
    claim, add_event, complete = store.claim, store.add_event, store.complete

    async def timed_claim(worker_id: str) -> Any:
        job = await claim(worker_id)
        if job is not None:
            order.append(job.id)
            by_job[job.id] = Marks(claimed=time.perf_counter())
        return job

    async def timed_add_event(job_id: int, kind: EventKind, data: Any = None) -> Any:
        event = await add_event(job_id, kind, data)
        marks = by_job[job_id]
        if kind is EventKind.STEP and not marks.first_step_row:
            marks.first_step_row = time.perf_counter()
        return event

    async def timed_complete(job_id: int, worker_id: str, **kw: Any) -> Any:
        job = await complete(job_id, worker_id, **kw)
        by_job[job_id].done_row = time.perf_counter()
        return job

    def timed_deliver(video: Path, folder: Path, upload_limit: int | None) -> Any:
        started = time.perf_counter()
        files = deliver(video, folder, upload_limit)
        by_job[int(folder.name)].delivery = time.perf_counter() - started
        return files

    framepack.worker.loop.deliver = timed_deliver  # type: ignore[assignment]
    store.claim = timed_claim  # type: ignore[method-assign]
    store.add_event = timed_add_event  # type: ignore[method-assign]
    store.complete = timed_complete  # type: ignore[method-assign]


async def bench(jobs: int, steps: int, upload_limit: int | None, engines: EngineSlot) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        settings = parse_settings(
            {
                "storage": {"data_dir": tmp},
                "model": {"preset": "tiny", "device": "cpu"},
                "queue": {"max_waiting_per_user": 1000, "max_video_seconds_per_day": 0.0},
            }
        )
        data = DataDir(settings.storage.data_dir)
        data.ensure()
        picture = data.new_input_path()
        rgb = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(picture)
        store = await JobStore.open(data.database, QueueLimits.from_settings(settings.queue))
        for i in range(jobs):
            await store.enqueue(
                platform="cli",
                user_id=f"user{i % 3}",
                chat_id="c",
                params=JobParams(prompt="a cat walks", seconds=1.0, steps=steps, seed=i),
                input_path=str(picture),
                upload_limit=upload_limit,
            )
        engine_marks: list[Marks] = []
        inner = engines.get()
        timed = EngineSlot(
            lambda preset, memory: TimedEngine(inner, engine_marks), preset="tiny", memory="auto"
        )
        by_job: dict[int, Marks] = {}
        order: list[int] = []
        instrument(store, by_job, order)
        worker = Worker(store, settings, timed, burst=True)
        await worker.run()
        await store.close()

    rows = []
    for job_id, engine in zip(order, engine_marks, strict=True):
        db = by_job[job_id]
        rows.append(
            {
                "claim_to_generate": engine.generate - db.claimed,
                "engine_to_first_step": engine.first_step - engine.first_pull,
                "claim_to_first_step_row": db.first_step_row - db.claimed,
                "engine_last_step_to_done": engine.done - engine.last_step,
                "last_step_to_done_row": db.done_row - engine.last_step,
                "delivery": db.delivery,
                "waits": engine.waits[:-1],  # the last one is the wait for the next job
            }
        )
    gaps = [b.first_pull - a.done for a, b in itertools.pairwise(engine_marks)]
    return {"rows": rows, "gaps": gaps}


def fmt(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1000:7.1f} ms   max {max(values) * 1000:7.1f} ms"


def report(title: str, result: dict) -> bool:
    rows = result["rows"]

    def col(name: str) -> list[float]:
        return [r[name] for r in rows]

    before = [r["claim_to_first_step_row"] - r["engine_to_first_step"] for r in rows]
    after = [
        r["last_step_to_done_row"] - r["engine_last_step_to_done"] - r["delivery"] for r in rows
    ]
    lines = [
        ("claim → first step row (raw)", col("claim_to_first_step_row")),
        ("  the engine's own generate → step 1", col("engine_to_first_step")),
        ("  worker: claim → engine called", col("claim_to_generate")),
        ("worker overhead, claim → first step", before),
        ("last step → job done row (raw)", col("last_step_to_done_row")),
        ("  the engine's own last step → Done", col("engine_last_step_to_done")),
        ("  placing the files (ffmpeg re-encode)", col("delivery")),
        ("worker overhead, last step → done", after),
        ("GPU idle gap between two jobs", result["gaps"]),
        ("engine waits between its events", [w for r in rows for w in r["waits"]]),
    ]
    print(f"\n{title}")
    for label, values in lines:
        print(f"  {label:<40} {fmt(values)}")
    worst = max(max(before), max(after), max(result["gaps"]))
    ok = worst < TARGET
    print(f"  target < {TARGET} s each: {'met' if ok else 'MISSED'} (worst {worst * 1000:.0f} ms)")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=6)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument(
        "--upload-limit", type=int, default=20_000, help="bytes; forces a re-encoded copy"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    started = time.perf_counter()
    engines = EngineSlot(engine_factory(parse_settings({}).model), preset="tiny", memory="auto")
    engines.get()
    print(f"tiny model loaded in {time.perf_counter() - started:.1f} s (not counted)")
    print(f"{args.jobs} one-section jobs of {args.steps} steps at the tiny preset's 128 buckets")
    ok = report("no upload limit", asyncio.run(bench(args.jobs, args.steps, None, engines)))
    ok &= report(
        f"upload limit {args.upload_limit} bytes (a re-encoded copy per job, off the GPU)",
        asyncio.run(bench(args.jobs, args.steps, args.upload_limit, engines)),
    )
    print(f"\nrerun: python benchmarks/worker.py --jobs {args.jobs} --steps {args.steps} "
          f"--upload-limit {args.upload_limit}")  # fmt: skip
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
