"""Checking a video a member sends with /animate (to continue it), and storing it.

The bot process reads videos through imageio-ffmpeg, as the worker does, and
decodes the whole file once (in a thread): a video that is too long, too large
in bytes or pixels, damaged half way or no video at all is refused now, with
the reason, not when its turn comes.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg

from bot.formatting import format_bytes
from bot.requests import UserError
from storage.files import DataDir, poster_of

# Containers the worker reads, by their first bytes.
MP4_BRAND = b"ftyp"  # at offset 4: MP4, MOV, M4V
MATROSKA = b"\x1aE\xdf\xa3"  # WebM, MKV
MIN_SIDE = 32


@dataclass(frozen=True)
class CheckedVideo:
    data: bytes
    suffix: str  # ".mp4" or ".webm"
    width: int
    height: int
    seconds: float
    frames: int


def is_video(data: bytes) -> bool:
    """Whether the bytes look like a video container the worker reads."""
    return data[4:8] == MP4_BRAND or data[:4] == MATROSKA


def check_video(
    data: bytes, *, max_bytes: int, max_seconds: float, max_pixels: int
) -> CheckedVideo:
    """Validate a video (to continue) or raise `UserError` saying what to change."""
    if len(data) > max_bytes:
        raise UserError(
            f"The video is {format_bytes(len(data))}; the most is {format_bytes(max_bytes)}. "
            "Send a shorter or smaller one."
        )
    if not is_video(data):
        raise UserError("That is not a video I can read. Send an MP4 or WebM video.")
    suffix = ".mp4" if data[4:8] == MP4_BRAND else ".webm"
    with tempfile.NamedTemporaryFile(suffix=suffix) as file:
        file.write(data)
        file.flush()
        try:
            reader = imageio_ffmpeg.read_frames(file.name)
            meta = next(reader)
            reader.close()
            frames, seconds = imageio_ffmpeg.count_frames_and_secs(file.name)
        except (RuntimeError, OSError, StopIteration, ValueError):
            raise UserError(
                "The video is damaged and cannot be read. Please send it again or try another."
            ) from None
    width, height = meta.get("size") or (0, 0)
    seconds = float(seconds or meta.get("duration") or 0.0)
    if not frames or width <= 0 or height <= 0:
        raise UserError("The video has no pictures I can read. Send an MP4 or WebM video.")
    if seconds > max_seconds:
        raise UserError(
            f"The video is {seconds:.0f} s long; the most I continue is {max_seconds:g} s. "
            "Send its last part."
        )
    if width * height > max_pixels:
        raise UserError(
            f"The video is {width}×{height}; the most is {max_pixels / 1e6:.1f} megapixels a "
            "frame. Send a smaller one (720p works)."
        )
    if min(width, height) < MIN_SIDE:
        raise UserError(f"The video is only {width}×{height}; send one at least {MIN_SIDE} px.")
    return CheckedVideo(data, suffix, width, height, seconds, int(frames))


def save_video(video: CheckedVideo, data: DataDir) -> Path:
    """Store a checked video in the data dir, under a new random name, and its last
    frame beside it (the picture its job's message shows: the video goes on from it)."""
    path = data.new_input_path(video.suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(video.data)
    poster = poster_of(path)
    # the frames of the last second, each written over the one before: the last stays
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-nostdin", "-y", "-sseof", "-1",
         "-i", str(path), "-update", "1", "-q:v", "3", str(poster)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return path
