"""MP4 encoding, probing, decoding and shrinking through the real bundled ffmpeg."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from framepack.video.encode import encode_mp4
from framepack.video.ffmpeg import VideoError, ffmpeg_exe
from framepack.video.fit import VideoTooLarge, fit_to_size
from framepack.video.probe import probe, read_frames

METADATA = {
    "prompt": 'a cat turns; she says "hi" = #1 \\ ünïcødé 🐈\nsecond line',
    "seed": "31337",
    "settings": '{"steps": 25, "guidance": 10.0}',
    "model": "framepack",
}


def gradient_clip(frames: int, height: int, width: int) -> np.ndarray:
    """A smooth moving gradient: easy to compress, easy to compare after a lossy round trip."""
    y, x = np.mgrid[0:height, 0:width]
    clip = np.empty((frames, height, width, 3), np.uint8)
    for t in range(frames):
        clip[t, ..., 0] = (x * 255 // max(width - 1, 1) + 3 * t) % 256
        clip[t, ..., 1] = y * 255 // max(height - 1, 1)
        clip[t, ..., 2] = 128
    return clip


def noise_clip(frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Random pixels: nearly incompressible, so its MP4 is big for its size."""
    return np.random.default_rng(seed).integers(0, 256, (frames, height, width, 3), np.uint8)


def test_encoded_video_has_every_frame_at_30_fps_and_its_metadata(tmp_path: Path) -> None:
    path = encode_mp4(gradient_clip(37, 48, 64), tmp_path / "out.mp4", metadata=METADATA)

    info = probe(path)
    assert path == tmp_path / "out.mp4"
    assert (info.frames, info.width, info.height) == (37, 64, 48)
    assert info.fps == 30.0
    assert info.duration == pytest.approx(37 / 30, abs=1e-9)
    assert info.metadata == METADATA
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]  # no temporary file left


def test_a_single_frame_and_another_rate(tmp_path: Path) -> None:
    info = probe(encode_mp4(gradient_clip(1, 16, 16), tmp_path / "one.mp4", fps=24))
    assert (info.frames, info.fps) == (1, 24.0)
    assert info.duration == pytest.approx(1 / 24)
    assert info.metadata == {}


def test_frames_decode_close_to_what_was_encoded(tmp_path: Path) -> None:
    clip = gradient_clip(12, 64, 96)
    frames = read_frames(encode_mp4(clip, tmp_path / "out.mp4"))
    assert frames.shape == clip.shape and frames.dtype == np.uint8
    # CRF 16 is visually lossless: a few levels of difference on average at most.
    assert np.abs(frames.astype(int) - clip.astype(int)).mean() < 3


def test_pure_colours_keep_their_colour(tmp_path: Path) -> None:
    # Encoded and decoded with the same (BT.709) matrix: red stays red, not orange.
    colours = np.array(
        [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255], [0, 0, 0], [200, 100, 50]],
        np.uint8,
    )
    clip = np.broadcast_to(colours[:, None, None, :], (len(colours), 32, 32, 3)).copy()
    frames = read_frames(encode_mp4(clip, tmp_path / "colours.mp4"))
    centre = frames[:, 16, 16].astype(int)
    assert np.abs(centre - colours.astype(int)).max() <= 3


@pytest.mark.parametrize(("height", "width"), [(33, 64), (32, 65), (33, 65), (1, 1)])
def test_odd_sizes_are_padded_to_even_without_losing_pixels(
    tmp_path: Path, height: int, width: int
) -> None:
    clip = gradient_clip(5, height, width)
    path = encode_mp4(clip, tmp_path / "odd.mp4")

    info = probe(path)
    assert (info.height, info.width) == (height + height % 2, width + width % 2)
    frames = read_frames(path)
    assert frames.shape == (5, info.height, info.width, 3)
    if height > 2 and width > 2:
        assert np.abs(frames[:, :height, :width].astype(int) - clip.astype(int)).mean() < 4


@pytest.mark.parametrize("crf", [0, -1, 52, 16.0, True])
def test_crf_outside_1_to_51_is_refused(tmp_path: Path, crf: object) -> None:
    with pytest.raises(ValueError, match="crf") as raised:
        encode_mp4(gradient_clip(2, 16, 16), tmp_path / "x.mp4", crf=crf)  # type: ignore[arg-type]
    if crf == 0:
        assert "black" in str(raised.value)
    assert not (tmp_path / "x.mp4").exists()


