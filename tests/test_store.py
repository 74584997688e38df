"""The job store on a real SQLite file: the job's life, limits, events, delivery."""

from __future__ import annotations

import itertools

import pytest

from storage.records import TRANSITIONS, EventKind, JobParams, JobStatus, Timing
from storage.store import IllegalTransition, JobLost, JobStore, QueueLimits, QueueRefused
from tests.conftest import ManualClock, add_job


async def job_in(store: JobStore, status: JobStatus) -> int:
    """A job brought to `status` through the public operations."""
    job_id = await add_job(store, f"user-{status.value}-{store.clock()}")
    if status is JobStatus.QUEUED:
        return job_id
    claimed = await store.claim("w1")
    assert claimed is not None and claimed.id == job_id
    if status is JobStatus.RUNNING:
        return job_id
    if status is JobStatus.DONE:
        await store.complete(job_id, "w1", result_path="/v/final.mp4")
    elif status is JobStatus.FAILED:
        await store.fail(job_id, "boom", worker_id="w1")
    elif status is JobStatus.CANCELLED:
        await store.cancel(job_id)
        await store.confirm_cancelled(job_id, "w1")
    return job_id


@pytest.mark.parametrize(
    ("source", "target"), list(itertools.product(list(JobStatus), list(JobStatus)))
)
async def test_every_transition_is_checked(store: JobStore, source, target) -> None:
    job_id = await job_in(store, source)
    assert (await store.get(job_id)).status is source
    legal = target in TRANSITIONS[source]

    def change() -> object:
        with store.core._tx():
            return store.core._transition(job_id, target)

    if legal:
        job = await store.run(change)
        assert job.status is target
    else:
        with pytest.raises(IllegalTransition):
            await store.run(change)
    if not legal:
        assert (await store.get(job_id)).status is source  # nothing changed


def test_transition_table_matches_the_design() -> None:
    assert TRANSITIONS[JobStatus.QUEUED] == {
        JobStatus.RUNNING,
        JobStatus.CANCELLED,
        JobStatus.FAILED,
    }
    assert TRANSITIONS[JobStatus.RUNNING] == {
        JobStatus.QUEUED,
        JobStatus.DONE,
        JobStatus.FAILED,
        JobStatus.CANCELLED,
    }
    for final in (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED):
        assert TRANSITIONS[final] == set()


async def test_a_finished_job_cannot_be_cancelled_or_completed_again(store: JobStore) -> None:
    job_id = await job_in(store, JobStatus.DONE)
    with pytest.raises(IllegalTransition, match="already done"):
        await store.cancel(job_id)
    with pytest.raises(JobLost):
        await store.complete(job_id, "w1", result_path="/x")


async def test_claim_gives_the_job_to_one_worker_with_events(store: JobStore) -> None:
    job_id = await add_job(store)
    job = await store.claim("w1")
    assert job is not None and job.id == job_id
    assert job.status is JobStatus.RUNNING and job.worker_id == "w1" and job.attempts == 1
    assert await store.claim("w2") is None
    assert await store.heartbeat(job_id, "w1") is False
    with pytest.raises(JobLost):
        await store.heartbeat(job_id, "w2")
    done = await store.complete(job_id, "w1", result_path="/v/final.mp4", metadata={"frames": 9})
    assert done.status is JobStatus.DONE and done.finished_at is not None
    kinds = [e.kind for e in await store.events_since(0, job_id=job_id)]
    assert kinds == [EventKind.QUEUED, EventKind.DONE]
    last = (await store.events_since(0))[-1]
    assert last.data == {"video": "/v/final.mp4", "delivery": None, "frames": 9}


