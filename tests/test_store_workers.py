"""The workers' states and restarts in the store, and the reads of the host's page:
the gallery, usage per user, the wait and render histograms."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.records import JobStatus, ModelActivity, Timing, WorkerState
from storage.store import JobStore, QueueLimits
from tests.conftest import ManualClock, add_job


@pytest.fixture
async def store(tmp_path: Path, clock: ManualClock) -> JobStore:
    limits = QueueLimits(
        max_waiting_per_user=1000, max_waiting=1000, max_video_seconds_per_day=0,
        heartbeat_timeout=60.0,
    )  # fmt: skip
    s = await JobStore.open(tmp_path / "db.sqlite3", limits, clock=clock)
    yield s
    await s.close()


async def test_a_worker_reports_its_states_and_goes_stale(store: JobStore, clock) -> None:
    assert await store.model_activity() is None  # no worker at all: nothing to say
    await store.set_worker("w1", WorkerState.LOADING, {"device": "cuda:0"})
    assert await store.model_activity() == ModelActivity(WorkerState.LOADING)
    await store.set_worker(
        "w1", WorkerState.DOWNLOADING, {"download_done": 41, "download_total": 100}
    )
    assert await store.model_activity() == ModelActivity(WorkerState.DOWNLOADING, 41)
    started = (await store.workers())[0].started_at
    clock.advance(5)
    await store.set_worker("w1", WorkerState.READY, {"memory_mode": "low"})
    (worker,) = await store.workers()
    assert worker.state is WorkerState.READY and worker.detail == {"memory_mode": "low"}
    assert worker.started_at == started and worker.updated_at == started + 5
    assert await store.model_activity() is None  # a worker can take a job: estimates hold

    # a second worker still loading changes nothing while the first serves
    await store.set_worker("w2", WorkerState.LOADING)
    assert await store.model_activity() is None
    clock.advance(61)  # both silent past heartbeat_timeout: gone
    assert await store.live_workers() == []
    assert await store.model_activity() is None
    assert [w.worker_id for w in await store.workers()] == ["w2", "w1"]
    assert await store.forget_workers(30) == 2


async def test_restarts_are_counted(store: JobStore, clock) -> None:
    assert await store.last_restart() is None and await store.restart_count() == 0
    await store.record_restart(1, 3.5, 2.0)
    clock.advance(2)
    await store.record_restart(-9, 10.0, 4.0)
    last = await store.last_restart()
    assert last is not None and (last.exit_code, last.delay, last.at) == (-9, 4.0, clock.now)
    assert await store.restart_count() == 2


async def finish(store: JobStore, clock: ManualClock, job_id: int, render: float) -> None:
    job = await store.claim("w")
    assert job is not None and job.id == job_id
    clock.advance(render)
    await store.complete(job_id, "w", result_path=f"/videos/{job_id}.mp4")
    await store.record_timing(
        Timing(job_id, "framepack", 5.0, 25, 2, render, render / 50, clock.now)
    )


async def test_gallery_usage_and_histograms(store: JobStore, clock) -> None:
    old = await add_job(store, "ann", seconds=5.0)
    clock.advance(30)  # ann's job waited 30 s
    await finish(store, clock, old, 100.0)
    clock.advance(2 * 86400)  # two days later: no longer in the last 24 h
    new = await add_job(store, "ann", seconds=2.0)
    await finish(store, clock, new, 40.0)
    cancelled = await add_job(store, "bob", platform="discord", seconds=3.0)
    await store.claim("w")
    clock.advance(7)
    await store.cancel(cancelled)
    await store.confirm_cancelled(cancelled, "w")
    waiting = await add_job(store, "cyd")
    await store.set_banned("discord", "eve", True, "spam")

    gallery = await store.gallery()
    assert [(v.job.id, v.render_seconds) for v in gallery] == [(new, 40.0), (old, 100.0)]
    await store.mark_files_removed(old)
    assert [v.job.id for v in await store.gallery()] == [new]

    usage = {(u.platform, u.user_id): u for u in await store.usage()}
    ann = usage[("telegram", "ann")]
    assert (ann.jobs_day, ann.jobs_week) == (1, 2)
    assert (ann.video_seconds_day, ann.video_seconds_week) == (2.0, 7.0)
    assert (ann.gpu_seconds_day, ann.gpu_seconds_week) == (40.0, 140.0)
    bob = usage[("discord", "bob")]
    assert (bob.jobs_day, bob.video_seconds_day, bob.gpu_seconds_day) == (1, 0.0, 7.0)
    assert usage[("telegram", "cyd")].waiting == 1
    eve = usage[("discord", "eve")]
    assert eve.banned and eve.ban_reason == "spam" and eve.jobs_week == 0
    assert (await store.get(waiting)).status is JobStatus.QUEUED

    waits = await store.wait_histogram([1.0, 60.0])
    assert waits.count == 3 and waits.counts == (2, 3)  # 30 s, 0 s and 0 s
    renders = await store.render_histogram([50.0, 120.0])
    assert (renders.counts, renders.count, renders.total) == ((1, 2), 2, 140.0)
