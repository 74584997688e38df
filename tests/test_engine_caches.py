"""Step caches (TeaCache, MagCache) on the tiny model, on the CPU.

- cache off renders exactly today's frames (the demo's: `tests/demo_reference.py`
  calls the transformer with no hooks and no cache context), also on an engine
  that ran a cached job before;
- a skipped step's block-stack output is its input plus the residual cached at
  the last computed step, bit for bit;
- the first and the last step of a section always compute;
- with real CFG each branch keeps its own state;
- a cached job resumed from its checkpoint ends with the frames of an
  uninterrupted cached job;
- the block-stack passes are counted by a hook on the last block, and printed;
- the caches over the low memory mode's offloaded layers: tests/test_memory.py.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from framepack.engine.caches import CACHES, BlockPasses, apply_step_cache, remove_step_cache
from framepack.engine.caches.mag_ratios import mag_ratios
from framepack.engine.caches.teacache import TeaCacheConfig, teacache_states
from framepack.engine.events import Step
from framepack.engine.params import GenerationParams, check_params
from tests.demo_reference import demo_frames
from tests.engine_fixtures import FAST, picture, run_job, tiny_components, tiny_engine
from tests.test_engine_demo_parity import DEMO_LIKE, assert_same_frames, demo_job

# 2 sections of 6 steps: room for skips between each section's first and last step
CACHED = replace(FAST, steps=6, seed=11)
NEVER_ENOUGH = 1e9  # a TeaCache threshold no change reaches: every middle step skips


def transformer():
    return tiny_engine().components.transformer


def test_the_pass_counter_is_inside_the_cache_hooks() -> None:
    assert BlockPasses.attach(transformer()) is tiny_engine().block_passes


@pytest.mark.parametrize("cfg", [1.0, 3.0])
def test_cache_off_renders_the_demos_frames_even_after_a_cached_job(
    tmp_path: Path, cfg: float
) -> None:
    params = replace(DEMO_LIKE, cfg=cfg, cache="off")
    image = picture(128, 112)
    run_job(tmp_path / "cached", replace(params, cache="teacache"), image)  # hooks on, then off
    run = run_job(tmp_path / "off", params, image)
    demo = demo_frames(tiny_components(), demo_job(params, np.array(image)), f1=False)
    assert_same_frames(run.frames, demo)
    assert "cache" not in run.done.metadata


def _stack_calls(model) -> tuple[list, list, list]:
    """Torch hooks (outside diffusers' hooks) seeing the block stack's input and output."""
    inputs, outputs = [], []
    first = model.transformer_blocks[0].register_forward_pre_hook(
        lambda _m, args: inputs.append(args[0].clone())
    )
    last = model.single_transformer_blocks[-1].register_forward_hook(
        lambda _m, _a, out: outputs.append(out[0].clone())
    )
    return inputs, outputs, [first, last]


@pytest.mark.parametrize(
    ("cache", "threshold", "skipped"),
    [
        ("teacache", NEVER_ENOUGH, {1, 2, 3, 4}),  # every middle step
        ("magcache", None, {1, 2, 4}),  # the flat table: 2 skips at most, the last computes
    ],
)
def test_a_skipped_step_is_its_input_plus_the_cached_residual(
    tmp_path: Path, cache: str, threshold: float | None, skipped: set[int]
) -> None:
    params = replace(CACHED, seconds=1.0, cache=cache, cache_threshold=threshold)
    inputs, outputs, handles = _stack_calls(transformer())
    try:
        run_job(tmp_path, params)
    finally:
        for h in handles:
            h.remove()
    assert len(inputs) == len(outputs) == params.steps  # one section, one pass a step
    residual = outputs[0] - inputs[0]  # step 0 computes
    seen = set()
    for step in range(1, params.steps):
        if torch.equal(outputs[step], inputs[step] + residual):
            seen.add(step)  # skipped: its input plus the residual of the last computed step
        else:
            residual = outputs[step] - inputs[step]
    assert seen == skipped


@pytest.mark.parametrize("cache", ["teacache", "magcache"])
def test_the_first_and_last_steps_of_each_section_compute(tmp_path: Path, cache: str) -> None:
    threshold = NEVER_ENOUGH if cache == "teacache" else 0.99  # MagCache: near its most
    params = replace(CACHED, cache=cache, cache_threshold=threshold)
    counter = tiny_engine().block_passes
    computed: list[tuple[int, int]] = []  # (section, step) where the last block ran
    seen = counter.count

    def after(event) -> bool:
        nonlocal seen
        if isinstance(event, Step):
            if counter.count > seen:
                computed.append((event.section, event.step))
            seen = counter.count
        return False

    run_job(tmp_path, params, cancel_when=after)
    for section in range(params.sections()):
        steps = {step for s, step in computed if s == section}
        assert {1, params.steps} <= steps, (section, steps)
        assert len(steps) < params.steps  # and it did skip


def test_each_cfg_branch_keeps_its_own_state(tmp_path: Path) -> None:
    params = replace(CACHED, seconds=1.0, cfg=3.0, cache="teacache", cache_threshold=0.05)
    seen: dict[str, tuple[int, int]] = {}

    def at_last_step(event) -> bool:
        if isinstance(event, Step) and event.step == params.steps:
            states = teacache_states(transformer())
            seen.update({name: (s.computed, s.skipped) for name, s in states.items()})
        return False

    run_job(tmp_path, params, cancel_when=at_last_step)
    assert set(seen) == {"cond", "uncond"}
    for name, (computed, skipped) in seen.items():
        # each branch saw every step once (a state shared by both would count 2 a step)
        assert computed + skipped == params.steps, name
        assert computed >= 2, name


def test_magcache_keeps_a_schedule_per_branch(tmp_path: Path) -> None:
    counter = tiny_engine().block_passes
    counts = {}
    for cfg in (1.0, 3.0):
        before = counter.count
        run_job(tmp_path / str(cfg), replace(CACHED, cfg=cfg, cache="magcache"))
        counts[cfg] = counter.count - before
    # the flat tiny table gives a data-independent schedule: both branches follow it
    assert counts[3.0] == 2 * counts[1.0]


@pytest.mark.parametrize("cache", ["teacache", "magcache"])
def test_a_resumed_cached_job_ends_with_the_uninterrupted_frames(
    tmp_path: Path, cache: str
) -> None:
    params = replace(CACHED, seconds=3.6, cache=cache, cache_threshold=0.3)
    whole = run_job(tmp_path / "whole", params)
    stopped = run_job(
        tmp_path / "resumed",
        params,
        cancel_when=lambda e: isinstance(e, Step) and e.section == 1 and e.step == 3,
    )
    assert stopped.cancelled is not None
    resumed = run_job(tmp_path / "resumed", params)
    assert resumed.started.first_section == 1
    assert np.array_equal(resumed.frames, whole.frames)
    off = run_job(tmp_path / "off", replace(params, cache="off"))
    assert not np.array_equal(off.frames, whole.frames)  # the cache did change something


def test_block_stack_passes_per_cache_are_counted_and_printed(tmp_path: Path) -> None:
    counter = tiny_engine().block_passes
    passes = {}
    for cache in CACHES:
        before = counter.count
        run_job(tmp_path / cache, replace(CACHED, cache=cache))
        passes[cache] = counter.count - before
    per_section = {c: n / CACHED.sections() for c, n in passes.items()}
    print(f"block-stack passes per section of {CACHED.steps} steps: {per_section}")
    assert passes["off"] == CACHED.sections() * CACHED.steps
    assert passes["magcache"] < passes["off"]
    assert passes["teacache"] <= passes["off"]


def test_the_cache_is_in_the_metadata_and_the_fingerprint(tmp_path: Path) -> None:
    run = run_job(tmp_path, replace(CACHED, seconds=1.0, cache="magcache"))
    assert run.done.metadata["cache"] == "magcache 0.1"
    off = GenerationParams(prompt="a cat walks")
    # cache off hashes as before caches existed: older checkpoints still resume
    assert off.fingerprint() == "09e2738bcc484a9c1ff76b1093400b1a503b2ee252e289c43ab181025bfd70fe"
    tea = replace(off, cache="teacache")
    assert (
        len({off.fingerprint(), tea.fingerprint(), replace(tea, cache_threshold=0.1).fingerprint()})
        == 3
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"cache": "fastcache"}, "cache must be one of off, teacache, magcache"),
        ({"cache": "teacache", "cache_threshold": 0.0}, "above 0"),
        ({"cache": "magcache", "cache_threshold": float("nan")}, "above 0"),
        ({"cache": "magcache", "cache_threshold": 1.0}, "must be below 1"),
    ],
)
def test_bad_cache_settings_are_refused(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_params(replace(FAST, **change), preset="tiny", has_end_image=False)


def test_disabling_is_a_flag_and_no_hook_stays_behind() -> None:
    model = transformer()
    apply_step_cache(
        model, "magcache", threshold=None, family="tiny", height=128, width=128, steps=4
    )
    assert any(
        hasattr(b, "_diffusers_hook") and b._diffusers_hook.hooks for b in model.transformer_blocks
    )
    remove_step_cache(model)
    apply_step_cache(model, "off", threshold=None, family="tiny", height=128, width=128, steps=4)
    assert not any(
        getattr(b, "_diffusers_hook", None) is not None and b._diffusers_hook.hooks
        for b in model.transformer_blocks
    )
    with pytest.raises(ValueError, match="above 0"):
        TeaCacheConfig(rel_l1_thresh=0)


def test_mag_ratio_tables() -> None:
    ratios = mag_ratios("framepack", height=640, width=544, steps=25)
    assert len(ratios) == 25 and ratios[0] == 1.0 and ratios[1] == 1.30469  # 640 group
    assert len(mag_ratios("f1", height=512, width=512, steps=40)) == 50  # nearest step count
    assert mag_ratios("tiny", height=128, width=128, steps=6) == (1.0,) * 6


def test_a_calibrated_table_in_the_data_folder_comes_before_the_shipped_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from framepack.engine.caches.mag_ratios import load_tables, table_file_name
    from framepack.worker.engines import engine_factory
    from storage.config import parse_settings

    folder = tmp_path / "mag_ratios"
    folder.mkdir()
    # as `framepack-bot calibrate-cache` writes it: ratios of 0 leave MagCache no error
    # budget, so every step computes (the shipped flat table of the tiny preset skips)
    table = {"family": "tiny", "resolution": 128, "steps": CACHED.steps, "ratios": [0.0] * 6}
    (folder / table_file_name("tiny", 128, CACHED.steps)).write_text(json.dumps(table))
    (folder / "broken.json").write_text('{"family": "f1", "steps": 3}')
    with caplog.at_level(logging.WARNING):
        tables = load_tables(folder)
    assert tables == {"tiny": {128: {6: (0.0,) * 6}}}
    assert any("broken.json left out" in r.getMessage() for r in caplog.records)
    assert mag_ratios("tiny", height=128, width=128, steps=6, calibrated=tables) == (0.0,) * 6
    assert mag_ratios("f1", height=640, width=640, steps=25, calibrated=tables)[1] != 0.0
    # a calibration replaces the shipped table of its resolution and steps, not the others
    own = {"framepack": {640: {25: (0.5,) * 25}}}
    assert mag_ratios("framepack", height=640, width=608, steps=25, calibrated=own)[1] == 0.5
    shipped = mag_ratios("framepack", height=640, width=608, steps=50)
    assert mag_ratios("framepack", height=640, width=608, steps=50, calibrated=own) == shipped
    assert mag_ratios("framepack", height=768, width=768, steps=25, calibrated=own)[1] != 0.5

    magcache = replace(CACHED, cache="magcache")
    engine = engine_factory(parse_settings({}).model, mag_tables=folder)("tiny", "auto")
    before = engine.block_passes.count
    run_job(tmp_path / "calibrated", magcache, engine=engine)
    assert engine.block_passes.count - before == magcache.sections() * magcache.steps
    shipped = tiny_engine()
    before = shipped.block_passes.count
    run_job(tmp_path / "shipped", magcache, engine=shipped)
    assert shipped.block_passes.count - before < magcache.sections() * magcache.steps