async def test_cancel_waiting_at_once_running_by_flag(store: JobStore) -> None:
    waiting = await add_job(store, "a")
    running = await add_job(store, "b")
    await store.cancel(waiting)
    assert (await store.get(waiting)).status is JobStatus.CANCELLED
    job = await store.claim("w1")
    assert job is not None and job.id == running
    flagged = await store.cancel(running)
    assert flagged.status is JobStatus.RUNNING and flagged.cancel_requested
    assert await store.heartbeat(running, "w1") is True
    assert (await store.confirm_cancelled(running, "w1")).status is JobStatus.CANCELLED


async def test_stale_job_is_handed_out_again_then_fails(tmp_path, clock: ManualClock) -> None:
    limits = QueueLimits(max_attempts=2, heartbeat_timeout=30)
    async with await JobStore.open(tmp_path / "db", limits, clock=clock) as store:
        job_id = await add_job(store)
        assert (await store.claim("dead-worker")).id == job_id
        clock.advance(10)
        assert await store.claim("w2") is None  # not stale yet
        clock.advance(31)
        again = await store.claim("w2")
        assert again is not None and again.id == job_id and again.attempts == 2
        with pytest.raises(JobLost):
            await store.heartbeat(job_id, "dead-worker")
        kinds = [e.kind for e in await store.events_since(0, job_id=job_id)]
        assert EventKind.REQUEUED in kinds
        clock.advance(31)
        assert await store.claim("w3") is None
        failed = await store.get(job_id)
        assert failed.status is JobStatus.FAILED
        assert "stopped 2 times" in (failed.error or "")


async def test_release_puts_the_job_back_without_counting_an_attempt(store: JobStore) -> None:
    job_id = await add_job(store)
    await store.claim("w1")
    back = await store.release(job_id, "w1")
    assert back.status is JobStatus.QUEUED and back.attempts == 0 and back.worker_id is None
    assert (await store.claim("w2")).id == job_id


async def test_limits_each_refused_with_a_reason(tmp_path, clock: ManualClock) -> None:
    limits = QueueLimits(
        max_waiting_per_user=2, max_waiting=3, max_video_seconds_per_day=12, cooldown_seconds=5
    )
    async with await JobStore.open(tmp_path / "db", limits, clock=clock) as store:
        await add_job(store, "a", tick=10)
        with pytest.raises(QueueRefused) as refused:
            await add_job(store, "a", tick=1)
        assert refused.value.reason == "cooldown"
        assert refused.value.wait_seconds == pytest.approx(4)
        await add_job(store, "a", tick=10)
        with pytest.raises(QueueRefused) as refused:
            await add_job(store, "a", tick=10)
        assert (refused.value.reason, refused.value.count, refused.value.limit) == (
            "user_limit",
            2,
            2,
        )
        await add_job(store, "b", tick=10)
        with pytest.raises(QueueRefused) as refused:
            await add_job(store, "c", tick=10)
        assert refused.value.reason == "queue_full"
        assert (await store.counts())["queued"] == 3
        # daily seconds: a has used 10 of 12; finishing jobs does not give them back
        for _ in range(3):
            job = await store.claim("w")
            await store.complete(job.id, "w", result_path="/v")
        with pytest.raises(QueueRefused) as refused:
            await add_job(store, "a", tick=10, seconds=5)
        assert refused.value.reason == "daily_limit"
        assert (refused.value.left_seconds, refused.value.limit) == (2, 12)
        assert refused.value.asked_seconds == 5
        await add_job(store, "a", tick=10, seconds=2)
        # admins are exempt from per-user limits
        await add_job(store, "a", tick=1, seconds=30, exempt=True)


async def test_banned_user_is_refused_and_their_waiting_jobs_cancelled(store: JobStore) -> None:
    job_id = await add_job(store, "troll")
    await store.set_banned("telegram", "troll", True, "spam")
    assert (await store.get(job_id)).status is JobStatus.CANCELLED
    with pytest.raises(QueueRefused) as refused:
        await add_job(store, "troll")
    assert (refused.value.reason, refused.value.ban_reason) == ("banned", "spam")
    await store.set_banned("telegram", "troll", False)
    await add_job(store, "troll")


