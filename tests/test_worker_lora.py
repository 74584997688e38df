"""The worker with a LoRA catalogue, on the tiny model: the engine it builds attaches the
catalogue's files, a job's LoRAs and trigger words reach the engine, a corrupt or
mismatched file fails only the jobs that ask for it (with a sentence for the owner),
and the estimates count a job's adapters."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from framepack.models.tiny import build_tiny_components
from framepack.video.probe import probe
from framepack.worker.engines import EngineSlot, generation_params, lora_files
from framepack.worker.loop import Worker
from framepack.worker.render import _LORA_MESSAGE
from storage.config import Settings
from storage.positions import lora_factor
from storage.records import EventKind, JobParams, JobStatus
from storage.store import JobStore
from tests.lora_fixtures import random_lora, write_lora
from tests.worker_fixtures import enqueue, events_of, kinds, open_store, settings_of, write_config

CATALOGUE = """
[[model.loras]]
name = "paint"
source = "loras/paint.safetensors"
triggers = "oil painting"
scale = 0.8
description = "thick brush strokes"

[[model.loras]]
name = "broken"
source = "loras/broken.safetensors"

[[model.loras]]
name = "big"
source = "loras/big.safetensors"

[[model.loras]]
name = "forward"
source = "loras/paint.safetensors"
models = ["f1"]
"""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    loras = tmp_path / "loras"
    transformer = build_tiny_components().transformer
    write_lora(loras / "paint.safetensors", random_lora(transformer), "kohya", transformer)
    (loras / "broken.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{bad json")
    save_file(  # a LoRA of the real model's size (3072): keys match, sizes do not
        {
            "diffusion_model.double_blocks.0.img_attn_proj.lora_A.weight": torch.ones(4, 3072),
            "diffusion_model.double_blocks.0.img_attn_proj.lora_B.weight": torch.ones(3072, 4),
        },
        str(loras / "big.safetensors"),
    )
    return settings_of(write_config(tmp_path, CATALOGUE))


@pytest.fixture
async def bot_store(settings: Settings) -> Any:
    store = await open_store(settings)
    yield store
    await store.close()


def test_a_jobs_loras_and_trigger_words_reach_the_engine(settings: Settings) -> None:
    from tests.test_worker import job_record

    params = generation_params(job_record(loras=(("paint", 0.5),)), settings)
    assert params.loras == (("paint", 0.5),)
    assert params.prompt == "a cat, oil painting"
    job = job_record(loras=(("paint", 1.0),))
    job = dataclasses.replace(
        job, params=dataclasses.replace(job.params, prompt="[0s: a cat sits] [1s: it jumps]")
    )
    timed = generation_params(job, settings)
    assert timed.prompt == "[0s: a cat sits, oil painting] [1s: it jumps, oil painting]"
    assert generation_params(job_record(), settings).loras == ()


def test_each_model_loads_the_loras_made_for_it(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert set(lora_files(settings.model, "framepack")) == {"paint", "broken", "big"}
    assert set(lora_files(settings.model, "f1")) == {"paint", "broken", "big", "forward"}
    assert set(lora_files(settings.model, "tiny")) == {"paint", "broken", "big", "forward"}
    hub = dataclasses.replace(settings.model.loras[0], path=None, hub=("nobody/none", "x.st"))
    offline = dataclasses.replace(settings.model, loras=[hub], cache_dir=str(settings.source))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)  # no network here
    files = lora_files(offline, "framepack")  # the reason, not a raise
    assert "cannot fetch nobody/none/x.st" in str(files["paint"])


async def test_a_bad_lora_file_fails_only_its_jobs_and_the_worker_goes_on(
    settings: Settings, bot_store: JobStore
) -> None:
    broken = await enqueue(bot_store, settings, "alice", loras=(("broken", 1.0),))
    big = await enqueue(bot_store, settings, "bob", loras=(("big", 1.0),))
    styled = await enqueue(bot_store, settings, "carol", loras=(("paint", 0.8),))
    plain = await enqueue(bot_store, settings, "dave")
    store = await open_store(settings)
    slot = EngineSlot.from_settings(settings)  # the worker's own engine: loads the catalogue
    try:
        await asyncio.wait_for(Worker(store, settings, slot, worker_id="w", burst=True).run(), 180)
    finally:
        await store.close()

    for job_id, name in ((broken, "broken"), (big, "big")):
        job = await bot_store.get(job_id)
        assert job.status is JobStatus.FAILED
        assert job.error == _LORA_MESSAGE.format(name=name)
        assert not kinds(await events_of(bot_store, job_id), EventKind.STARTED)
    job = await bot_store.get(styled)
    assert job.status is JobStatus.DONE and job.result_path is not None
    mp4 = probe(Path(job.result_path)).metadata  # the MP4 says what rendered it
    assert mp4["loras"] == "paint 0.8" and mp4["prompt"] == "a cat walks, oil painting"
    assert (await bot_store.get(plain)).status is JobStatus.DONE
    assert slot.engine is not None and slot.engine.loras["paint"].error is None
    # the timings keep base-model step times: a LoRA job's divided by its factor
    with contextlib.closing(sqlite3.connect(settings.database_path)) as db:
        rows = dict(
            (job_id, (render / (sections * steps), step))
            for job_id, render, sections, steps, step in db.execute(
                "SELECT job_id, render_seconds, sections, steps, step_seconds FROM timings"
            )
        )
    assert rows[styled][1] == pytest.approx(rows[styled][0] / lora_factor(1))
    assert rows[plain][1] == pytest.approx(rows[plain][0])


async def test_the_estimate_counts_the_loras(bot_store: JobStore) -> None:
    plain = await bot_store.estimate_duration(JobParams(prompt="x"))
    two = await bot_store.estimate_duration(JobParams(prompt="x", loras=(("a", 1), ("b", 1))))
    assert two == pytest.approx(plain * lora_factor(2)) and two > plain


async def test_queue_positions_time_a_lora_job_slower(
    settings: Settings, bot_store: JobStore
) -> None:
    plain = await enqueue(bot_store, settings, "alice")
    styled = await enqueue(bot_store, settings, "bob", loras=(("paint", 1.0),))
    positions = await bot_store.positions()
    ratio = positions[styled].estimated_duration / positions[plain].estimated_duration
    assert ratio == pytest.approx(lora_factor(1))
