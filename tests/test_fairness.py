"""Fairness as a property: random users, arrival orders, cancels and completions.

The rule of DESIGN.md: order waiting jobs by (rank of the job among its owner's
waiting jobs, time queued). Every claim must take the first job of that order,
and the positions shown to users must be that same order.
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
)


def expected_order(waiting: list[tuple[int, str, float]]) -> list[int]:
    """The rule, written independently of the store: rank among owner's waiting, then time."""
    rank: dict[int, int] = {}
    seen: dict[str, int] = {}
    for job_id, user, _t in sorted(waiting, key=lambda w: (w[2], w[0])):
        seen[user] = seen.get(user, 0) + 1
        rank[job_id] = seen[user]
    queued = {job_id: t for job_id, _u, t in waiting}
    return sorted(rank, key=lambda j: (rank[j], queued[j], j))


async def run_scenario(ops: list[tuple[str, object]]) -> None:
    clock = ManualClock()
    with tempfile.TemporaryDirectory() as tmp:
        limits = QueueLimits(
            max_waiting_per_user=1000, max_waiting=100_000, max_video_seconds_per_day=0
        )
        async with await JobStore.open(Path(tmp) / "db", limits, clock=clock) as store:
            waiting: list[tuple[int, str, float]] = []  # (id, user, queued_at): our model
            running: list[int] = []
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
                    order = expected_order(waiting)
                    job = await store.claim("w")
                    if not order:
                        assert job is None
                        continue
                    assert job is not None and job.id == order[0], (order, job)
                    waiting = [w for w in waiting if w[0] != job.id]
                    running.append(job.id)
                elif op == "finish" and running:
                    await store.complete(running.pop(0), "w", result_path="/v")
                elif op == "cancel" and waiting:
                    victim = waiting[int(arg) % len(waiting)]  # type: ignore[call-overload]
                    await store.cancel(victim[0])
                    waiting.remove(victim)
                # positions shown to users agree with the claim order
                positions = await store.positions()
                shown = sorted(positions, key=lambda j: positions[j].position)
                assert shown == expected_order(waiting)
                assert [positions[j].position for j in shown] == list(range(1, len(shown) + 1))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operation, min_size=1, max_size=40))
def test_claims_and_positions_obey_the_fairness_rule(ops) -> None:
    asyncio.run(run_scenario(ops))


def test_one_heavy_user_does_not_starve_others() -> None:
    """ann queues 5 at once; bob and cid arrive later yet run second and third."""
    ops = [("enqueue", "ann")] * 5 + [("enqueue", "bob"), ("enqueue", "cid")]
    ops += [("claim", "")] * 7
    asyncio.run(run_scenario(ops))