async def test_per_user_override(tmp_path, clock) -> None:
    async with await JobStore.open(
        tmp_path / "db", QueueLimits(max_waiting_per_user=1), clock=clock
    ) as store:
        await store.set_overrides("telegram", "vip", {"max_waiting_per_user": 2})
        await add_job(store, "vip")
        await add_job(store, "vip")
        with pytest.raises(QueueRefused):
            await add_job(store, "vip")


async def test_pause_stops_claims_not_enqueues(store: JobStore) -> None:
    await store.set_paused(True)
    job_id = await add_job(store)
    assert await store.claim("w1") is None
    await store.set_paused(False)
    assert (await store.claim("w1")).id == job_id


async def test_positions_and_estimates_follow_timings(store: JobStore, clock) -> None:
    ids = [await add_job(store, u) for u in ("a", "a", "b")]
    positions = await store.positions()
    assert [positions[i].position for i in ids] == [1, 3, 2]  # b's first job before a's second
    default = positions[ids[0]].estimated_duration
    assert default > 0
    await store.record_timing(
        Timing(
            job_id=ids[0],
            model="framepack",
            video_seconds=5,
            steps=25,
            sections=1,
            render_seconds=25,
            step_seconds=0.5,
            finished_at=clock(),
        )
    )
    job = await store.claim("w1")
    assert job.id == ids[0]
    positions = await store.positions()
    # 5 s at 30 fps is 4 sections of 25 steps: 50 s at 0.5 s a step
    assert positions[ids[2]].estimated_duration == pytest.approx(50.0)
    # a was just served, so b's job (rank 1 like a's second) runs first: round robin
    assert positions[ids[2]].position == 1
    assert positions[ids[2]].estimated_start == pytest.approx(50.0)  # after the running one
    assert positions[ids[1]].estimated_start == pytest.approx(100.0)
    assert await store.position(ids[0]) is None  # running: no position


async def test_estimates_learn_per_cache_setting(store: JobStore, clock) -> None:
    """A cached job is estimated from cached jobs' timings, an uncached one from uncached
    ones; a cache nobody ran yet (or a job from before caches) from the model's timings."""

    async def queue(cache: str | None) -> int:
        clock.advance(1)
        params = JobParams(prompt="a cat", seconds=5.0, cache=cache)
        job = await store.enqueue(
            platform="telegram", user_id="u", chat_id="c", params=params, input_path="/i.png"
        )
        return job.id

    for cache, per_step in (("off", 2.0), ("magcache", 1.0)):
        await store.record_timing(
            Timing(
                job_id=await queue(cache),
                model="framepack",
                video_seconds=5,
                steps=25,
                sections=4,
                render_seconds=100 * per_step,
                step_seconds=per_step,
                finished_at=clock(),
                cache=cache,
            )
        )
    assert (await store.estimate_duration(JobParams(prompt="a", cache="off"))) == 200.0
    assert (await store.estimate_duration(JobParams(prompt="a", cache="magcache"))) == 100.0
    both = await store.estimate_duration(JobParams(prompt="a", cache="teacache"))
    assert both == pytest.approx(150.0)  # no teacache timings yet: the model's median
    waiting = {cache: await queue(cache) for cache in ("off", "magcache")}
    positions = await store.positions()
    assert positions[waiting["magcache"]].estimated_duration == pytest.approx(100.0)
    assert positions[waiting["off"]].estimated_duration == pytest.approx(200.0)


async def test_delivery_is_recorded_once(store: JobStore) -> None:
    job_id = await job_in(store, JobStatus.DONE)
    assert [j.id for j in await store.undelivered()] == [job_id]
    assert await store.mark_delivered(job_id) is True
    assert await store.mark_delivered(job_id) is False
    assert await store.undelivered() == []