def test_crf_sets_the_quality(tmp_path: Path) -> None:
    clip = noise_clip(4, 32, 32)
    fine = encode_mp4(clip, tmp_path / "fine.mp4", crf=1).stat().st_size
    coarse = encode_mp4(clip, tmp_path / "coarse.mp4", crf=40).stat().st_size
    assert coarse < fine / 4


@pytest.mark.parametrize(
    ("frames", "error"),
    [
        (np.zeros((2, 16, 16, 3), np.float32), TypeError),
        (np.zeros((16, 16, 3), np.uint8), ValueError),
        (np.zeros((2, 16, 16, 4), np.uint8), ValueError),
        (np.zeros((0, 16, 16, 3), np.uint8), ValueError),
    ],
)
def test_frames_that_are_not_rgb_video_are_refused(
    tmp_path: Path, frames: np.ndarray, error: type[Exception]
) -> None:
    with pytest.raises(error):
        encode_mp4(frames, tmp_path / "x.mp4")


def test_metadata_must_be_strings(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="str"):
        encode_mp4(gradient_clip(2, 16, 16), tmp_path / "x.mp4", metadata={"seed": 1})  # type: ignore[dict-item]


def test_a_failed_encode_leaves_the_previous_file_whole(tmp_path: Path) -> None:
    path = encode_mp4(gradient_clip(3, 16, 16), tmp_path / "out.mp4")
    before = path.read_bytes()
    with pytest.raises(VideoError, match=r"out\.mp4"):
        encode_mp4(gradient_clip(3, 16, 16), path, preset="no-such-preset")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_probe_tells_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        probe(tmp_path / "missing.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all")
    with pytest.raises(VideoError, match=r"junk\.mp4"):
        probe(junk)


def test_probe_reads_tags_of_videos_made_elsewhere(tmp_path: Path) -> None:
    # A title without our JSON comment comes back as the container's plain tags.
    path = tmp_path / "plain.mp4"
    subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "testsrc=s=64x48:r=25",
         "-frames:v", "10", "-metadata", "title=Plain; title=yes", "-metadata", "comment=hello",
         "-pix_fmt", "yuv420p", str(path)],
        check=True,
    )  # fmt: skip
    info = probe(path)
    assert (info.frames, info.fps, info.width, info.height) == (10, 25.0, 64, 48)
    assert info.metadata == {"title": "Plain; title=yes", "comment": "hello"}


# fit_to_size


@pytest.fixture(scope="module")
def noisy_mp4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-second noisy clip of a few hundred KB."""
    path = tmp_path_factory.mktemp("noisy") / "noisy.mp4"
    return encode_mp4(noise_clip(60, 96, 128), path, metadata=METADATA)


def test_fit_to_size_makes_a_big_video_fit_and_keeps_its_frames(
    tmp_path: Path, noisy_mp4: Path
) -> None:
    size = noisy_mp4.stat().st_size
    assert size > 200_000
    limit = size // 3

    out = fit_to_size(noisy_mp4, tmp_path / "small.mp4", limit)

    assert limit * 0.95 <= out.stat().st_size <= limit  # the bytes allowed are used on quality
    before, after = probe(noisy_mp4), probe(out)
    assert (after.frames, after.fps, after.duration) == (before.frames, before.fps, before.duration)
    assert after.metadata == METADATA
    assert read_frames(out).shape[0] == 60
    assert [p.name for p in tmp_path.iterdir()] == ["small.mp4"]


def test_fit_to_size_shrinks_the_picture_when_the_bitrate_alone_would_not_do(
    tmp_path: Path,
) -> None:
    # Fine grain at 416x240, 30 frames, about 1 MB; 10 kB leaves the full
    # picture about 0.015 bits per pixel, too few: a smaller picture looks better.
    grain = np.random.default_rng(0).normal(128, 12, (30, 240, 416, 3))
    src = encode_mp4(np.clip(grain, 0, 255).astype(np.uint8), tmp_path / "grain.mp4")
    limit = 10_000
    out = fit_to_size(src, tmp_path / "small.mp4", limit)
    info = probe(out)
    assert out.stat().st_size <= limit
    assert (info.frames, info.duration) == (30, 1.0)
    assert info.width < 416 and info.height < 240
    assert info.width % 2 == 0 and info.height % 2 == 0
    assert info.width / info.height == pytest.approx(416 / 240, rel=0.05)


def test_fit_to_size_copies_a_video_that_already_fits(tmp_path: Path, noisy_mp4: Path) -> None:
    out = fit_to_size(noisy_mp4, tmp_path / "same.mp4", noisy_mp4.stat().st_size)
    assert out.read_bytes() == noisy_mp4.read_bytes()
    assert fit_to_size(out, out, 10**9) == out  # in place: nothing to do


@pytest.mark.parametrize("limit", [500, 1500])
def test_an_impossible_limit_raises_video_too_large(
    tmp_path: Path, noisy_mp4: Path, limit: int
) -> None:
    # 500 bytes is less than the file's index; 1500 leaves frames a few bytes each.
    dst = tmp_path / "out.mp4"
    dst.write_bytes(b"previous")
    with pytest.raises(VideoTooLarge, match=f"cannot fit in {limit} bytes"):
        fit_to_size(noisy_mp4, dst, limit)
    assert dst.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]


def test_fit_to_size_refuses_a_non_positive_limit(tmp_path: Path, noisy_mp4: Path) -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        fit_to_size(noisy_mp4, tmp_path / "x.mp4", 0)


def colour_line(path: Path) -> str:
    """ffmpeg's description of the first video stream (its colour tags among them)."""
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True)
    return next(line for line in proc.stderr.decode().splitlines() if "Video:" in line)


