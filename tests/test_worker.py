"""The worker in this process, on the tiny model: what it writes for the bot
(events, previews, videos, timings), cancel within one step, failures a user can
read, and the out-of-memory fallback.

Only the out-of-memory tests use a stand-in: a real tiny engine that raises
CUDA's `torch.OutOfMemoryError` in the memory modes it is told to, because a
CPU cannot run out of GPU memory. Everything else is the real engine, SQLite
file and ffmpeg.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from framepack.engine.engine import FramePackEngine
from framepack.engine.events import EngineEvent, Section, Step
from framepack.engine.params import GenerationParams
from framepack.video.encode import encode_mp4
from framepack.video.probe import probe, read_frames
from framepack.worker.engines import EngineSlot, generation_params
from framepack.worker.events import StepThrottle
from framepack.worker.loop import Worker, run_worker
from framepack.worker.render import EngineStalled
from storage.config import Settings
from storage.files import DataDir
from storage.positions import DEFAULT_STEP_SECONDS
from storage.records import EventKind, Job, JobParams, JobStatus
from storage.store import JobStore
from tests.engine_fixtures import tiny_components, tiny_engine
from tests.worker_fixtures import (
    enqueue,
    events_of,
    kinds,
    open_store,
    settings_of,
    wait_until,
    write_config,
)


def tiny_slot() -> EngineSlot:
    """The session's tiny engine (built once), as the worker's only engine."""
    return EngineSlot(lambda preset, memory: tiny_engine(), preset="tiny", memory="auto")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return settings_of(write_config(tmp_path))


@pytest.fixture
async def bot_store(settings: Settings) -> Any:
    """The bot's own connection to the same database file."""
    store = await open_store(settings)
    yield store
    await store.close()


async def run_burst(settings: Settings, engines: EngineSlot | None = None) -> Worker:
    store = await open_store(settings)
    worker = Worker(store, settings, engines or tiny_slot(), worker_id="w-test", burst=True)
    try:
        await asyncio.wait_for(worker.run(), 120)
    finally:
        await store.close()
    return worker


# ---- pieces ---------------------------------------------------------------------


def test_step_throttle_keeps_first_and_last_step_of_a_section() -> None:
    now = [0.0]
    throttle = StepThrottle(1.0, clock=lambda: now[0])
    allowed = []
    for step in range(1, 11):  # ten steps 0.3 s apart
        if throttle.allow(step, 10):
            allowed.append(step)
        now[0] += 0.3
    assert allowed == [1, 5, 9, 10]  # first, then at most one a second, and the last


def job_record(**params: Any) -> Job:
    """A running job's record with these `JobParams` (prompt "a cat")."""
    return Job(
        id=1, platform="telegram", user_id="u", user_name="", chat_id="c",
        params=JobParams(prompt="a cat", **params), input_path="/in.png",
        end_image_path=None, status=JobStatus.RUNNING, attempts=1, worker_id="w",
        queued_at=0, started_at=0, heartbeat_at=0, finished_at=None,
        cancel_requested=False, upload_limit=None, result_path=None, delivery_path=None,
        error=None, delivered_at=None,
    )  # fmt: skip


def test_job_options_map_to_the_engine(settings: Settings) -> None:
    job = job_record
    f1 = generation_params(job(model="f1", seconds=3, seed=5, steps=7, guidance=9), settings)
    assert (f1.sampler, f1.seconds, f1.seed, f1.steps, f1.guidance) == ("forward", 3, 5, 7, 9)
    assert (f1.scheduler, f1.resolution) == ("unipc", 64)  # the host's, from the config
    assert generation_params(job(model="framepack"), settings).sampler == "inverted"
    with pytest.raises(ValueError, match="unknown model 'sd'"):
        generation_params(job(model="sd"), settings)


def test_real_cfg_defaults_come_from_the_config_unless_the_job_sets_them(
    settings: Settings,
) -> None:
    host = dataclasses.replace(
        settings,
        generation=dataclasses.replace(settings.generation, cfg=4.0, negative_prompt="blurry"),
    )
    demo = generation_params(job_record(), settings)
    assert (demo.cfg, demo.negative_prompt) == (1.0, "")  # the demo's, by default
    hosts = generation_params(job_record(), host)
    assert (hosts.cfg, hosts.negative_prompt) == (4.0, "blurry")
    own = generation_params(job_record(cfg=1.0, negative_prompt=""), host)
    assert (own.cfg, own.negative_prompt) == (1.0, "")


