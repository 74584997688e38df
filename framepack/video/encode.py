"""Frames (T, H, W, 3) uint8 as an H.264 MP4, piped to ffmpeg as raw RGB.

`+faststart` moves the index to the front so a player can start before the
whole file has arrived; the job's metadata travels in the container's tags.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from framepack.video.ffmpeg import (
    COLOUR_FRAMES,
    COLOUR_TAGS,
    VideoError,
    atomic_path,
    ffmpeg_exe,
    last_lines,
)

DEFAULT_FPS = 30
DEFAULT_CRF = 16
# CRF 0 makes libx264 lossless, which switches the stream to the High 4:4:4
# Predictive profile even for yuv420p; browsers, QuickTime and the Discord and
# Telegram players cannot decode that profile and show a black video.
MIN_CRF = 1
MAX_CRF = 51


def ffmetadata(metadata: Mapping[str, str]) -> str:
    """`metadata` as an FFMETADATA1 file: all of it as one JSON object in `comment` (the
    one free-text tag that MP4 players, exiftool and ffmpeg all read) and the prompt as
    `title` (players show it). A file, not `-metadata` arguments: a prompt on ffmpeg's
    command line would show in every `ps` while a video encodes."""
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"metadata must map str to str, got {key!r}: {value!r}")
    tags = {"comment": json.dumps(dict(metadata), ensure_ascii=False)}
    if "prompt" in metadata:
        tags["title"] = metadata["prompt"]
    lines = [";FFMETADATA1"]
    lines += [f"{_escape(key)}={_escape(value)}" for key, value in tags.items()]
    return "\n".join(lines) + "\n"


def _escape(text: str) -> str:
    for char in "\\=;#\n":
        text = text.replace(char, "\\" + char)
    return text


def encode_mp4(
    frames: np.ndarray,
    path: Path,
    *,
    fps: int = DEFAULT_FPS,
    crf: int = DEFAULT_CRF,
    metadata: Mapping[str, str] | None = None,
    preset: str = "medium",
) -> Path:
    """Encode RGB frames (T, H, W, 3) uint8 as an H.264 MP4 at `path`; return `path`.

    An odd width or height (yuv420p needs even ones) is padded by repeating the
    last column or row, so no picture is lost.
    """
    path = Path(path)
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8:
        raise TypeError("frames must be a uint8 numpy array")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape (T, H, W, 3), got {frames.shape}")
    if frames.shape[0] == 0:
        raise ValueError("frames must hold at least one frame")
    if isinstance(crf, bool) or not isinstance(crf, int) or not MIN_CRF <= crf <= MAX_CRF:
        raise ValueError(
            f"crf must be an integer from {MIN_CRF} to {MAX_CRF}, got {crf!r} "
            "(crf 0 is lossless H.264, which common players show as a black video)"
        )
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")

    _, height, width, _ = frames.shape
    pad = ((0, 0), (0, height % 2), (0, width % 2), (0, 0))
    if height % 2 or width % 2:
        frames = np.pad(frames, pad, mode="edge")
    height, width = frames.shape[1:3]

    with tempfile.TemporaryDirectory(prefix="fpb-encode-") as scratch:
        tags = Path(scratch) / "metadata.txt"
        tags.write_text(ffmetadata(metadata or {}), encoding="utf-8")
        _encode(frames, path, fps=fps, crf=crf, preset=preset, tags=tags)
    return path


def _encode(frames: np.ndarray, path: Path, *, fps: int, crf: int, preset: str, tags: Path) -> None:
    _, height, width, _ = frames.shape
    args = [
        "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(fps),
        "-i", "pipe:0",
        "-f", "ffmetadata", "-i", str(tags), "-map", "0:v", "-map_metadata", "1",
        "-an", "-c:v", "libx264", "-preset", preset, "-crf", str(crf),
        "-vf", f"scale=out_color_matrix=bt709:out_range=tv,format=yuv420p,{COLOUR_FRAMES}",
        *COLOUR_TAGS,
        "-movflags", "+faststart",
    ]  # fmt: skip
    with atomic_path(path) as tmp, tempfile.TemporaryFile() as stderr:
        # stderr to a file, not a pipe: a chatty ffmpeg cannot then block while
        # we are still writing frames to its stdin.
        proc = subprocess.Popen(
            [ffmpeg_exe(), *args, "-f", "mp4", str(tmp)],
            stdin=subprocess.PIPE,
            stderr=stderr,
        )
        assert proc.stdin is not None
        try:
            # One frame at a time: a long video's frames are gigabytes, and
            # frames.tobytes() would copy them all at once.
            for frame in frames:
                proc.stdin.write(np.ascontiguousarray(frame).data)
        except BrokenPipeError:
            pass  # ffmpeg died; its message is in stderr
        finally:
            proc.stdin.close()
            returncode = proc.wait()
        if returncode != 0:
            stderr.seek(0)
            raise VideoError(f"ffmpeg could not encode {path.name}: {last_lines(stderr.read())}")
