"""MP4 files through the ffmpeg binary that imageio-ffmpeg bundles.

Frames are numpy arrays (T, H, W, 3) uint8 piped to ffmpeg as raw RGB; this
module imports no torch so that the bot process can probe and shrink videos.
imageio-ffmpeg ships ffmpeg but not ffprobe, so `probe` reads the container
through ffmpeg itself: one packet per frame from the `framecrc` muxer (exact,
no decoding) and the tags from the `ffmetadata` muxer.

Every file is written to a temporary name in the destination folder and
renamed into place, so a reader (the bot uploading a partial video) never sees
half a file.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from pathlib import Path

import numpy as np

DEFAULT_FPS = 30
DEFAULT_CRF = 16
# CRF 0 makes libx264 lossless, which switches the stream to the High 4:4:4
# Predictive profile even for yuv420p; browsers, QuickTime and the Discord and
# Telegram players cannot decode that profile and show a black video.
MIN_CRF = 1
MAX_CRF = 51

# Container tags that ffmpeg writes on its own; they are not the caller's metadata.
_STRUCTURAL_TAGS = frozenset({"major_brand", "minor_version", "compatible_brands", "encoder"})


class VideoError(RuntimeError):
    """ffmpeg failed or a file is not a readable video."""


class VideoTooLarge(VideoError):
    """A video cannot be made to fit a byte limit."""


@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds, read from its container without decoding."""

    frames: int
    fps: float
    width: int
    height: int
    duration: float  # seconds, from the first frame's start to the last frame's end
    metadata: dict[str, str]  # what encode_mp4 was given, or the container's own tags


@cache
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary bundled with imageio-ffmpeg."""
    import imageio_ffmpeg  # imported here: its import looks for the binary

    return imageio_ffmpeg.get_ffmpeg_exe()


def _run(args: Sequence[str], *, what: str) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run([ffmpeg_exe(), *args], capture_output=True, check=False)
    if proc.returncode != 0:
        raise VideoError(f"ffmpeg could not {what}: {_last_lines(proc.stderr)}")
    return proc


def _last_lines(stderr: bytes, n: int = 5) -> str:
    lines = stderr.decode("utf-8", "replace").strip().splitlines()
    return " | ".join(lines[-n:]) or "no message"


def _temp_beside(dst: Path) -> Path:
    """A fresh temporary name in `dst`'s folder for a file that will be renamed to `dst`."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    # The same folder keeps the rename on one file system (atomic); the dot
    # keeps the partial file out of listings that skip hidden files.
    return dst.with_name(f".{dst.stem}.{uuid.uuid4().hex[:8]}.tmp{dst.suffix}")


@contextmanager
def atomic_path(dst: Path) -> Iterator[Path]:
    """Yield a temporary path beside `dst`; rename it to `dst` if the block succeeds."""
    tmp = _temp_beside(dst)
    try:
        yield tmp
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


# H.264 in yuv420p, tagged BT.709 (what players assume for video) so the colours
# come back as they went in; `+faststart` moves the index to the front so a
# player can start before the whole file has arrived.
_COLOUR_TAGS = (
    "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709",
    "-color_range", "tv",
)  # fmt: skip


