"""The ffmpeg binary that imageio-ffmpeg bundles, and files that appear whole.

imageio-ffmpeg ships ffmpeg but not ffprobe, so every video operation here runs
ffmpeg itself. Every file is written to a temporary name in the destination
folder and renamed into place, so a reader (the bot uploading a partial video)
never sees half a file. Imports no torch.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path


class VideoError(RuntimeError):
    """ffmpeg failed or a file is not a readable video."""


@cache
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary bundled with imageio-ffmpeg."""
    import imageio_ffmpeg  # imported here: its import looks for the binary

    return imageio_ffmpeg.get_ffmpeg_exe()


def run_ffmpeg(args: Sequence[str], *, what: str) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run([ffmpeg_exe(), *args], capture_output=True, check=False)
    if proc.returncode != 0:
        raise VideoError(f"ffmpeg could not {what}: {last_lines(proc.stderr)}")
    return proc


def last_lines(stderr: bytes, n: int = 5) -> str:
    lines = stderr.decode("utf-8", "replace").strip().splitlines()
    return " | ".join(lines[-n:]) or "no message"


def temp_beside(dst: Path) -> Path:
    """A fresh temporary name in `dst`'s folder for a file that will be renamed to `dst`."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    # The same folder keeps the rename on one file system (atomic); the dot
    # keeps the partial file out of listings that skip hidden files.
    return dst.with_name(f".{dst.stem}.{uuid.uuid4().hex[:8]}.tmp{dst.suffix}")


@contextmanager
def atomic_path(dst: Path) -> Iterator[Path]:
    """Yield a temporary path beside `dst`; rename it to `dst` if the block succeeds."""
    tmp = temp_beside(dst)
    try:
        yield tmp
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


# H.264 in yuv420p, tagged BT.709 (what players assume for video) so the colours
# come back as they went in. The tags go on the frames too (a filter after the
# scale): the frames' own properties, which the scale filter leaves unset for
# primaries and transfer, override the stream options in the file's tags.
COLOUR_FRAMES = "setparams=color_primaries=bt709:color_trc=bt709:colorspace=bt709:range=tv"
COLOUR_TAGS = (
    "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709",
    "-color_range", "tv",
)  # fmt: skip
