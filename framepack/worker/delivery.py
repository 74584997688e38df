"""A finished job's files in videos/<job>/: the final MP4 at full quality and,
when the job records an upload limit, a copy that fits it.

Runs off the GPU thread (re-encoding a long video takes a while); the worker
marks the job done only once the files it names exist.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from framepack.video.ffmpeg import atomic_path
from framepack.video.fit import VideoTooLarge, fit_to_size

FINAL_NAME = "final.mp4"
UPLOAD_NAME = "upload.mp4"


@dataclass(frozen=True)
class Delivery:
    final: Path
    upload: Path | None  # the file that fits the upload limit (maybe `final` itself)
    too_large: str | None = None  # why no copy fits, for the log and the done event


def place(video: Path, dst: Path) -> Path:
    """Put the engine's video at `dst` without copying it, atomically.

    A hard link: the engine's file (which the last section event names, and
    the bot may be uploading) stays where it is.
    """
    with atomic_path(dst) as tmp:
        try:
            os.link(video, tmp)
        except OSError:  # a file system without hard links
            shutil.copyfile(video, tmp)
    return dst


def deliver(video: Path, folder: Path, upload_limit: int | None) -> Delivery:
    """The final video in `folder`, and the copy that fits `upload_limit` bytes."""
    final = place(video, folder / FINAL_NAME)
    if upload_limit is None:
        return Delivery(final, None)
    if final.stat().st_size <= upload_limit:
        return Delivery(final, final)
    try:
        return Delivery(final, fit_to_size(final, folder / UPLOAD_NAME, upload_limit))
    except VideoTooLarge as exc:
        return Delivery(final, None, str(exc))