def test_the_step_cache_comes_from_the_job_else_the_config(settings: Settings) -> None:
    default = generation_params(job_record(), settings)
    assert (default.cache, default.cache_threshold) == ("magcache", 0.1)
    host = dataclasses.replace(
        settings,
        generation=dataclasses.replace(
            settings.generation, cache="teacache", teacache_threshold=0.2
        ),
    )
    hosts = generation_params(job_record(), host)
    assert (hosts.cache, hosts.cache_threshold) == ("teacache", 0.2)
    own = generation_params(job_record(cache="off"), host)
    assert (own.cache, own.cache_threshold) == ("off", None)
    kept = generation_params(job_record(cache="magcache", cache_threshold=0.05), host)
    assert (kept.cache, kept.cache_threshold) == ("magcache", 0.05)


def test_real_presets_load_the_model_a_job_asks_for() -> None:
    loaded: list[tuple[str, str]] = []

    def factory(preset: str, memory: str) -> FramePackEngine:
        loaded.append((preset, memory))
        return FramePackEngine(dataclasses.replace(tiny_components(), preset=preset))

    slot = EngineSlot(factory, preset="framepack", memory="auto")
    slot.get()
    assert slot.get(slot.preset_for("framepack")).components.preset == "framepack"
    assert slot.get(slot.preset_for("f1")).components.preset == "f1"
    slot.get(slot.preset_for("f1"))
    assert loaded == [("framepack", "auto"), ("f1", "auto")]  # one load each, one at a time

    tiny = EngineSlot(factory, preset="tiny", memory="auto")
    assert {tiny.preset_for("framepack"), tiny.preset_for("f1")} == {"tiny"}


# ---- a job, end to end in this process --------------------------------------------


async def test_a_job_leaves_events_previews_videos_and_a_timing(
    settings: Settings, bot_store: JobStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "framepack.worker")
    job_id = await enqueue(bot_store, settings, "alice", seconds=2.0, upload_limit=20_000)
    await run_burst(settings)

    job = await bot_store.get(job_id)
    assert job.status is JobStatus.DONE
    events = await events_of(bot_store, job_id)
    assert [e.kind for e in events if e.kind is not EventKind.STEP] == [
        EventKind.QUEUED, EventKind.STARTED, EventKind.SECTION, EventKind.SECTION, EventKind.DONE
    ]  # fmt: skip
    started = kinds(events, EventKind.STARTED)[0].data
    assert started == {"sections": 2, "steps": 2, "first_section": 0, "attempt": 1}
    steps = kinds(events, EventKind.STEP)
    assert [(e.data["section"], e.data["step"]) for e in steps] == [(0, 1), (0, 2), (1, 1), (1, 2)]
    for e in steps:
        assert e.data["sections"] == 2 and e.data["steps"] == 2
        assert Image.open(e.data["preview"]).size[0] > 0
    assert len({e.data["preview"] for e in steps}) == len(steps)  # a new file per event
    sections = kinds(events, EventKind.SECTION)
    for e in sections:
        assert probe(Path(e.data["video"])).frames == e.data["frames"]
    assert len({e.data["video"] for e in sections}) == 2

    done = kinds(events, EventKind.DONE)[0].data
    final = probe(Path(job.result_path or ""))
    assert final.frames == done["frames"] == sections[-1].data["frames"]
    assert (final.width, final.height) == (done["width"], done["height"])
    assert done["model"] == "framepack" and done["random_model"] is True
    assert done["render_seconds"] > 0 and done["seed"] == 1
    # the job named no cache: the host's default, in the done event and the MP4's metadata
    assert done["cache"] == final.metadata["cache"] == "magcache 0.1"
    assert Path(job.result_path or "").parent == DataDir(settings.storage.data_dir).videos_dir(
        job_id
    )
    upload = Path(job.delivery_path or "")
    assert done["delivery"] == str(upload) and upload != Path(job.result_path or "")
    assert upload.stat().st_size <= 20_000 and probe(upload).frames == final.frames

    # the job's pace now drives the estimates of the jobs after it
    step_seconds = await bot_store.step_seconds("framepack")
    assert 0 < step_seconds < done["render_seconds"] and step_seconds != DEFAULT_STEP_SECONDS
    assert await bot_store.step_seconds("framepack", "magcache") == step_seconds

    lines = [r.getMessage() for r in caplog.records if f"job {job_id} " in r.getMessage()]
    assert [line.split()[1] for line in lines] == ["→", "▶", "·", "·", "✓"]
    assert "section 2/2" in lines[3] and "done in" in lines[4]


