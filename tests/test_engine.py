"""The engine as the worker sees it: events, playable videos, lengths, checkpoints,
cancellation, end image, per-section prompts and real CFG, on the tiny model."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from framepack.engine.buckets import find_nearest_bucket
from framepack.engine.checkpoint import CHECKPOINT_NAME
from framepack.engine.events import Done, Section, Started, Step
from framepack.engine.params import GenerationParams, check_params
from framepack.video.probe import probe, read_frames
from tests.engine_fixtures import (
    FAST,
    Run,
    picture,
    run_job,
    section_latents_equal,
    tiny_engine,
)


@pytest.fixture(scope="module")
def inverted_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """FAST rendered once, uninterrupted: 2 sections of 2 steps, inverted order."""
    return run_job(tmp_path_factory.mktemp("inverted"))


def expected_section_frames(params: GenerationParams) -> list[int]:
    """Frames of the video after each section: the first decode holds one window
    (33 frames at window 9) plus the start frame in the forward order; each later
    section adds 36; the inverted order adds the start frame with its last section."""
    n, w = params.sections(), params.latent_window
    if params.sampler == "forward":
        return [4 * w + 1 + 4 * w * k for k in range(n)]
    return [4 * w * (k + 1) - 3 for k in range(n - 1)] + [4 * w * n + 1]


def test_events_come_in_order_with_a_playable_video_per_section(inverted_run: Run) -> None:
    run, params = inverted_run, FAST
    assert isinstance(run.events[0], Started) and isinstance(run.events[-1], Done)
    assert run.started == Started(sections=2, steps=2, first_section=0)
    assert [(s.section, s.step) for s in run.steps] == [(0, 1), (0, 2), (1, 1), (1, 2)]
    assert [s.section for s in run.sections] == [0, 1]
    # A section's video comes after its last step (it may come after the next one's first:
    # it is written while the next section samples).
    for section in run.sections:
        last_step = max(
            i
            for i, e in enumerate(run.events)
            if isinstance(e, Step) and e.section == section.section
        )
        assert run.events.index(section) > last_step

    expected = expected_section_frames(params)
    assert [s.frames for s in run.sections] == expected == [33, 73]
    for section in run.sections:
        info = probe(section.video)
        assert info.frames == section.frames
        assert read_frames(section.video).shape[0] == section.frames
    assert len({s.video for s in run.sections}) == len(run.sections)  # no file overwritten


def test_final_video_length_and_size_follow_the_request(inverted_run: Run) -> None:
    done, params = inverted_run.done, FAST
    assert done.video == inverted_run.sections[-1].video
    assert done.frames == params.frames() == 73
    assert done.seconds == pytest.approx(73 / 30)
    assert (done.height, done.width) == find_nearest_bucket(144, 128, 128) == (128, 112)

    info = probe(done.video)
    assert (info.frames, info.width, info.height, info.fps) == (73, 112, 128, 30)
    assert info.duration == pytest.approx(73 / 30, abs=0.05)
    assert info.metadata["prompt"] == "a cat walks"
    assert info.metadata["seed"] == "7"
    assert info.metadata["model"] == "tiny"

    frames = inverted_run.frames
    assert frames is not None and frames.shape == (73, 128, 112, 3)
    assert frames.std() > 5  # a video of noise, not a blank one (NaN latents decode to black)
    assert all(s.preview.dtype == np.uint8 and s.preview.ndim == 3 for s in inverted_run.steps)


@pytest.mark.parametrize(
    ("seconds", "sections", "frames"),
    [(0.5, 1, 37), (1.0, 1, 37), (1.9, 2, 73), (5.0, 4, 145), (10.0, 8, 289), (60.0, 50, 1801)],
)
def test_length_is_computed_as_the_original(seconds: float, sections: int, frames: int) -> None:
    params = GenerationParams(prompt="x", seconds=seconds)
    # demo_gradio.py: int(max(round(seconds * 30 / (latent_window_size * 4)), 1))
    assert params.sections() == int(max(round(seconds * 30 / (9 * 4)), 1)) == sections
    assert params.frames() == frames


def test_forward_sections_grow_the_video_at_its_end(tmp_path: Path) -> None:
    params = replace(FAST, sampler="forward")
    run = run_job(tmp_path, params)
    assert [s.frames for s in run.sections] == expected_section_frames(params) == [37, 73]
    assert [probe(s.video).frames for s in run.sections] == [37, 73]
    assert run.done.frames == 73


@pytest.mark.parametrize(
    ("sampler", "scheduler"), [("inverted", "unipc"), ("forward", "unipc"), ("inverted", "euler")]
)
def test_resumed_job_ends_with_the_same_frames_and_fewer_steps(
    tmp_path: Path, sampler: str, scheduler: str
) -> None:
    params = replace(FAST, seconds=3.6, sampler=sampler, scheduler=scheduler)  # 3 sections
    whole = run_job(tmp_path / "whole", params)

    workdir = tmp_path / "interrupted"
    # Stopped as the third section starts: its first step is the last to run.
    first = run_job(workdir, params, cancel_when=lambda e: isinstance(e, Step) and e.section == 2)
    assert first.cancelled is not None and first.cancelled.sections_done == 2
    assert [s.section for s in first.sections] == [0, 1]  # every finished section's video
    assert (workdir / CHECKPOINT_NAME).is_file()

    resumed = run_job(workdir, params)
    assert resumed.started == Started(sections=3, steps=2, first_section=2)
    assert {s.section for s in resumed.steps} == {2}
    assert len(resumed.steps) < len(whole.steps)
    assert [s.section for s in resumed.sections] == [2]
    assert resumed.frames is not None and np.array_equal(resumed.frames, whole.frames)
    assert probe(resumed.done.video).frames == whole.done.frames


def test_a_finished_job_run_again_samples_nothing(tmp_path: Path) -> None:
    # The worker may die after the last section but before it records the job as done.
    first = run_job(tmp_path, seconds=1.0)
    (tmp_path / "video.mp4").unlink()
    again = run_job(tmp_path, seconds=1.0)
    assert again.started.first_section == again.started.sections == 1
    assert not again.steps and not again.sections
    assert np.array_equal(again.frames, first.frames)
    assert probe(again.done.video).frames == first.done.frames == 37


def test_cancel_stops_within_one_step_and_keeps_the_last_section(tmp_path: Path) -> None:
    early = run_job(tmp_path / "a", cancel_when=lambda e: isinstance(e, Step))
    assert early.cancelled is not None and early.cancelled.sections_done == 0
    assert len(early.steps) == 1  # the step in flight when asked was the last one
    assert not early.sections and not (tmp_path / "a" / CHECKPOINT_NAME).exists()

    workdir = tmp_path / "b"
    later = run_job(workdir, cancel_when=lambda e: isinstance(e, Step) and e.section == 1)
    assert [(s.section, s.step) for s in later.steps] == [(0, 1), (0, 2), (1, 1)]
    assert later.cancelled is not None and later.cancelled.sections_done == 1
    resumed = run_job(workdir, cancel_when=lambda e: True)
    assert resumed.started.first_section == 1


def test_checkpoint_of_other_settings_or_unreadable_is_ignored(tmp_path: Path) -> None:
    run_job(tmp_path, cancel_when=lambda e: isinstance(e, Step) and e.section == 1)
    assert (tmp_path / CHECKPOINT_NAME).is_file()
    other_seed = run_job(tmp_path, seed=8, cancel_when=lambda e: True)
    assert other_seed.started.first_section == 0
    other_picture = run_job(tmp_path, image=picture(seed=5), cancel_when=lambda e: True)
    assert other_picture.started.first_section == 0

    (tmp_path / CHECKPOINT_NAME).write_bytes(b"not a checkpoint")
    broken = run_job(tmp_path, cancel_when=lambda e: True)
    assert broken.started.first_section == 0


def test_end_image_conditions_the_video_and_needs_the_inverted_sampler(
    tmp_path: Path, inverted_run: Run
) -> None:
    wide_end = picture(90, 200, seed=3)  # another aspect: cropped to the start's bucket
    with_end = run_job(tmp_path / "end", end_image=wide_end)
    assert (with_end.done.width, with_end.done.height) == (112, 128)
    assert with_end.done.frames == inverted_run.done.frames
    # The end image is the context of the first section rendered (the video's end).
    assert not section_latents_equal(with_end, inverted_run, 0)
    assert not np.array_equal(with_end.frames, inverted_run.frames)

    with pytest.raises(ValueError, match="end image needs the inverted sampler"):
        tiny_engine().generate(
            replace(FAST, sampler="forward"), picture(), workdir=tmp_path, end_image=wide_end
        )


@pytest.mark.parametrize(
    ("sampler", "first_rendered"), [("inverted", "jumps"), ("forward", "sits")]
)
def test_each_section_takes_the_prompt_of_the_time_it_starts(
    tmp_path: Path, sampler: str, first_rendered: str
) -> None:
    # 2 sections of 1.2 s: the video's first section starts at 0 s, the second at 1.2 s.
    timed = "[0s: a cat sits] [1.2s: a cat jumps]"
    first_only = lambda e: isinstance(e, Section)  # noqa: E731 - stop after one section
    run = run_job(tmp_path / "timed", prompt=timed, sampler=sampler)
    sits = run_job(tmp_path / "sits", prompt="a cat sits", sampler=sampler, cancel_when=first_only)
    jumps = run_job(
        tmp_path / "jumps", prompt="a cat jumps", sampler=sampler, cancel_when=first_only
    )
    # The inverted order renders the video's end (1.2 s on: jumps) first.
    same, other = (jumps, sits) if first_rendered == "jumps" else (sits, jumps)
    assert section_latents_equal(run, same, 0)
    assert not section_latents_equal(run, other, 0)
    assert probe(run.done.video).metadata["prompt"] == timed


def test_real_cfg_runs_with_an_empty_negative_prompt_too(tmp_path: Path) -> None:
    # As the demo: cfg > 1 encodes the negative prompt, "" included, and runs both passes.
    one = replace(FAST, seconds=1.0)
    plain = run_job(tmp_path / "plain", one)
    empty = run_job(tmp_path / "empty", one, cfg=3.0)
    negative = run_job(tmp_path / "negative", one, cfg=3.0, negative_prompt="blurry")
    assert not np.array_equal(plain.frames, empty.frames)
    assert not np.array_equal(empty.frames, negative.frames)
    assert probe(empty.done.video).metadata["cfg"] == "3"
    assert probe(negative.done.video).metadata["negative_prompt"] == "blurry"
    assert "cfg" not in probe(plain.done.video).metadata


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"prompt": "  "}, "prompt is empty"),
        ({"steps": 0}, "steps must be"),
        ({"seed": -1}, "seed must be"),
        ({"seconds": 0.0}, "seconds must be"),
        ({"seconds": float("nan")}, "seconds must be"),
        ({"cfg": 0.5}, "cfg must be"),
        ({"negative_prompt": None}, "negative prompt must be text"),
        ({"scheduler": "ddim"}, "scheduler must be"),
        ({"sampler": "sideways"}, "sampler must be"),
        ({"crf": 60}, "crf must be"),
        ({"prompt": "[0s: walks] and then"}, "text outside the timed prompts"),
    ],
)
def test_bad_settings_fail_before_anything_runs(tmp_path: Path, change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tiny_engine().generate(replace(FAST, **change), picture(), workdir=tmp_path)
    assert not any(tmp_path.iterdir())


def test_each_real_model_takes_only_the_sampler_it_was_trained_for() -> None:
    check_params(replace(FAST, sampler="inverted"), preset="framepack", has_end_image=True)
    check_params(replace(FAST, sampler="forward"), preset="f1", has_end_image=False)
    with pytest.raises(ValueError, match="f1 model"):
        check_params(replace(FAST, sampler="inverted"), preset="f1", has_end_image=False)
    with pytest.raises(ValueError, match="framepack model"):
        check_params(replace(FAST, sampler="forward"), preset="framepack", has_end_image=False)
