"""Progress views and the tracker that keeps job messages up to date.

The notifier here records what a platform would be asked to show; the store,
the events and the tracker are the real ones.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import pytest

from bot.progress import JobProgress, JobView, progress_bar, render
from bot.throttle import RateLimiter
from bot.tracker import JobTracker
from storage.records import EventKind, Job, JobParams, JobStatus
from storage.store import JobStore
from tests.conftest import add_job


class RecordingNotifier:
    platform = "telegram"

    def __init__(self, edit_interval: float = 0.3, fail_deliveries: int = 0) -> None:
        self.edit_interval = edit_interval
        self.shown: list[tuple[int, JobView]] = []
        self.shown_at: list[float] = []
        self.delivered: list[tuple[int, JobView]] = []
        self.fail_deliveries = fail_deliveries
        self.changed = asyncio.Event()
        self.admin_notices: list[str] = []

    async def show(self, job: Job, view: JobView) -> None:
        self.shown.append((job.id, view))
        self.shown_at.append(time.monotonic())
        self.changed.set()

    async def notify_admins(self, text: str) -> None:
        self.admin_notices.append(text)

    async def deliver(self, job: Job, view: JobView) -> None:
        if self.fail_deliveries:
            self.fail_deliveries -= 1
            raise ConnectionError("platform down")
        self.delivered.append((job.id, view))
        self.changed.set()


def test_caption_keeps_the_facts_and_cuts_the_prompt() -> None:
    job = Job(
        id=7,
        platform="telegram",
        user_id="1",
        user_name="",
        chat_id="1",
        params=JobParams(prompt="a very long prompt " * 300, seed=1234),
        input_path="/in.png",
        end_image_path=None,
        status=JobStatus.QUEUED,
        attempts=0,
        worker_id=None,
        queued_at=0,
        started_at=None,
        heartbeat_at=None,
        finished_at=None,
        cancel_requested=False,
        upload_limit=None,
        result_path=None,
        delivery_path=None,
        error=None,
        delivered_at=None,
    )
    view = render(job, tiny=True)
    text = view.text(1024)
    assert len(text) <= 1024
    assert "seed 1234" in text and "Queued" in text and "random noise" in text
    assert "…" in text and text.count("a very long prompt") < 300


def test_progress_fraction_and_bar() -> None:
    progress = JobProgress(sections=4, steps=10, section=1, step=5, sections_done=1)
    assert progress.fraction == pytest.approx(15 / 40)
    assert progress_bar(0.5, 10) == "▰▰▰▰▰▱▱▱▱▱"


async def test_rate_limiter_spaces_calls_and_honours_retry_after() -> None:
    now = [0.0]
    limiter = RateLimiter([(1, 1.0), (3, 10.0)], clock=lambda: now[0])
    assert limiter.delay("c") == 0
    async with limiter.call("c"):
        assert limiter.delay("c") is None  # not before this call is answered
        now[0] = 0.5  # answered after half a second: the platform has it now
    assert limiter.delay("c") == pytest.approx(1.0)
    now[0] = 1.5
    async with limiter.call("c"):
        pass
    now[0] = 2.5
    async with limiter.call("c"):
        pass
    now[0] = 3.0
    assert limiter.delay("c") == pytest.approx(7.5)  # 3 in 10 s used, the first at 0.5
    assert limiter.delay("other") == 0
    limiter.penalize("other", 5)
    assert limiter.delay("other") == pytest.approx(5.0)


async def test_urgent_calls_go_first_and_each_kind_in_turn() -> None:
    limiter = RateLimiter([(1, 0.05)])
    order: list[str] = []

    async def one(name: str, urgent: bool) -> None:
        async with limiter.call("chat", urgent=urgent):
            order.append(name)

    async with limiter.call("chat"):  # a call in flight: the others queue behind it
        tasks = [
            asyncio.create_task(one(name, urgent))
            for name, urgent in (("edit 1", False), ("video A", True), ("edit 2", False),
                                 ("video B", True))
        ]  # fmt: skip
        await asyncio.sleep(0.01)
    await asyncio.gather(*tasks)
    assert order == ["video A", "video B", "edit 1", "edit 2"]


async def test_videos_that_say_when_they_finished_go_in_that_order() -> None:
    # B's sender asked first, but A's job finished first (its sender was busy with an
    # edit then): A's video goes first.
    limiter = RateLimiter([(1, 0.05)])
    order: list[str] = []

    async def one(name: str, finished_at: float) -> None:
        async with limiter.call("chat", urgent=finished_at):
            order.append(name)

    async with limiter.call("chat"):
        b = asyncio.create_task(one("video B", 1002.0))
        await asyncio.sleep(0.01)
        a = asyncio.create_task(one("video A", 1001.0))
        await asyncio.sleep(0.01)
    await asyncio.gather(a, b)
    assert order == ["video A", "video B"]


async def running_tracker(store: JobStore, notifier: RecordingNotifier):
    stop = asyncio.Event()
    tracker = JobTracker(store, {"telegram": notifier}, poll_interval=0.05)
    task = asyncio.create_task(tracker.run(stop))
    return tracker, stop, task


async def wait_until(predicate, timeout: float = 5.0) -> None:
    async def loop() -> None:
        while not predicate():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(loop(), timeout)


async def test_edits_are_throttled_latest_view_wins_final_once(tmp_path: Path) -> None:
    async with await JobStore.open(tmp_path / "db") as store:
        notifier = RecordingNotifier(edit_interval=0.4)
        job_id = await add_job(store, "ann")
        tracker, stop, task = await running_tracker(store, notifier)
        await wait_until(lambda: notifier.shown)
        job = await store.claim("w")
        await store.add_event(job.id, EventKind.STARTED, {"sections": 2, "steps": 10})
        for step in range(1, 11):  # ten steps in a burst
            await store.add_event(
                job.id, EventKind.STEP, {"section": 0, "sections": 2, "step": step, "steps": 10}
            )
        await asyncio.sleep(0.2)
        burst = len(notifier.shown)
        await wait_until(lambda: "step 10/10" in notifier.shown[-1][1].text())
        assert len(notifier.shown) <= burst + 1  # the burst collapsed into its latest view
        # nothing changes: no further edits
        count = len(notifier.shown)
        await tracker.settled()
        assert len(notifier.shown) == count
        await store.complete(
            job.id, "w", result_path="/v/final.mp4", metadata={"render_seconds": 12}
        )
        await wait_until(lambda: notifier.delivered)
        await asyncio.sleep(0.2)
        stop.set()
        await task
        assert len(notifier.delivered) == 1
        assert notifier.delivered[0][1].final and notifier.delivered[0][1].media.path == (
            "/v/final.mp4"
        )
        assert "rendered in 12 s" in notifier.delivered[0][1].text()
        assert (await store.get(job_id)).delivered_at is not None
        # every edit of the job's message respected the interval
        shown = zip(notifier.shown, notifier.shown_at, strict=True)
        times = [at for (shown_id, _), at in shown if shown_id == job_id]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert len(times) >= 2 and all(gap >= 0.4 - 0.01 for gap in gaps), gaps


class HeldEdits(RecordingNotifier):
    """A chat at its pace: every progress edit waits for its turn in a real limiter whose
    window is full (an edit that was let go would run to its end)."""

    def __init__(self) -> None:
        super().__init__(edit_interval=0.0)
        self.limiter = RateLimiter([(1, 3600.0)])
        self.limiter.penalize("chat", 3600.0)  # no turn comes in this test
        self.waiting = asyncio.Event()
        self.dropped = 0

    async def show(self, job: Job, view: JobView) -> None:
        self.waiting.set()
        try:
            async with self.limiter.call("chat"):
                await super().show(job, view)
        except asyncio.CancelledError:
            self.dropped += 1
            raise


async def test_a_finished_job_does_not_wait_behind_its_own_progress_edit(tmp_path: Path) -> None:
    async with await JobStore.open(tmp_path / "db") as store:
        notifier = HeldEdits()
        await add_job(store, "ann")
        _, stop, task = await running_tracker(store, notifier)
        await wait_until(notifier.waiting.is_set)  # the queued view waits for its turn
        job = await store.claim("w")
        await store.complete(job.id, "w", result_path="/v/final.mp4", metadata={})
        # the video goes out though the edit's turn never comes: the edit is dropped
        await wait_until(lambda: notifier.delivered)
        assert notifier.dropped == 1 and notifier.shown == []
        stop.set()
        await task


async def test_delivery_is_retried_and_happens_once_across_restarts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("bot.tracker.RETRY_DELIVERY", 0.1)
    path = tmp_path / "db"
    async with await JobStore.open(path) as store:
        job_id = await add_job(store, "bob")
        job = await store.claim("w")
        await store.complete(job.id, "w", result_path="/v/x.mp4")
        # the bot was down while it finished; first start, platform fails once
        notifier = RecordingNotifier(fail_deliveries=1)
        _, stop, task = await running_tracker(store, notifier)
        await wait_until(lambda: notifier.delivered)
        stop.set()
        await task
        assert [d[0] for d in notifier.delivered] == [job_id]
    async with await JobStore.open(path) as store:
        again = RecordingNotifier()
        tracker, stop, task = await running_tracker(store, again)
        await tracker.settled()  # the start-up pass has run and sent what it had to
        stop.set()
        await task
        assert again.delivered == []  # delivered exactly once


async def test_queued_positions_move_when_the_queue_moves(tmp_path: Path) -> None:
    async with await JobStore.open(tmp_path / "db") as store:
        notifier = RecordingNotifier(edit_interval=0.05)
        first = await add_job(store, "a")
        second = await add_job(store, "b")
        _, stop, task = await running_tracker(store, notifier)
        await wait_until(
            lambda: any(j == second and "position 2" in v.headline for j, v in notifier.shown)
        )
        await store.cancel(first)
        await wait_until(
            lambda: any(j == second and "position 1" in v.headline for j, v in notifier.shown)
        )
        await wait_until(lambda: any(j == first for j, _ in notifier.delivered))
        stop.set()
        await task


async def test_the_limiter_forgets_idle_chats(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bot that met a million chats keeps the recent ones only, not one line each."""
    monkeypatch.setattr("bot.throttle.IDLE_KEYS", 50)
    now = [0.0]
    limiter = RateLimiter([(1, 1.0)], clock=lambda: now[0])
    for chat in range(500):
        async with limiter.call(chat):
            pass
        now[0] += 0.1  # each chat's window is over 1 s later
    assert len(limiter._lines) <= 50 + 11  # the last second's chats, and the new one
    assert limiter.delay(499) > 0  # a chat still in its window is not forgotten