async def test_a_video_within_the_upload_limit_is_delivered_as_it_is(
    settings: Settings, bot_store: JobStore
) -> None:
    job_id = await enqueue(bot_store, settings, "alice", upload_limit=50_000_000)
    no_limit = await enqueue(bot_store, settings, "bob")
    await run_burst(settings)
    job = await bot_store.get(job_id)
    assert job.delivery_path == job.result_path
    assert (await bot_store.get(no_limit)).delivery_path is None


async def test_step_events_are_rate_limited_and_old_previews_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("framepack.worker.events.KEEP_PREVIEWS", 2)
    settings = settings_of(write_config(tmp_path, worker={"step_event_interval": 100.0}))
    store = await open_store(settings)
    job_id = await enqueue(store, settings, "alice", seconds=2.0, steps=4)
    await run_burst(settings)
    steps = kinds(await events_of(store, job_id), EventKind.STEP)
    # 8 steps ran; with a long interval only each section's first and last are written
    assert [(e.data["section"], e.data["step"]) for e in steps] == [(0, 1), (0, 4), (1, 1), (1, 4)]
    previews = sorted(DataDir(settings.storage.data_dir).previews_dir(job_id).iterdir())
    assert [p.name for p in previews] == ["1-001-001.png", "1-001-004.png"]
    await store.close()


async def test_a_cancel_stops_the_job_within_one_step(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "framepack.worker")
    # every step writes its event here, so the events count the steps that ran
    settings = settings_of(write_config(tmp_path, worker={"step_event_interval": 0.0}))
    bot_store = await open_store(settings)
    job_id = await enqueue(bot_store, settings, "alice", seconds=2.0, steps=12)
    worker = asyncio.create_task(run_burst(settings))

    async def first_step() -> bool:
        return bool(kinds(await events_of(bot_store, job_id), EventKind.STEP))

    await wait_until(first_step, what="the first step event")
    await bot_store.cancel(job_id)
    asked_after = await bot_store.last_event_id()
    await asyncio.wait_for(worker, 60)

    job = await bot_store.get(job_id)
    assert job.status is JobStatus.CANCELLED
    events = await events_of(bot_store, job_id)
    later_steps = [e for e in kinds(events, EventKind.STEP) if e.id > asked_after]
    # a step's event is written while the next step computes, so the events
    # written after the cancel are at most the step done but not yet written
    # and the step in progress: no step starts after the worker read the cancel
    assert len(later_steps) <= 2, "more than the step in progress ran after the cancel"
    assert len(kinds(events, EventKind.STEP)) < 24  # it did not run to the end
    assert events[-1].kind is EventKind.CANCELLED
    assert any("⊘ job" in r.getMessage() and "cancelled" in r.getMessage() for r in caplog.records)
    await bot_store.close()


