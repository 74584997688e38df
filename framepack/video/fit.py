"""A video that fits a byte limit (a platform's upload limit), re-encoded when needed.

Two-pass x264 at the average bitrate the limit allows: the first pass measures
where the video needs its bits, so the second spends them evenly over the whole
clip (a one-pass encode under a rate cap starves its first second while its
rate control finds its feet) and lands close to the size asked for. Then the
size is checked; in the rare miss the second pass is run again at a corrected
rate (the first pass's statistics stay valid).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path

from framepack.video.encode import DEFAULT_FPS
from framepack.video.ffmpeg import (
    COLOUR_FRAMES,
    COLOUR_TAGS,
    VideoError,
    atomic_path,
    run_ffmpeg,
    temp_beside,
)
from framepack.video.probe import Packets, packets


class VideoTooLarge(VideoError):
    """A video cannot be made to fit a byte limit."""


_TARGET = 0.975  # of the bytes left for frames: two-pass lands within about 2 % of its rate
_MIN_USE = 0.95  # a fit below this share of the limit is encoded once more at a higher rate
# Below both of these a smaller picture looks better than a starved one: under 0.01
# bits per pixel even two passes turn busy video to blocks (benchmarks/video.py: at
# 0.012-0.023 the full picture still scores the higher SSIM), and a quarter of what
# the source spent at CRF 16 is about CRF 28 whatever the content.
_MIN_BITS_PER_PIXEL = 0.01
_MIN_SHARE_OF_SOURCE = 0.25
_MIN_SIDE = 32
_MAX_SECOND_PASSES = 4


def fit_to_size(src: Path, dst: Path, max_bytes: int, *, preset: str = "medium") -> Path:
    """Write `src` to `dst` in at most `max_bytes`, re-encoding it if needed; return `dst`.

    Keeps the frame count, frame rate, duration and metadata; lowers the bitrate,
    and the resolution when the bitrate alone would ruin the picture. Raises
    VideoTooLarge when no encoding fits; `dst` is then left untouched.
    """
    src, dst = Path(src), Path(dst)
    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    size = src.stat().st_size
    if size <= max_bytes:
        if src.resolve() != dst.resolve():
            with atomic_path(dst) as tmp:
                shutil.copyfile(src, tmp)
        return dst

    stream = packets(src)
    frames = len(stream.sizes)
    # What is not frame data (file header, index, metadata) the re-encoded file
    # needs again, about as much: the same frames and the same tags.
    container = size - sum(stream.sizes)
    if max_bytes <= container:
        raise VideoTooLarge(
            f"{src.name} cannot fit in {max_bytes} bytes: the index and metadata of "
            f"its {frames} frames alone take {container} bytes"
        )
    seconds = float(stream.seconds) or frames / DEFAULT_FPS
    target = (max_bytes - container) * 8 * _TARGET / seconds  # bits a second
    scale = _start_scale(target, stream, fps=frames / seconds)
    tmp = temp_beside(dst)
    smallest = size
    try:
        while True:
            width, height = _scaled_size(stream.width, stream.height, scale)
            try:
                got = _two_pass(src, dst, tmp, max_bytes, container, target, width, height, preset)
            except VideoError:  # x264 cannot reach the rate at this size (its curve fails)
                got = None
            if got is not None and got <= max_bytes:
                return dst
            smallest = min(smallest, got or smallest)
            if min(width, height) <= _MIN_SIDE:
                break
            scale *= 0.8  # only fewer pixels can help now
    finally:
        tmp.unlink(missing_ok=True)
    raise VideoTooLarge(
        f"{src.name} ({frames} frames, {seconds:.2f} s) cannot fit in {max_bytes} bytes: "
        f"the smallest encoding, down to {width}x{height}, was {smallest} bytes"
    )


def _two_pass(
    src: Path,
    dst: Path,
    tmp: Path,
    max_bytes: int,
    container: int,
    bitrate: float,
    width: int,
    height: int,
    preset: str,
) -> int:
    """Encode at `width`x`height` aiming at `bitrate`; the size now at `dst` once one
    fits (else the smallest size tried, `dst` untouched)."""
    fitted = 0
    smallest = 0
    with tempfile.TemporaryDirectory(prefix="fpb-fit-") as scratch:
        log = str(Path(scratch) / "x264")
        _first_pass(src, log, bitrate=bitrate, width=width, height=height, preset=preset)
        for _ in range(_MAX_SECOND_PASSES):
            try:
                _second_pass(
                    src, tmp, log, bitrate=bitrate, width=width, height=height, preset=preset
                )
            except VideoError:
                if fitted:
                    break  # a rate it cannot reach: keep the one that fits
                raise
            got = tmp.stat().st_size
            smallest = got if not smallest else min(smallest, got)
            if got <= max_bytes:
                if got > fitted:
                    os.replace(tmp, dst)
                    fitted = got
                if fitted >= _MIN_USE * max_bytes:
                    break
            elif fitted:
                break  # the try for more quality overshot: keep the one that fits
            # aim at the target share of the limit from where this one landed
            bitrate *= (max_bytes - container) * _TARGET / max(1, got - container)
    return fitted or smallest


def _start_scale(bitrate: float, stream: Packets, *, fps: float) -> float:
    """The picture scale to begin with: the source's, or smaller while the bitrate would
    leave each pixel too few bits both in absolute terms and next to the source's."""
    frames = len(stream.sizes)
    source_bits_per_pixel = sum(stream.sizes) * 8 / (stream.width * stream.height * frames)
    floor = min(_MIN_BITS_PER_PIXEL, _MIN_SHARE_OF_SOURCE * source_bits_per_pixel)
    scale = 1.0
    while True:
        w, h = _scaled_size(stream.width, stream.height, scale)
        if bitrate / (w * h * fps) >= floor or min(w, h) <= _MIN_SIDE:
            return scale
        scale *= 0.8


def _scaled_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """`scale` times the size, each side even (yuv420p) and at least _MIN_SIDE."""

    def side(v: int) -> int:
        return max(_MIN_SIDE, 2 * math.floor(v * scale / 2))

    if scale >= 1.0:
        return width + width % 2, height + height % 2
    return min(side(width), width + width % 2), min(side(height), height + height % 2)


def _x264(bitrate: float, width: int, height: int, preset: str) -> list[str]:
    return [
        "-map", "0:v:0", "-an",
        # passthrough: never drop or duplicate a frame to hit a rate
        "-fps_mode", "passthrough",
        "-c:v", "libx264", "-preset", preset, "-b:v", f"{max(1, int(bitrate / 1000))}k",
        "-vf", f"scale={width}:{height}:flags=lanczos,format=yuv420p,{COLOUR_FRAMES}",
        *COLOUR_TAGS,
    ]  # fmt: skip


def _first_pass(
    src: Path, log: str, *, bitrate: float, width: int, height: int, preset: str
) -> None:
    run_ffmpeg(
        ["-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-i", str(src),
         *_x264(bitrate, width, height, preset), "-pass", "1", "-passlogfile", log,
         "-f", "null", os.devnull],
        what=f"analyse {src.name}",
    )  # fmt: skip


def _second_pass(
    src: Path, tmp: Path, log: str, *, bitrate: float, width: int, height: int, preset: str
) -> None:
    run_ffmpeg(
        ["-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-i", str(src),
         "-map_metadata", "0", *_x264(bitrate, width, height, preset),
         "-pass", "2", "-passlogfile", log, "-movflags", "+faststart", "-f", "mp4", str(tmp)],
        what=f"re-encode {src.name}",
    )  # fmt: skip
