"""Continuing a video on the tiny model: extending a finished job from its checkpoint,
and a video a member sent. What a member sees: the clip they had, then the new part."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from framepack.engine.checkpoint import CHECKPOINT_NAME
from framepack.engine.continuation import VideoSource
from framepack.engine.engine import VIDEO_NAME
from framepack.engine.events import Started, Step
from framepack.video.encode import encode_mp4
from framepack.video.ffmpeg import VideoError
from framepack.video.probe import probe, read_clip, read_frames
from tests.engine_fixtures import FAST, Run, run_job

# What one more H.264 generation at the bot's CRF 16 keeps of the tiny model's
# frames, which are close to noise (measured: 34-47 dB per frame, 38 on average);
# another frame of the same clip scores about 17.
CODEC_PSNR = 30.0


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255**2 / mse))


def new_frames(run: Run) -> int:
    """Frames the extension's sections add: 4 per latent frame (no start frame)."""
    return run.started.sections * FAST.latent_window * 4


def source_of(workdir: Path) -> VideoSource:
    return VideoSource(workdir / VIDEO_NAME, workdir / CHECKPOINT_NAME)


@pytest.fixture(scope="module", params=["inverted", "forward"])
def extended(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """A 2-section job, then a 2-section extension of it with a new prompt and seed."""
    sampler = request.param
    source_dir = tmp_path_factory.mktemp(f"source-{sampler}")
    source = run_job(source_dir, replace(FAST, sampler=sampler))
    params = replace(FAST, sampler=sampler, prompt="the cat turns around", seed=8)
    extension = run_job(
        tmp_path_factory.mktemp(f"ext-{sampler}"), params, source=source_of(source_dir)
    )
    return sampler, source_dir, source, extension


def test_an_extension_starts_with_the_source_video_and_adds_the_new_sections(extended) -> None:
    _, source_dir, source, extension = extended
    delivered = read_frames(source_dir / VIDEO_NAME)
    n = len(delivered)
    assert n == source.done.frames == 73
    assert extension.frames is not None
    # the source's frames as its member saw them, untouched (no blend across the seam)
    assert np.array_equal(extension.frames[:n], delivered)
    assert len(extension.frames) == n + new_frames(extension) == 73 + 72
    assert extension.done.frames == len(extension.frames)
    assert extension.done.seconds == pytest.approx(145 / 30)
    # in the file: the source's frames up to one more pass of the codec, then the new part
    file_frames = read_frames(extension.done.video)
    assert probe(extension.done.video).frames == 145
    assert min(psnr(file_frames[i], delivered[i]) for i in range(n)) >= CODEC_PSNR
    assert probe(extension.done.video).metadata["seconds"] == "4.83"
    assert probe(extension.done.video).metadata["prompt"] == "the cat turns around"


def test_the_new_part_continues_from_the_source_latents(extended, tmp_path: Path) -> None:
    # Another source under the same extension settings: other new frames, so the
    # sections read the source's latents (and not only its picture).
    sampler, _, _, extension = extended
    other_dir = tmp_path / "other"
    run_job(other_dir, replace(FAST, sampler=sampler, seed=99))
    other = run_job(
        tmp_path / "ext",
        replace(FAST, sampler=sampler, prompt="the cat turns around", seed=8),
        source=source_of(other_dir),
    )
    assert other.frames is not None and extension.frames is not None
    assert psnr(other.frames[73:], extension.frames[73:]) < 30


def test_partial_videos_of_an_extension(extended) -> None:
    sampler, _, _, extension = extended
    # forward: the clip so far (source, then what is new); inverted: the new part, which
    # grows backwards from its end, and the whole clip once done
    expected = [73 + 36, 145] if sampler == "forward" else [33, 145]
    assert [s.frames for s in extension.sections] == expected
    assert [probe(s.video).frames for s in extension.sections] == expected


@pytest.mark.parametrize("sampler", ["inverted", "forward"])
def test_a_resumed_extension_ends_with_the_frames_of_an_uninterrupted_one(
    tmp_path: Path, sampler: str
) -> None:
    source_dir = tmp_path / "source"
    run_job(source_dir, replace(FAST, sampler=sampler))
    params = replace(FAST, sampler=sampler, seconds=3.6)  # 3 sections
    whole = run_job(tmp_path / "whole", params, source=source_of(source_dir))

    workdir = tmp_path / "interrupted"
    first = run_job(
        workdir,
        params,
        source=source_of(source_dir),
        cancel_when=lambda e: isinstance(e, Step) and e.section == 2,
    )
    assert first.cancelled is not None and first.cancelled.sections_done == 2
    resumed = run_job(workdir, params, source=source_of(source_dir))
    assert resumed.started == Started(sections=3, steps=2, first_section=2)
    assert resumed.frames is not None and whole.frames is not None
    assert np.array_equal(resumed.frames, whole.frames)
    assert len(resumed.frames) == 73 + 3 * 36


def test_an_extension_of_an_extension_keeps_the_whole_clip(tmp_path: Path) -> None:
    run_job(tmp_path / "a", replace(FAST, sampler="forward"))
    run_job(tmp_path / "b", replace(FAST, sampler="forward"), source=source_of(tmp_path / "a"))
    # the inverted model may extend what F1 made: a checkpoint says which way it grew
    c = run_job(tmp_path / "c", replace(FAST, seconds=1.2), source=source_of(tmp_path / "b"))
    assert c.frames is not None
    b_frames = read_frames(tmp_path / "b" / VIDEO_NAME)
    assert len(b_frames) == 145 and len(c.frames) == 145 + 36
    assert np.array_equal(c.frames[:145], b_frames)


def moving_clip(frames: int = 40, height: int = 120, width: int = 160) -> np.ndarray:
    """A clip from elsewhere: a disc moving over a gradient."""
    y, x = np.mgrid[0:height, 0:width]
    clip = np.empty((frames, height, width, 3), np.uint8)
    for t in range(frames):
        disc = (x - 20 - 3 * t) ** 2 + (y - 60) ** 2 < 400
        clip[t, ..., 0] = (x * 255 // width).astype(np.uint8)
        clip[t, ..., 1] = (y * 255 // height).astype(np.uint8)
        clip[t, ..., 2] = np.where(disc, 250, 30)
    return clip


@pytest.fixture(scope="module")
def sent_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 40-frame 24 fps 160x120 video, as a member might send (it becomes 50 frames at 30)."""
    return encode_mp4(moving_clip(), tmp_path_factory.mktemp("sent") / "clip.mp4", fps=24)


def test_a_sent_video_is_continued_and_its_frames_come_first(
    tmp_path: Path, sent_video: Path
) -> None:
    run = run_job(tmp_path, replace(FAST, sampler="forward"), source=VideoSource(sent_video))
    assert run.frames is not None
    height, width = run.done.height, run.done.width
    assert (height, width) == (112, 144)  # the 4:3 video's bucket at resolution 128
    clip = read_clip(sent_video, width=width, height=height, fps=30)
    assert len(clip) == 50  # 40 frames at 24 fps are 50 at 30 (1.67 s either way)
    assert np.array_equal(run.frames[:50], clip)
    assert len(run.frames) == 50 + 72
    # against the sent frames themselves, scaled to the bucket: only the codec between
    original = moving_clip()
    delivered = read_frames(run.done.video)
    for t_out, t_in in ((0, 0), (25, 20), (49, 39)):
        expected = read_clip(encode_mp4(original[t_in : t_in + 1], tmp_path / f"{t_in}.mp4"),
                             width=width, height=height, fps=30)[0]  # fmt: skip
        assert psnr(delivered[t_out], expected) >= 30, t_out


def test_a_sent_video_is_part_of_the_fingerprint(tmp_path: Path, sent_video: Path) -> None:
    params = replace(FAST, sampler="forward", seconds=1.2)
    first = run_job(tmp_path / "job", params, source=VideoSource(sent_video))
    assert first.started.first_section == 0
    again = run_job(tmp_path / "job", params, source=VideoSource(sent_video))
    assert again.started.first_section == 1 and not again.steps  # its own checkpoint: resumed
    other = tmp_path / "other.mp4"
    encode_mp4(moving_clip()[::-1].copy(), other, fps=24)
    shutil.copy(other, tmp_path / "clip.mp4")
    changed = run_job(tmp_path / "job", params, source=VideoSource(tmp_path / "clip.mp4"))
    assert changed.started.first_section == 0  # another video: rendered afresh


def test_a_damaged_video_fails_before_anything_runs(tmp_path: Path, sent_video: Path) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(sent_video.read_bytes()[:200])
    with pytest.raises((VideoError, ValueError)):
        run_job(tmp_path / "job", FAST, source=VideoSource(broken))
    assert not (tmp_path / "job" / CHECKPOINT_NAME).exists()