async def test_events_since_reads_in_order_across_jobs(store: JobStore) -> None:
    a = await add_job(store, "a")
    b = await add_job(store, "b")
    first = await store.last_event_id()
    await store.add_event(a, EventKind.STEP, {"step": 1})
    await store.add_event(b, EventKind.STEP, {"step": 1})
    await store.add_event(a, EventKind.STEP, {"step": 2})
    events = await store.events_since(first)
    assert [(e.job_id, e.data["step"]) for e in events] == [(a, 1), (b, 1), (a, 2)]
    assert [e.data["step"] for e in await store.events_since(first, job_id=a)] == [1, 2]


async def test_chat_message_refs_survive_reopen(tmp_path, clock) -> None:
    path = tmp_path / "db"
    async with await JobStore.open(path, clock=clock) as store:
        job_id = await add_job(store)
        await store.set_message(job_id, "telegram", "42", "1001", {"caption": "queued"})
    async with await JobStore.open(path, clock=clock) as store:
        ref = await store.message(job_id, "telegram")
        assert ref is not None and ref.message_id == "1001" and ref.state == {"caption": "queued"}
        await store.update_message_state(job_id, "telegram", {"caption": "rendering"})
        assert (await store.message(job_id, "telegram")).state == {"caption": "rendering"}


async def test_params_round_trip(store: JobStore) -> None:
    params = JobParams(
        prompt="[0s: walk] [2s: turn]", seconds=7.5, seed=42, steps=20, guidance=9.0, model="f1"
    )
    job = await store.enqueue(
        platform="discord",
        user_id="9",
        chat_id="1",
        params=params,
        input_path="/in.png",
        upload_limit=10 << 20,
    )
    again = await store.get(job.id)
    assert again.params == params and again.upload_limit == 10 << 20


def test_the_queue_statements_read_their_indexes_not_the_history(tmp_path) -> None:
    """A user's first waiting job and their limits come from the small partial
    indexes: a plan that walks the user's whole history would make every claim
    and every /animate slower as the bot ages (benchmarks/queue.py)."""
    from storage.db import open_database

    conn = open_database(tmp_path / "q.sqlite3")
    # the triggers' statement that finds a user's first waiting job
    first = (
        "SELECT id FROM jobs WHERE platform = 'telegram' AND user_id = 'u' "
        "AND status = 'queued' ORDER BY queued_at, id LIMIT 1"
    )
    running = (
        "SELECT COUNT(*) FROM jobs INDEXED BY jobs_running "
        "WHERE platform = 'telegram' AND user_id = 'u' AND status = 'running'"
    )
    for sql, index in (
        (first, "jobs_user_waiting"),
        (
            "SELECT COUNT(*) FROM jobs WHERE platform = 'telegram' AND user_id = 'u' "
            "AND status = 'queued'",
            "jobs_user_waiting",
        ),
        (running, "jobs_running"),
    ):
        plan = " ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql))
        assert f"INDEX {index}" in plan, (sql, plan)
    conn.close()


def test_positions_read_by_another_connection_agree(tmp_path) -> None:
    """Jobs queued through another connection (the other platform, another process)
    get the same positions and estimates from every connection."""
    from storage.db import open_database
    from storage.store import StoreCore

    path = tmp_path / "q.sqlite3"
    writer, reader = StoreCore(open_database(path)), StoreCore(open_database(path))
    ids = []
    for n in range(30):
        params = JobParams(prompt="p", seconds=1 + n % 4, steps=10 + n % 7, model="framepack")
        job = writer.enqueue(
            platform="telegram",
            user_id=f"u{n % 9}",
            chat_id="c",
            params=params,
            input_path="i",
            exempt=True,
        )
        ids.append(job.id)
    expected = writer.positions()
    assert reader.positions() == expected
    assert {job_id: reader.position(job_id) for job_id in ids} == expected
    # each starts when the work of the jobs ahead of it is done
    ahead = 0.0
    for job_id in sorted(expected, key=lambda job_id: expected[job_id].position):
        assert expected[job_id].estimated_start == pytest.approx(ahead)
        ahead += expected[job_id].estimated_duration