async def test_a_cancel_that_comes_after_the_last_step_ends_the_job_cancelled(
    settings: Settings, bot_store: JobStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Its owner was told "it stops": the video finished meanwhile is never delivered."""
    caplog.set_level(logging.INFO, "framepack.worker")
    job_id = await enqueue(bot_store, settings, "alice", seconds=1.0)
    loop = asyncio.get_running_loop()

    class CancelledWhileFinishing:
        """The tiny engine; its owner cancels when the last section is done (as the video
        is encoded and its copies made, when no step is left to stop at)."""

        def __init__(self) -> None:
            self.engine = tiny_engine()
            self.components = self.engine.components
            self.memory_mode = self.engine.memory_mode

        def generate(self, params: GenerationParams, image: Image.Image, **kw: Any) -> Any:
            for event in self.engine.generate(params, image, **kw):
                if isinstance(event, Section) and event.section == event.sections - 1:
                    asyncio.run_coroutine_threadsafe(bot_store.cancel(job_id), loop).result()
                yield event

    slot = EngineSlot(
        lambda preset, memory: CancelledWhileFinishing(), preset="tiny", memory="auto"
    )
    await run_burst(settings, slot)
    job = await bot_store.get(job_id)
    assert job.status is JobStatus.CANCELLED and job.result_path is None
    events = await events_of(bot_store, job_id)
    assert events[-1].kind is EventKind.CANCELLED and not kinds(events, EventKind.DONE)
    assert any("cancelled: its cancel came" in r.getMessage() for r in caplog.records)


# ---- failures --------------------------------------------------------------------


async def test_an_unreadable_picture_fails_with_a_reason_and_no_traceback(
    settings: Settings, bot_store: JobStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a picture")
    job_id = await enqueue(bot_store, settings, "alice", picture=str(broken))
    later = await enqueue(bot_store, settings, "bob")
    await run_burst(settings)
    job = await bot_store.get(job_id)
    assert job.status is JobStatus.FAILED
    assert job.error == "The picture could not be read. Please send it again."
    assert kinds(await events_of(bot_store, job_id), EventKind.FAILED)[0].data["reason"] == (
        job.error
    )
    assert not any(r.exc_info for r in caplog.records)  # an expected error: no traceback
    assert (await bot_store.get(later)).status is JobStatus.DONE  # the worker went on


async def test_settings_the_engine_refuses_fail_before_rendering(
    settings: Settings, bot_store: JobStore
) -> None:
    job_id = await enqueue(bot_store, settings, "alice", steps=0)
    await run_burst(settings)
    job = await bot_store.get(job_id)
    assert job.status is JobStatus.FAILED
    assert job.error == "These settings cannot be rendered: steps must be between 1 and 1000, not 0"
    assert not kinds(await events_of(bot_store, job_id), EventKind.STARTED)


async def test_an_unexpected_error_fails_the_job_and_logs_the_traceback(
    settings: Settings, bot_store: JobStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    job_id = await enqueue(bot_store, settings, "alice")
    work = DataDir(settings.storage.data_dir).work_dir(job_id)
    work.parent.mkdir(parents=True, exist_ok=True)
    work.write_text("a file where the job's folder should be")  # the engine cannot mkdir it
    await run_burst(settings)
    job = await bot_store.get(job_id)
    assert job.status is JobStatus.FAILED
    assert job.error == (
        "The renderer failed (FileExistsError). The host can find the details in the worker's log."
    )
    assert any(r.exc_info and r.exc_info[0] is FileExistsError for r in caplog.records)


# ---- out of GPU memory (the one stand-in) --------------------------------------------


class OutOfMemoryIn:
    """The tiny engine, but out of CUDA memory in `modes` at the first step of the
    second section (the first one is checkpointed, so a retry resumes after it).

    Stand-in for the out-of-memory path only: the memory mode is what the slot
    asked for (a CPU engine always runs "high"), and the error is raised where
    a real GPU raises it, inside the engine's iteration.
    """

    def __init__(self, memory: str, modes: set[str], built: list[str]) -> None:
        self.engine = tiny_engine()
        self.components = self.engine.components
        self.memory_mode = "high" if memory == "auto" else memory
        self.modes = modes
        built.append(self.memory_mode)

    def generate(
        self, params: GenerationParams, image: Image.Image, **kw: Any
    ) -> Iterator[EngineEvent]:
        events = self.engine.generate(params, image, **kw)
        if self.memory_mode not in self.modes:
            return events

        def running_out() -> Iterator[EngineEvent]:
            for event in events:
                if isinstance(event, Step) and event.section >= 1:
                    events.close()  # as an error raised inside the engine ends it
                    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
                yield event

        return running_out()


async def test_out_of_memory_retries_once_in_the_next_lower_mode_and_resumes(
    settings: Settings, bot_store: JobStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "framepack.worker")
    built: list[str] = []
    slot = EngineSlot(
        lambda preset, memory: OutOfMemoryIn(memory, {"high"}, built), preset="tiny", memory="auto"
    )
    job_id = await enqueue(bot_store, settings, "alice", seconds=2.0)
    await run_burst(settings, slot)

    job = await bot_store.get(job_id)
    assert job.status is JobStatus.DONE
    assert built == ["high", "offload"]
    started = [e.data for e in kinds(await events_of(bot_store, job_id), EventKind.STARTED)]
    # The retry resumed from the checkpoint (a section's event may come after the
    # next section's checkpoint: its video is written while that one samples).
    assert started[0]["first_section"] == 0 and started[1]["first_section"] >= 1
    assert any("retrying in memory mode offload" in r.getMessage() for r in caplog.records)
    done = kinds(await events_of(bot_store, job_id), EventKind.DONE)[0].data
    assert done["memory_mode"] == "offload"


async def test_out_of_memory_twice_fails_with_a_message_for_the_user(
    settings: Settings, bot_store: JobStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    built: list[str] = []
    slot = EngineSlot(
        lambda preset, memory: OutOfMemoryIn(memory, {"high", "offload", "low"}, built),
        preset="tiny",
        memory="high",
    )
    job_id = await enqueue(bot_store, settings, "alice", seconds=2.0)
    await run_burst(settings, slot)

    job = await bot_store.get(job_id)
    assert job.status is JobStatus.FAILED
    assert built == ["high", "offload"]  # retried once, not down every mode
    assert job.error is not None and job.error.startswith("The GPU ran out of memory")
    assert "Try a shorter video" in job.error
    assert not any(r.exc_info for r in caplog.records)


async def test_an_engine_that_stops_giving_events_leaves_the_job_to_go_stale(
    settings: Settings, bot_store: JobStore
) -> None:
    # A real engine, and a stall limit shorter than its first section: it looks hung.
    # (The config refuses under 60 s; the settings object is built here directly.)
    hasty = dataclasses.replace(
        settings, worker=dataclasses.replace(settings.worker, stall_seconds=0.05)
    )
    job_id = await enqueue(bot_store, settings, "alice", seconds=2.0)
    with pytest.raises(EngineStalled):
        await run_burst(hasty)
    job = await bot_store.get(job_id)
    assert job.status is JobStatus.RUNNING  # no store write could be trusted now
    await asyncio.sleep(3 * settings.worker.heartbeat_seconds)
    assert (await bot_store.get(job_id)).heartbeat_at == job.heartbeat_at  # nobody beats
    assert [j.id for j in await bot_store.requeue_stale(timeout=0)] == [job_id]

    async def gpu_thread_ended() -> bool:  # once the engine's section is over
        return not any(t.name.startswith("gpu") for t in threading.enumerate())

    await wait_until(gpu_thread_ended, what="the GPU thread to end")


async def test_a_model_that_cannot_load_stops_the_worker_with_a_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    config = write_config(
        tmp_path,
        model={"preset": "framepack"},
        extra=f'[model.sources]\ntransformer = "{tmp_path / "missing"}"\n',
    )
    assert await run_worker(settings_of(config), burst=True) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "cannot load the framepack model" in errors[0]
    assert "is not a folder" in errors[0] and "framepack-bot doctor" in errors[0]
    assert not any(r.exc_info for r in caplog.records)


# ---- continuing a video ------------------------------------------------------------


async def test_an_extension_delivers_the_whole_clip_from_the_source_job(
    settings: Settings, bot_store: JobStore
) -> None:
    source_id = await enqueue(bot_store, settings, "alice", seconds=1.0)
    await run_burst(settings)
    source = await bot_store.get(source_id)
    source_frames = read_frames(Path(source.result_path or ""))

    extension_id = await enqueue(
        bot_store, settings, "alice", seconds=2.0, picture=source.input_path, extend_of=source_id
    )
    await run_burst(settings)
    job = await bot_store.get(extension_id)
    assert job.status is JobStatus.DONE, job.error
    frames = read_frames(Path(job.result_path or ""))
    assert len(frames) == len(source_frames) + 2 * 36  # the whole clip: old part, then new
    first_part = frames[: len(source_frames)].astype(float)
    mse = np.mean((first_part - source_frames) ** 2)
    assert 10 * np.log10(255**2 / mse) >= 30  # the source's frames up to the codec
    done = kinds(await events_of(bot_store, extension_id), EventKind.DONE)[0].data
    assert done["frames"] == len(frames) and done["seconds"] == pytest.approx(len(frames) / 30)


async def test_a_video_sent_as_input_is_continued(settings: Settings, bot_store: JobStore) -> None:
    data = DataDir(settings.storage.data_dir)
    clip = np.random.default_rng(0).integers(0, 255, (20, 48, 64, 3), dtype=np.uint8)
    video = encode_mp4(clip, data.new_input_path(".mp4"), fps=30)
    job_id = await enqueue(bot_store, settings, "alice", seconds=1.0, picture=str(video))
    await run_burst(settings)
    job = await bot_store.get(job_id)
    assert job.status is JobStatus.DONE, job.error
    assert probe(Path(job.result_path or "")).frames == 20 + 36


async def test_an_extension_whose_source_files_are_gone_fails_with_the_reason(
    settings: Settings, bot_store: JobStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    job_id = await enqueue(bot_store, settings, "alice", extend_of=41)
    await run_burst(settings)
    job = await bot_store.get(job_id)
    assert job.status is JobStatus.FAILED
    assert job.error is not None and job.error.startswith("The video of job #41 is gone")
    assert not any(r.exc_info for r in caplog.records)


async def test_a_damaged_video_input_fails_with_the_reason(
    settings: Settings, bot_store: JobStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    data = DataDir(settings.storage.data_dir)
    broken = data.new_input_path(".mp4")
    broken.parent.mkdir(parents=True, exist_ok=True)
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100)
    job_id = await enqueue(bot_store, settings, "alice", picture=str(broken))
    await run_burst(settings)
    job = await bot_store.get(job_id)
    assert job.status is JobStatus.FAILED
    assert job.error == "The video to continue could not be read. Please send it again."
    assert not any(r.exc_info for r in caplog.records)
