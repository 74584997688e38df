"""A video that fits a byte limit (a platform's upload limit), re-encoded when needed."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

from framepack.video.encode import DEFAULT_FPS
from framepack.video.ffmpeg import COLOUR_TAGS, VideoError, atomic_path, run_ffmpeg, temp_beside
from framepack.video.probe import packets


class VideoTooLarge(VideoError):
    """A video cannot be made to fit a byte limit."""


# hit the target better but costs a full extra encode on every call.
_SAFETY = 0.95  # aim below the limit: one-pass rate control is not exact
# The rate cap is a VBV buffer of one second's bits that starts this full; a
# full buffer lets the first frames spend that much above the average rate,
# so the bitrate is chosen for the duration plus that much more.
_VBV_SECONDS = 1.0
_VBV_INIT = 0.5
# Below both of these a smaller picture looks better than a starved one: under
# 0.025 bits per pixel busy video turns to blocks, and a quarter of what the
# source spent at CRF 16 is about CRF 28 whatever the content.
_MIN_BITS_PER_PIXEL = 0.025
_MIN_SHARE_OF_SOURCE = 0.25
_MIN_SIDE = 32
_MAX_ATTEMPTS = 8
_WELL_USED = 0.8  # a fit below this share of the limit is tried once more at a higher rate


def fit_to_size(src: Path, dst: Path, max_bytes: int, *, preset: str = "medium") -> Path:
    """Write `src` to `dst` in at most `max_bytes`, re-encoding it if needed; return `dst`.

    Keeps the frame count, frame rate, duration and metadata; lowers the
    bitrate, and the resolution when the bitrate alone would ruin the picture.
    Raises VideoTooLarge when no attempt fits; `dst` is then left untouched.
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
    # What is not frame data (file header, index, metadata) the re-encoded
    # file needs again, about as much: the same frames and the same tags.
    container = size - sum(stream.sizes)
    if max_bytes <= container:
        raise VideoTooLarge(
            f"{src.name} cannot fit in {max_bytes} bytes: the index and metadata of "
            f"its {frames} frames alone take {container} bytes"
        )
    seconds = float(stream.seconds) or frames / DEFAULT_FPS
    fps = frames / seconds
    bitrate = (max_bytes - container) * 8 * _SAFETY / (seconds + _VBV_SECONDS * _VBV_INIT)
    source_bits_per_pixel = sum(stream.sizes) * 8 / (stream.width * stream.height * frames)
    floor = min(_MIN_BITS_PER_PIXEL, _MIN_SHARE_OF_SOURCE * source_bits_per_pixel)
    scale = 1.0
    smallest = size
    fitted = 0  # bytes of the encoding now at dst; 0 while none fits
    raised = False  # whether the bitrate was raised after a fit that left bytes unused
    attempts = 0
    tmp = temp_beside(dst)
    try:
        for _ in range(_MAX_ATTEMPTS):
            # Shrink the picture while the bitrate leaves each pixel too few
            # bits both in absolute terms and next to what the source spent.
            while True:
                width, height = _scaled_size(stream.width, stream.height, scale)
                bits_per_pixel = bitrate / (width * height * fps)
                if bits_per_pixel >= floor or min(width, height) <= _MIN_SIDE:
                    break
                scale *= 0.8
            _encode_bitrate(src, tmp, bitrate=bitrate, width=width, height=height, preset=preset)
            got = tmp.stat().st_size
            attempts += 1
            if got > max_bytes:
                if fitted:
                    return dst  # the try for more quality overshot: keep the one that fits
                if got >= 0.98 * smallest:
                    # A lower rate stopped helping (x264 is at its coarsest):
                    # only fewer pixels can help, down to the smallest picture.
                    if min(width, height) <= _MIN_SIDE:
                        smallest = min(smallest, got)
                        break
                    scale *= 0.8
                smallest = min(smallest, got)
                bitrate *= max_bytes / got * _SAFETY
                continue
            if got > fitted:
                os.replace(tmp, dst)
                fitted = got
            if fitted >= _WELL_USED * max_bytes or raised:
                return dst
            # One-pass rate control lands well under the rate on short clips:
            # spend the unused bytes on quality, once, going half the way (in
            # ratio) because on those clips the size grows faster than the rate.
            raised = True
            bitrate *= math.sqrt(max_bytes / got * _SAFETY)
        if fitted:
            return dst
    finally:
        tmp.unlink(missing_ok=True)
    raise VideoTooLarge(
        f"{src.name} ({frames} frames, {seconds:.2f} s) cannot fit in {max_bytes} bytes: "
        f"the smallest of {attempts} encodings, down to {width}x{height}, was {smallest} bytes"
    )


def _scaled_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """`scale` times the size, each side even (yuv420p) and at least _MIN_SIDE."""

    def side(v: int) -> int:
        return max(_MIN_SIDE, 2 * math.floor(v * scale / 2))

    if scale >= 1.0:
        return width + width % 2, height + height % 2
    return min(side(width), width + width % 2), min(side(height), height + height % 2)


def _encode_bitrate(
    src: Path, tmp: Path, *, bitrate: float, width: int, height: int, preset: str
) -> None:
    kbps = max(1, int(bitrate / 1000))
    run_ffmpeg(
        [
            "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-i", str(src),
            "-map", "0:v:0", "-map_metadata", "0", "-an",
            # passthrough: never drop or duplicate a frame to hit a rate
            "-fps_mode", "passthrough",
            "-c:v", "libx264", "-preset", preset,
            "-b:v", f"{kbps}k", "-maxrate", f"{kbps}k",
            "-bufsize", f"{kbps * _VBV_SECONDS:.0f}k", "-x264-params", f"vbv-init={_VBV_INIT}",
            "-vf", f"scale={width}:{height}:flags=lanczos,format=yuv420p",
            *COLOUR_TAGS,
            "-movflags", "+faststart",
            "-f", "mp4", str(tmp),
        ],
        what=f"re-encode {src.name}",
    )  # fmt: skip