def test_every_file_is_tagged_bt709_throughout(tmp_path: Path, noisy_mp4: Path) -> None:
    """Matrix, primaries and transfer all BT.709 (ffmpeg prints `bt709` once when the
    three agree, `bt709/unknown/unknown` when only the matrix is set)."""
    fitted = fit_to_size(noisy_mp4, tmp_path / "small.mp4", noisy_mp4.stat().st_size // 2)
    for path in (noisy_mp4, fitted):
        line = colour_line(path)
        assert "yuv420p(tv, bt709, progressive)" in line, line


def test_the_prompt_goes_to_ffmpeg_in_a_file_not_on_its_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every prompt would show in `ps` while its video encodes; and the file survives
    characters a command line cannot carry."""
    seen: list[list[str]] = []
    real_popen = subprocess.Popen

    def spying_popen(args, *rest, **kw):  # type: ignore[no-untyped-def]
        seen.append([str(a) for a in args])
        return real_popen(args, *rest, **kw)

    monkeypatch.setattr(subprocess, "Popen", spying_popen)
    metadata = {**METADATA, "prompt": "a secret plan --and=more\x1b[31m"}
    path = encode_mp4(gradient_clip(3, 32, 32), tmp_path / "v.mp4", metadata=metadata)
    assert seen and not any("secret plan" in arg for args in seen for arg in args)
    assert probe(path).metadata == metadata


def test_a_fitted_copy_is_not_starved_at_its_start(tmp_path: Path) -> None:
    """A rate control that finds its feet as it goes (one pass under a cap) gives the
    first second fewer bits than its content needs; two passes know the whole clip.
    The first 1.5 s here are grainy, the rest calm: the first second must come out
    better than the half second after it, which is as grainy."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:96, 0:160].astype(np.float32)
    clip = np.empty((300, 96, 160, 3), np.uint8)
    for f in range(300):
        rgb = np.stack(
            [128 + 100 * np.sin((x + 4 * f) / 17), 128 + 100 * np.cos((y - 3 * f) / 13),
             128 + 60 * np.sin((x + y + 5 * f) / 21)],
            axis=-1,
        )  # fmt: skip
        grain = rng.normal(0, 12, (96, 160, 1)) + (rng.normal(0, 30, rgb.shape) if f < 45 else 0)
        clip[f] = np.clip(rgb + grain, 0, 255).astype(np.uint8)
    src = encode_mp4(clip, tmp_path / "src.mp4")
    fitted = fit_to_size(src, tmp_path / "fit.mp4", src.stat().st_size // 6)
    decoded = read_frames(fitted).astype(np.float64)
    mse = ((decoded - clip.astype(np.float64)) ** 2).mean(axis=(1, 2, 3))
    psnr = 10 * np.log10(255**2 / mse)
    assert psnr[:30].mean() >= psnr[30:45].mean() + 0.3, (psnr[:30].mean(), psnr[30:45].mean())
