"""Fairness as a property: random users, arrival orders, cancels, completions and
jobs handed back by their worker.

The rule of DESIGN.md: order waiting jobs by (rank of the job among its owner's
waiting jobs, time queued), with ties of rank broken first by the owner who was
served least recently (see storage/store.py for why). Every claim must take the
first job of that order, and the positions shown to users must be that order.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage.records import JobParams
from storage.store import JobStore, QueueLimits
from tests.conftest import ManualClock

USERS = ["ann", "bob", "cid", "dee"]

operation = st.one_of(
    st.tuples(st.just("enqueue"), st.sampled_from(USERS)),
    st.tuples(st.just("claim"), st.just("")),
    st.tuples(st.just("finish"), st.just("")),
    st.tuples(st.just("cancel"), st.integers(min_value=0, max_value=30)),
    st.tuples(st.just("release"), st.just("")),  # a worker stops: its job waits again
)


def rank_of(waiting: list[tuple[int, str, float]]) -> dict[int, int]:
    rank: dict[int, int] = {}
    seen: dict[str, int] = {}
    for job_id, user, _t in sorted(waiting, key=lambda w: (w[2], w[0])):
        seen[user] = seen.get(user, 0) + 1
        rank[job_id] = seen[user]
    return rank


def expected_order(
    waiting: list[tuple[int, str, float]], served: dict[str, float] | None = None
) -> list[int]:
    """The rule, written independently of the store: rank among owner's waiting jobs,
    then least recently served owner, then time queued."""
    served = served or {}
    rank = rank_of(waiting)
    queued = {job_id: t for job_id, _u, t in waiting}
    owner = {job_id: u for job_id, u, _t in waiting}
    return sorted(rank, key=lambda j: (rank[j], served.get(owner[j], 0.0), queued[j], j))


async def run_scenario(ops: list[tuple[str, object]]) -> None:
    clock = ManualClock()
    with tempfile.TemporaryDirectory() as tmp:
        limits = QueueLimits(
            max_waiting_per_user=1000, max_waiting=100_000, max_video_seconds_per_day=0
        )
        async with await JobStore.open(Path(tmp) / "db", limits, clock=clock) as store:
            waiting: list[tuple[int, str, float]] = []  # (id, user, queued_at): our model
            running: list[int] = []
            served: dict[str, float] = {}
            for op, arg in ops:
                clock.advance(1)
                if op == "enqueue":
                    job = await store.enqueue(
                        platform="telegram",
                        user_id=str(arg),
                        chat_id="c",
                        params=JobParams(prompt="p"),
                        input_path="/i.png",
                    )
                    waiting.append((job.id, str(arg), job.queued_at))
                elif op == "claim":
                    order = expected_order(waiting, served)
                    job = await store.claim("w")
                    if not order:
                        assert job is None
                        continue
                    assert job is not None and job.id == order[0], (order, job)
                    # the DESIGN rule itself: no other waiting job has a lower rank
                    ranks = rank_of(waiting)
                    assert ranks[job.id] == min(ranks.values())
                    served[job.user_id] = clock()
                    waiting = [w for w in waiting if w[0] != job.id]
                    running.append(job.id)
                elif op == "finish" and running:
                    await store.complete(running.pop(0), "w", result_path="/v")
                elif op == "release" and running:
                    # back in its place in time; its owner still counts as served
                    job = await store.release(running.pop(0), "w")
                    waiting.append((job.id, job.user_id, job.queued_at))
                elif op == "cancel" and waiting:
                    victim = waiting[int(arg) % len(waiting)]  # type: ignore[call-overload]
                    await store.cancel(victim[0])
                    waiting.remove(victim)
                # positions shown to users agree with the claim order
                positions = await store.positions()
                shown = sorted(positions, key=lambda j: positions[j].position)
                assert shown == expected_order(waiting, served)
                assert [positions[j].position for j in shown] == list(range(1, len(shown) + 1))
                # one job's position (what a new job's message shows) agrees with all
                for job_id, where in positions.items():
                    assert await store.position(job_id) == where


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operation, min_size=1, max_size=40))
def test_claims_and_positions_obey_the_fairness_rule(ops) -> None:
    asyncio.run(run_scenario(ops))


async def test_one_heavy_user_does_not_starve_others(tmp_path) -> None:
    """ann queues 5 at once; bob and cid arrive later yet run second and third,
    even with one worker that finishes each job before it claims the next."""
    async with await JobStore.open(
        tmp_path / "db", QueueLimits(max_waiting_per_user=9), clock=ManualClock()
    ) as store:
        for user in ["ann"] * 5 + ["bob", "cid"]:
            store.clock.advance(1)
            await store.enqueue(
                platform="telegram",
                user_id=user,
                chat_id="c",
                params=JobParams(prompt="p"),
                input_path="/i.png",
            )
        shown = await store.positions()
        ran = []
        while (job := await store.claim("w")) is not None:
            store.clock.advance(1)
            ran.append(job)
            await store.complete(job.id, "w", result_path="/v")
        assert [j.user_id for j in ran] == ["ann", "bob", "cid", "ann", "ann", "ann", "ann"]
        # the positions shown before any ran were the order they ran in
        assert [shown[j.id].position for j in ran] == [1, 2, 3, 4, 5, 6, 7]


async def test_a_cancelled_head_hands_its_owners_served_time_to_the_next_job(tmp_path) -> None:
    """ann was served before; when her waiting head is cancelled, her next job
    still counts her as served, so cid (never served, arrived later) goes first."""
    async with await JobStore.open(
        tmp_path / "db", QueueLimits(max_waiting_per_user=9), clock=ManualClock()
    ) as store:

        async def add(user: str) -> int:
            store.clock.advance(1)
            job = await store.enqueue(
                platform="telegram",
                user_id=user,
                chat_id="c",
                params=JobParams(prompt="p"),
                input_path="/i.png",
            )
            return job.id

        for user in ["ann", "ann", "bob", "bob"]:
            await add(user)
        for _ in range(2):  # ann, then bob, are served
            store.clock.advance(1)
            await store.claim("w")
        ann_second = (await store.jobs_of("telegram", "ann", limit=9))[0].id
        await add("ann")
        await add("cid")
        await store.cancel(ann_second)
        ran = []
        while (job := await store.claim("w")) is not None:
            store.clock.advance(1)
            ran.append(job.user_id)
        assert ran == ["cid", "ann", "bob"]
