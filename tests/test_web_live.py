"""The page's live parts: what the worker panel says in each state, and the event
stream that pushes a change of the queue to an open page (measured: the time from
a job queued by another process's connection to its row in the stream)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp

from bot.web.live import Snapshot
from bot.web.views import worker_cards
from storage.records import (
    JobParams,
    ModelActivity,
    WorkerRecord,
    WorkerRestart,
    WorkerState,
)
from storage.store import JobStore
from tests.web_harness import PASSWORD, WebClient, png, serving, web_settings

NOW = 1_700_000_000.0


def worker(state: WorkerState, age: float = 1.0, **detail: object) -> WorkerRecord:
    return WorkerRecord("w1", state, dict(detail), NOW - 600, NOW - age)


def labels(*workers: WorkerRecord, **snapshot: object) -> list[tuple[str, str]]:
    cards = worker_cards(Snapshot(taken_at=NOW, workers=workers, **snapshot), 60.0, 5.0)
    return [(card.state, card.label) for card in cards]


def test_the_worker_panel_says_what_the_worker_does() -> None:
    downloading = worker(WorkerState.DOWNLOADING, download_done=4_000_000_000,
                         download_total=10_000_000_000)  # fmt: skip
    activity = ModelActivity(WorkerState.DOWNLOADING, 40)
    assert labels(downloading, model=activity) == [
        ("downloading", "downloading the model (40 %): 4000 MB of 10000 MB")
    ]
    assert labels(worker(WorkerState.LOADING)) == [("loading", "loading the model")]
    assert labels(worker(WorkerState.READY)) == [("ready", "ready")]
    assert labels(worker(WorkerState.READY), paused=True) == [
        ("ready", "paused: no job starts until the queue is resumed")
    ]
    assert labels(worker(WorkerState.RENDERING, job_id=7)) == [("rendering", "rendering job #7")]
    assert labels(worker(WorkerState.READY, disk_full=True)) == [
        ("ready", "waiting for room: the data dir's disk has less than [storage] min_free_mb free")
    ]
    assert labels(worker(WorkerState.READY, age=61)) == [
        ("gone", "not responding: last heard 1 min 01 s ago")
    ]
    failed = worker(WorkerState.FAILED, error="cannot load the model: no files")
    crash = WorkerRestart(exit_code=1, uptime=7.0, delay=4.0, at=NOW - 1)
    assert labels(failed, restart=crash) == [
        ("restarting", "restarting after a crash (exit code 1), next start in 3 s"),
        ("gone", "cannot load the model: no files"),
    ]
    # once the next worker reports, the restart is history
    again = WorkerRecord("w2", WorkerState.LOADING, {}, NOW - 0.5, NOW - 0.5)
    assert labels(again, failed, restart=crash)[0] == ("loading", "loading the model")
    facts = worker_cards(
        Snapshot(
            taken_at=NOW,
            workers=(
                worker(
                    WorkerState.RENDERING,
                    job_id=3,
                    device="cuda:0",
                    memory_mode="low",
                    vram_used=7 << 30,
                    vram_total=8 << 30,
                    vram_reserved=6 << 30,
                    step_seconds=2.345,
                ),
            ),
        ),
        60.0,
        5.0,
    )[0].facts
    assert facts == (
        "device cuda:0",
        "memory mode low",
        "VRAM 7.0 of 8.0 GiB in use (6.0 GiB by this worker)",
        "2.35 s per step",
    )


async def test_a_job_queued_elsewhere_reaches_an_open_page_by_its_event_stream(
    tmp_path: Path,
) -> None:
    settings = web_settings(tmp_path)
    async with serving(settings) as page, WebClient(page.url) as client:
        await client.login(PASSWORD)
        other = await JobStore.open(settings.database_path)  # as a chat command's process
        picture = page.data.new_input_path(".png")
        picture.parent.mkdir(parents=True, exist_ok=True)
        picture.write_bytes(png())
        latencies = []
        async with client.http.get(client.url + "/live?view=queue") as stream:
            assert stream.headers["Content-Type"].startswith("text/event-stream")
            first = await read_event(stream)
            assert first[0] == "regions" and "No job is waiting" in first[1]["r-queue"]
            for n in range(5):
                queued_at = time.monotonic()
                job = await other.enqueue(
                    platform="discord", user_id=f"u{n}", user_name=f"user {n}", chat_id="c",
                    params=JobParams(prompt=f"wave {n}"), input_path=str(picture),
                )  # fmt: skip
                while True:
                    _, regions = await asyncio.wait_for(read_event(stream), 10)
                    if f'data-job="{job.id}"' in regions.get("r-queue", ""):
                        break
                latencies.append(time.monotonic() - queued_at)
                assert "r-workers" not in regions  # an unchanged region is not sent again
        await other.close()
    print(f"event stream latency: {', '.join(f'{s * 1000:.0f} ms' for s in latencies)}")
    # the feed reads new events every 0.25 s
    assert max(latencies) < 1.5, latencies


async def read_event(stream: aiohttp.ClientResponse) -> tuple[str, dict[str, str]]:
    """The next event (comments skipped): its name and its JSON data."""
    kind, data = "", ""
    while True:
        line = (await stream.content.readline()).decode().rstrip("\n")
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            data += line[6:]
        elif line == "" and kind:
            return kind, json.loads(data)
