"""While the worker downloads or loads the model, no job can start: a queued job's
message says so, with the download's progress, instead of an estimate.

- the worker writes its state to the store: the loader's download report (the seam
  that `framepack.models.download` feeds from the Hub cache) becomes "downloading
  NN %", then loading, ready, rendering with seconds per step, stopped;
- the tracker re-renders every queued job when that changes, on Telegram (the fake
  Bot API) and in Discord's embeds (the same `render`);
- `download_sources` reports the bytes as files grow in the Hub's cache folder.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from bot.discord.render import discord_message
from bot.progress import render
from bot.telegram.render import caption
from framepack.models import download
from framepack.models.download import download_sources
from framepack.worker.engines import EngineSlot
from framepack.worker.loop import Worker
from storage.records import JobStatus, ModelActivity, QueuePosition, WorkerState
from storage.store import JobStore
from tests.engine_fixtures import tiny_engine
from tests.fakes.telegram_api import FakeTelegram
from tests.telegram_harness import USER, job_messages, make_settings, png, running_bot
from tests.test_discord_render import job as discord_job
from tests.worker_fixtures import enqueue, open_store, settings_of, wait_until, write_config

pytestmark = pytest.mark.filterwarnings("ignore:.*retry_after.*:DeprecationWarning")

DOWNLOADING = ModelActivity(WorkerState.DOWNLOADING, 40)
POSITION = QueuePosition(12, 1, 0, 0, 600.0, 100.0)


def test_a_queued_view_names_the_download_instead_of_an_estimate(tmp_path: Path) -> None:
    job = discord_job(tmp_path)
    plain = render(job, position=POSITION)
    assert plain.headline == "⏳ Queued · position 1 · starts in about 10 min"
    view = render(job, position=POSITION, model=DOWNLOADING)
    assert view.headline == "⏳ Queued · position 1 · the worker is downloading the model (40 %)"
    loading = render(job, position=POSITION, model=ModelActivity(WorkerState.LOADING))
    assert loading.headline.endswith("· the worker is loading the model")
    unknown = render(job, position=POSITION, model=ModelActivity(WorkerState.DOWNLOADING))
    assert unknown.headline.endswith("the worker is downloading the model")
    # both platforms lay out the same view
    assert caption(view, job.id).startswith(view.headline)
    assert discord_message(job, view).embed["title"] == view.headline


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as tg:
        yield tg


async def test_a_queued_telegram_message_follows_the_download_then_gets_its_estimate(
    tmp_path: Path, fake: FakeTelegram
) -> None:
    settings = make_settings(tmp_path, fake)
    async with running_bot(settings, fake), await JobStore.open(settings.database_path) as worker:
        fake.user_sends_photo(user_id=USER, image=png(), caption="/animate a cat --seconds 2")
        (message,) = await fake.wait_for(lambda: job_messages(fake, USER))
        assert message.text.startswith("⏳ Queued · position 1")
        await worker.set_worker("w1", WorkerState.LOADING)
        await fake.wait_for(lambda: "loading the model" in message.text, 10)
        for done in (12, 57):
            await worker.set_worker(
                "w1", WorkerState.DOWNLOADING, {"download_done": done, "download_total": 100}
            )
            await fake.wait_for(
                lambda done=done: f"downloading the model ({done} %)" in message.text, 10
            )
        await worker.set_worker("w1", WorkerState.READY)
        await fake.wait_for(lambda: "the model" not in message.text.split("\n")[0], 10)
    heads = [state.text.split("\n")[0] for state in message.history]
    assert "⏳ Queued · position 1 · the worker is downloading the model (12 %)" in heads
    assert "⏳ Queued · position 1 · the worker is loading the model" in heads


async def test_the_worker_writes_its_states_fed_by_the_loaders_download_report(
    tmp_path: Path,
) -> None:
    settings = settings_of(write_config(tmp_path))
    store = await open_store(settings)
    bot = await open_store(settings)  # the bot's own connection reads what the worker wrote
    gates = [threading.Event() for _ in range(3)]
    holder: dict[str, Worker] = {}

    def load(preset: str, memory: str) -> object:
        """What the real loader does through the seam, one stage per gate."""
        report = holder["worker"].status.downloading
        report(0, 1000)
        gates[0].wait(30)
        report(400, 1000)
        gates[1].wait(30)
        report(1000, 1000)  # all there: loading begins
        gates[2].wait(30)
        return tiny_engine()

    worker = Worker(
        store,
        settings,
        EngineSlot(load, preset="tiny", memory="auto"),
        worker_id="w-seam",
        burst=True,
    )
    holder["worker"] = worker
    await enqueue(store, settings, "ann", seconds=1.0, steps=3)
    task = asyncio.create_task(worker.run())

    async def activity_is(expected: ModelActivity) -> bool:
        return await bot.model_activity() == expected

    try:
        await wait_until(lambda: activity_is(ModelActivity(WorkerState.DOWNLOADING, 0)), what="0 %")
        gates[0].set()
        await wait_until(lambda: activity_is(DOWNLOADING), what="40 %")
        gates[1].set()
        await wait_until(lambda: activity_is(ModelActivity(WorkerState.LOADING)), what="loading")
        gates[2].set()
        await asyncio.wait_for(task, 120)
    finally:
        for gate in gates:
            gate.set()
    (record,) = await bot.workers()
    assert record.state is WorkerState.STOPPED  # burst: the queue ran dry
    assert record.detail["device"] == "cpu" and record.detail["memory_mode"] == "high"
    assert record.detail["step_seconds"] > 0  # measured while it rendered
    assert "download_done" not in record.detail
    (job,) = await bot.jobs_of("telegram", "ann")
    assert job.status is JobStatus.DONE
    await store.close()
    await bot.close()


async def test_download_sources_reports_the_bytes_growing_in_the_hub_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "hub"
    blobs = cache / "models--owner--weights" / "blobs"
    files = {"transformer/a.safetensors": 3000, "transformer/b.safetensors": 1000}
    calls: list[tuple[str, str | None, bool]] = []

    def snapshot_download(
        repo: str, *, allow_patterns: str | None, cache_dir: str, dry_run: bool = False
    ) -> object:
        calls.append((repo, allow_patterns, dry_run))
        if dry_run:
            return [
                SimpleNamespace(filename=name, file_size=size, will_download=True)
                for name, size in files.items()
            ]
        blobs.mkdir(parents=True, exist_ok=True)
        for index, size in enumerate(files.values()):
            part = blobs / f"{index}.incomplete"
            for chunk in range(4):  # a file grows while the watcher looks
                with part.open("ab") as out:
                    out.write(b"x" * (size // 4))
                threading.Event().wait(0.03 if chunk < 3 else 0.0)
            part.rename(blobs / str(index))
        return str(cache)

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    reports: list[tuple[int, int]] = []
    sources = [
        SimpleNamespace(location="owner/weights", subfolder="transformer"),
        SimpleNamespace(location=str(tmp_path), subfolder=None),  # a local folder: skipped
    ]
    download_sources(
        sources, cache_dir=str(cache), report=lambda d, t: reports.append((d, t)), poll=0.01
    )
    assert calls == [
        ("owner/weights", "transformer/*", True),
        ("owner/weights", "transformer/*", False),
    ]
    assert reports[0] == (0, 4000) and reports[-1] == (4000, 4000)
    done = [d for d, _ in reports]
    assert done == sorted(done) and len(set(done)) > 3  # it moved in steps, never back

    # everything cached: nothing to report; the Hub unreachable: loading will say why
    reports.clear()
    files = {}
    download_sources(sources[:1], cache_dir=str(cache), report=lambda *a: reports.append(a))

    def offline(*args: object, **kwargs: object) -> object:
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    download_sources(sources[:1], cache_dir=str(cache), report=lambda *a: reports.append(a))
    assert reports == []
    assert download.folder_bytes({blobs}) == 4000


async def test_a_worker_waiting_for_room_on_the_disk_says_so(tmp_path: Path) -> None:
    settings = settings_of(write_config(tmp_path))
    store = await open_store(settings)
    bot = await open_store(settings)
    slot = EngineSlot(lambda preset, memory: tiny_engine(), preset="tiny", memory="auto")
    worker = Worker(store, settings, slot, worker_id="w-room")
    room = threading.Event()
    worker._has_room = room.is_set  # type: ignore[method-assign]  # a disk that is full
    task = asyncio.create_task(worker.run())

    async def disk_full_is(value: bool) -> bool:
        records = await bot.workers()
        return bool(records) and records[0].detail.get("disk_full") is value

    try:
        await wait_until(lambda: disk_full_is(True), what="the full disk in the store")
        room.set()
        await wait_until(lambda: disk_full_is(False), what="room again")
        assert (await bot.workers())[0].state is WorkerState.READY
    finally:
        worker.stop()
        await asyncio.wait_for(task, 60)
        await store.close()
        await bot.close()
