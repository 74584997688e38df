"""Four processes claim from one database at once: no job twice, none lost."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import time
from pathlib import Path

from storage.records import JobParams, JobStatus
from storage.store import JobStore, QueueLimits

JOBS = 400
WORKERS = 4


def claim_until_empty(db: str, worker: str, start_at: float, out: mp.Queue) -> None:
    async def loop() -> list[int]:
        claimed = []
        async with await JobStore.open(db) as store:
            while time.time() < start_at:  # line the processes up so they really collide
                await asyncio.sleep(0.001)
            while (job := await store.claim(worker)) is not None:
                claimed.append(job.id)
                await store.complete(job.id, worker, result_path=f"/v/{job.id}")
        return claimed

    out.put((worker, asyncio.run(loop())))


async def test_four_processes_never_claim_a_job_twice(tmp_path: Path) -> None:
    db = tmp_path / "db.sqlite3"
    limits = QueueLimits(
        max_waiting_per_user=10_000, max_waiting=10_000, max_video_seconds_per_day=0
    )
    async with await JobStore.open(db, limits) as store:
        for i in range(JOBS):
            await store.enqueue(
                platform="telegram",
                user_id=f"u{i % 7}",
                chat_id="c",
                params=JobParams(prompt="p"),
                input_path="/i.png",
            )
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    start_at = time.time() + 3.0  # spawn start-up takes a while on 2 cores
    procs = [
        ctx.Process(target=claim_until_empty, args=(str(db), f"w{n}", start_at, out))
        for n in range(WORKERS)
    ]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    every = [job for claimed in results.values() for job in claimed]
    assert len(every) == len(set(every)), "a job was claimed twice"
    assert sorted(every) == list(range(1, JOBS + 1)), "a job was lost"
    assert sum(1 for claimed in results.values() if claimed) >= 2, "no contention happened"
    async with await JobStore.open(db) as store:
        counts = await store.counts()
    assert counts[JobStatus.DONE.value] == JOBS