def _metadata_args(metadata: Mapping[str, str] | None) -> list[str]:
    if not metadata:
        return []
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"metadata must map str to str, got {key!r}: {value!r}")
    # All of it as one JSON object in `comment`, the one free-text tag that MP4
    # players, exiftool and ffmpeg all read; `title` shows the prompt in players.
    args = ["-metadata", "comment=" + json.dumps(dict(metadata), ensure_ascii=False)]
    if "prompt" in metadata:
        args += ["-metadata", "title=" + metadata["prompt"]]
    return args


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

    args = [
        "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(fps),
        "-i", "pipe:0",
        "-an", "-c:v", "libx264", "-preset", preset, "-crf", str(crf),
        "-vf", "scale=out_color_matrix=bt709:out_range=tv,format=yuv420p",
        *_COLOUR_TAGS,
        "-movflags", "+faststart",
        *_metadata_args(metadata),
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
            raise VideoError(f"ffmpeg could not encode {path.name}: {_last_lines(stderr.read())}")
    return path


@dataclass(frozen=True)
class _Packets:
    """The first video stream's packets as the container indexes them (one per frame in MP4)."""

    width: int
    height: int
    seconds: Fraction  # first packet's start to last packet's end
    sizes: tuple[int, ...]  # bytes of each packet


def _packets(path: Path) -> _Packets:
    # Stream copy into framecrc: one line per packet with its timestamps and
    # size, nothing decoded, so even a long video is read in milliseconds.
    out = _run(
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
    return _Packets(width=width, height=height, seconds=seconds, sizes=tuple(sizes))


def probe(path: Path) -> VideoInfo:
    """Frame count, rate, size, duration and metadata of the first video stream."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(path)
    packets = _packets(path)
    frames = len(packets.sizes)
    return VideoInfo(
        frames=frames,
        fps=float(frames / packets.seconds) if packets.seconds > 0 else 0.0,
        width=packets.width,
        height=packets.height,
        duration=float(packets.seconds),
        metadata=_read_metadata(path),
    )


def _read_metadata(path: Path) -> dict[str, str]:
    out = _run(
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
    out = _run(
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


# fit_to_size: one-pass ABR under a VBV cap, checked and retried; two-pass would
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

    packets = _packets(src)
    frames = len(packets.sizes)
    # What is not frame data (file header, index, metadata) the re-encoded
    # file needs again, about as much: the same frames and the same tags.
    container = size - sum(packets.sizes)
    if max_bytes <= container:
        raise VideoTooLarge(
            f"{src.name} cannot fit in {max_bytes} bytes: the index and metadata of "
            f"its {frames} frames alone take {container} bytes"
        )
    seconds = float(packets.seconds) or frames / DEFAULT_FPS
    fps = frames / seconds
    bitrate = (max_bytes - container) * 8 * _SAFETY / (seconds + _VBV_SECONDS * _VBV_INIT)
    source_bits_per_pixel = sum(packets.sizes) * 8 / (packets.width * packets.height * frames)
    floor = min(_MIN_BITS_PER_PIXEL, _MIN_SHARE_OF_SOURCE * source_bits_per_pixel)
    scale = 1.0
    smallest = size
    fitted = 0  # bytes of the encoding now at dst; 0 while none fits
    raised = False  # whether the bitrate was raised after a fit that left bytes unused
    attempts = 0
    tmp = _temp_beside(dst)
    try:
        for _ in range(_MAX_ATTEMPTS):
            # Shrink the picture while the bitrate leaves each pixel too few
            # bits both in absolute terms and next to what the source spent.
            while True:
                width, height = _scaled_size(packets.width, packets.height, scale)
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
    _run(
        [
            "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-i", str(src),
            "-map", "0:v:0", "-map_metadata", "0", "-an",
            # passthrough: never drop or duplicate a frame to hit a rate
            "-fps_mode", "passthrough",
            "-c:v", "libx264", "-preset", preset,
            "-b:v", f"{kbps}k", "-maxrate", f"{kbps}k",
            "-bufsize", f"{kbps * _VBV_SECONDS:.0f}k", "-x264-params", f"vbv-init={_VBV_INIT}",
            "-vf", f"scale={width}:{height}:flags=lanczos,format=yuv420p",
            *_COLOUR_TAGS,
            "-movflags", "+faststart",
            "-f", "mp4", str(tmp),
        ],
        what=f"re-encode {src.name}",
    )  # fmt: skip


def encode_poster(frame: np.ndarray, path: Path, *, max_side: int = 320, quality: int = 85) -> Path:
    """Write one RGB frame (H, W, 3) uint8 as a JPEG thumbnail at most `max_side` wide or high.

    Telegram wants a video's thumbnail as a JPEG of at most 320 px a side.
    """
    from PIL import Image  # imported here: only the bot side makes posters

    path = Path(path)
    image = Image.fromarray(np.ascontiguousarray(frame), "RGB")
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    with atomic_path(path) as tmp:
        image.save(tmp, format="JPEG", quality=quality, optimize=True)
    return path
