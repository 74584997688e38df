"""Real worker subprocesses (`python -m framepack_bot.cli worker --config X`) on a
real SQLite file with the tiny model: the fair order, a kill -9 in the middle of
a job, two workers on one database, and SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from framepack.engine.engine import VIDEO_NAME
from framepack.video.probe import probe, read_frames
from framepack.worker.engines import generation_params, open_picture
from storage.records import EventKind, JobStatus
from tests.engine_fixtures import tiny_engine
from tests.worker_fixtures import (
    TINY_STEPS,
    WorkerProcess,
    enqueue,
    events_of,
    kinds,
    open_store,
    settings_of,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.slow


async def test_jobs_of_three_users_complete_in_the_fair_order(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    settings = settings_of(config)
    store = await open_store(settings)
    users = ["ann", "ann", "ann", "bob", "bob", "cid"]  # ann queues three at once
    ids = [await enqueue(store, settings, user, upload_limit=30_000) for user in users]
    by_id = dict(zip(ids, users, strict=True))
    fair = [job.id for job in await store.waiting()]
    assert [by_id[i] for i in fair] == ["ann", "bob", "cid", "ann", "bob", "ann"]

    worker = WorkerProcess.start(config, burst=True)
    assert await worker.wait() == 0, worker.log

    events = await store.events_since(0, limit=10_000)
    ran = [e.job_id for e in events if e.kind is EventKind.STARTED]
    assert ran == fair
    for job_id in ids:
        job = await store.get(job_id)
        assert job.status is JobStatus.DONE, job.error
        mine = await events_of(store, job_id)
        seen = {e.kind for e in mine}
        assert {EventKind.STARTED, EventKind.STEP, EventKind.SECTION, EventKind.DONE} <= seen
        done = kinds(mine, EventKind.DONE)[0].data
        assert probe(Path(job.result_path or "")).frames == done["frames"] > 0
        assert Path(job.delivery_path or "").stat().st_size <= 30_000
    for line in ("→ job", "▶ job", "· job", "✓ job"):
        assert worker.log.count(line) == len(ids), line
    assert "Traceback" not in worker.log
    await store.close()


async def test_a_killed_worker_s_job_resumes_from_its_checkpoint_with_the_same_frames(
    tmp_path: Path,
) -> None:
    config = write_config(tmp_path)
    settings = settings_of(config)
    store = await open_store(settings)
    job_id = await enqueue(store, settings, "ann", seconds=3.6)  # three sections

    first = WorkerProcess.start(config, burst=False, name="first")

    async def a_section() -> bool:
        return bool(kinds(await events_of(store, job_id), EventKind.SECTION))

    await wait_until(a_section, timeout=90, what="the first section")
    first.proc.send_signal(signal.SIGKILL)
    assert await first.wait() == -signal.SIGKILL
    assert (await store.get(job_id)).status is JobStatus.RUNNING  # nobody released it
    # Its heartbeat goes stale; skip the wait for heartbeat_timeout.
    assert [j.id for j in await store.requeue_stale(timeout=0)] == [job_id]

    second = WorkerProcess.start(config, burst=True, name="second")
    assert await second.wait() == 0, second.log
    job = await store.get(job_id)
    assert job.status is JobStatus.DONE
    assert job.attempts == 2

    events = await events_of(store, job_id)
    started = kinds(events, EventKind.STARTED)
    assert [s.data["attempt"] for s in started] == [1, 2]
    resumed_at = started[1].data["first_section"]
    assert resumed_at >= 1
    steps_after = [e for e in kinds(events, EventKind.STEP) if e.id > started[1].id]
    assert len(steps_after) == (3 - resumed_at) * TINY_STEPS < 3 * TINY_STEPS
    assert f"↻ job {job_id} resumed after section {resumed_at}/3" in second.log

    # The same job without interruption, in this process.
    reference = tmp_path / "reference"
    for _ in tiny_engine().generate(
        generation_params(job, settings), open_picture(job.input_path), workdir=reference
    ):
        pass
    resumed = read_frames(Path(job.result_path or ""))
    assert np.array_equal(resumed, read_frames(reference / VIDEO_NAME))
    await store.close()


async def test_two_workers_on_one_database_never_run_a_job_twice(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    settings = settings_of(config)
    store = await open_store(settings)
    ids = [await enqueue(store, settings, f"user{i % 3}") for i in range(6)]
    workers = [WorkerProcess.start(config, burst=True, name=f"w{n}") for n in range(2)]
    codes = await asyncio.gather(*(w.wait() for w in workers))
    assert codes == [0, 0], [w.log for w in workers]

    events = await store.events_since(0, limit=10_000)
    started = [e.job_id for e in events if e.kind is EventKind.STARTED]
    assert sorted(started) == ids, "a job ran twice or not at all"
    jobs = [await store.get(i) for i in ids]
    assert all(job.status is JobStatus.DONE and job.attempts == 1 for job in jobs)
    assert len({job.worker_id for job in jobs}) == 2  # both took part
    await store.close()


async def test_sigterm_puts_the_job_back_at_a_step_boundary_and_exits_0(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    settings = settings_of(config)
    store = await open_store(settings)
    job_id = await enqueue(store, settings, "ann", seconds=3.6, steps=4)
    worker = WorkerProcess.start(config, burst=False)

    async def a_step() -> bool:
        return bool(kinds(await events_of(store, job_id), EventKind.STEP))

    await wait_until(a_step, timeout=90, what="the first step")
    os.kill(worker.proc.pid, signal.SIGTERM)
    asked_after = await store.last_event_id()
    assert await worker.wait(timeout=30) == 0, worker.log

    job = await store.get(job_id)
    assert job.status is JobStatus.QUEUED and job.attempts == 0  # a clean stop costs no attempt
    events = await events_of(store, job_id)
    assert events[-1].kind is EventKind.REQUEUED
    assert len([e for e in kinds(events, EventKind.STEP) if e.id > asked_after]) <= 1
    assert f"↩ job {job_id} released" in worker.log
    assert "Traceback" not in worker.log
    await store.close()
