"""What a video file holds, read through ffmpeg (imageio-ffmpeg ships no ffprobe):
one packet per frame from the `framecrc` muxer (exact, no decoding) and the
tags from the `ffmetadata` muxer."""

from __future__ import annotations

import json
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from framepack.video.ffmpeg import VideoError, run_ffmpeg

# Container tags that ffmpeg writes on its own; they are not the caller's metadata.
_STRUCTURAL_TAGS = frozenset({"major_brand", "minor_version", "compatible_brands", "encoder"})


@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds, read from its container without decoding."""

    frames: int
    fps: float
    width: int
    height: int
    duration: float  # seconds, from the first frame's start to the last frame's end
    metadata: dict[str, str]  # what encode_mp4 was given, or the container's own tags


@dataclass(frozen=True)
class Packets:
    """The first video stream's packets as the container indexes them (one per frame in MP4)."""

    width: int
    height: int
    seconds: Fraction  # first packet's start to last packet's end
    sizes: tuple[int, ...]  # bytes of each packet


def packets(path: Path) -> Packets:
    # Stream copy into framecrc: one line per packet with its timestamps and
    # size, nothing decoded, so even a long video is read in milliseconds.
    out = run_ffmpeg(
        ["-v", "error", "-nostdin", "-i", str(path), "-map", "0:v:0", "-c", "copy",
         "-f", "framecrc", "pipe:1"],
        what=f"read {path.name}",
    ).stdout.decode()  # fmt: skip
    time_base = Fraction(1)
    width = height = 0
    starts: list[int] = []
    ends: list[int] = []
    sizes: list[int] = []
    for line in out.splitlines():
        if line.startswith("#tb 0:"):
            time_base = Fraction(line.split(":", 1)[1].strip())
        elif line.startswith("#dimensions 0:"):
            width, height = (int(v) for v in line.split(":", 1)[1].strip().split("x"))
        elif line and not line.startswith("#"):
            # stream_index, dts, pts, duration, size, checksum[, flags]
            _, _, pts, duration, size, *_ = (field.strip() for field in line.split(","))
            starts.append(int(pts))
            ends.append(int(pts) + int(duration))
            sizes.append(int(size))
    if not starts:
        raise VideoError(f"{path.name} holds no video frames")
    seconds = (max(ends) - min(starts)) * time_base
    return Packets(width=width, height=height, seconds=seconds, sizes=tuple(sizes))


def probe(path: Path) -> VideoInfo:
    """Frame count, rate, size, duration and metadata of the first video stream."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(path)
    found = packets(path)
    frames = len(found.sizes)
    return VideoInfo(
        frames=frames,
        fps=float(frames / found.seconds) if found.seconds > 0 else 0.0,
        width=found.width,
        height=found.height,
        duration=float(found.seconds),
        metadata=_read_metadata(path),
    )


def _read_metadata(path: Path) -> dict[str, str]:
    out = run_ffmpeg(
        ["-v", "error", "-nostdin", "-i", str(path), "-f", "ffmetadata", "pipe:1"],
        what=f"read the metadata of {path.name}",
    ).stdout.decode("utf-8", "replace")
    tags = {k: v for k, v in _parse_ffmetadata(out).items() if k not in _STRUCTURAL_TAGS}
    try:
        ours = json.loads(tags.get("comment", ""))
    except json.JSONDecodeError:
        return tags
    if isinstance(ours, dict) and all(isinstance(v, str) for v in ours.values()):
        return ours  # written by encode_mp4: give back exactly what it was given
    return tags


def _parse_ffmetadata(text: str) -> dict[str, str]:
    """The global tags of ffmpeg's FFMETADATA1 text (`\\` escapes `=`, `;`, `#`, `\\`, newline)."""
    tags: dict[str, str] = {}
    buf: list[str] = []
    key: str | None = None
    escaped = comment = False
    for c in text:
        if comment:
            comment = c != "\n"
        elif escaped:
            buf.append(c)
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == "\n":
            if key is not None:
                tags[key] = "".join(buf)
            elif buf[:1] == ["["]:
                break  # stream and chapter sections follow the global tags
            buf, key = [], None
        elif c in ";#" and key is None and not buf:
            comment = True
        elif c == "=" and key is None:
            key, buf = "".join(buf), []
        else:
            buf.append(c)
    if key is not None:
        tags[key] = "".join(buf)
    return tags


def read_frames(path: Path) -> np.ndarray:
    """Decode every frame of the first video stream as (T, H, W, 3) uint8 RGB."""
    path = Path(path)
    info = probe(path)
    out = run_ffmpeg(
        ["-v", "error", "-nostdin", "-i", str(path), "-map", "0:v:0",
         "-vf", "scale=in_color_matrix=auto:in_range=auto",
         "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"],
        what=f"decode {path.name}",
    ).stdout  # fmt: skip
    frame_bytes = info.width * info.height * 3
    if len(out) % frame_bytes:
        raise VideoError(
            f"{path.name}: decoded {len(out)} bytes, not whole {info.width}x{info.height} frames"
        )
    return np.frombuffer(out, np.uint8).reshape(-1, info.height, info.width, 3).copy()


def read_clip(path: Path, *, width: int, height: int, fps: int) -> np.ndarray:
    """Decode a video as (T, width x height, 3) uint8 RGB at `fps` frames a second: scaled
    to cover the size and centre-cropped, as a picture is cropped to its bucket (Lanczos,
    as the pictures), with frames dropped or repeated to meet `fps` (ffmpeg's `fps`
    filter), upright as its rotation tag says. Decoded and scaled by ffmpeg in one
    stream: a long 1080p video never sits in memory at full size."""
    path = Path(path)
    scale = (
        f"fps={fps},scale={width}:{height}:force_original_aspect_ratio=increase:flags=lanczos"
        f":in_color_matrix=auto:in_range=auto,crop={width}:{height},setsar=1"
    )
    out = run_ffmpeg(
        ["-v", "error", "-nostdin", "-i", str(path), "-map", "0:v:0", "-vf", scale,
         "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"],
        what=f"decode {path.name}",
    ).stdout  # fmt: skip
    frame_bytes = width * height * 3
    if not out or len(out) % frame_bytes:
        raise VideoError(f"{path.name}: no whole {width}x{height} frames could be decoded")
    return np.frombuffer(out, np.uint8).reshape(-1, height, width, 3).copy()


# fit_to_size: one-pass ABR under a VBV cap, checked and retried; two-pass would
