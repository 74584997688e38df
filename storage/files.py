"""The file layout of the data dir.

```
data_dir/
  framepack-bot.sqlite3      the database (WAL: -wal and -shm beside it)
  inputs/<token>.jpg|.png|.webp  pictures as checked, written before the job is queued
  work/<job>/                the worker's checkpoints and partial videos (resume state)
  previews/<job>/            step previews (PNG) shown while it renders
  videos/<job>/              final.mp4, and a copy that fits the platform's upload limit
```
A job's files are named by its id, so retention and the two processes agree on
them without storing every path.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import uuid
from dataclasses import dataclass
from pathlib import Path

CHECKPOINT_NAME = "checkpoint.safetensors"
POSTER_SUFFIX = ".poster.jpg"  # beside an input video: the frame its message shows
VIDEO_SUFFIXES = (".mp4", ".webm")  # inputs that are videos to continue


def poster_of(input_path: str | Path) -> Path:
    """The picture a job whose input is a video shows (its last frame)."""
    return Path(f"{input_path}{POSTER_SUFFIX}")


def is_video_input(input_path: str | Path) -> bool:
    return Path(input_path).suffix.lower() in VIDEO_SUFFIXES


@dataclass(frozen=True)
class DataDir:
    root: Path

    @property
    def database(self) -> Path:
        return self.root / "framepack-bot.sqlite3"

    @property
    def inputs(self) -> Path:
        return self.root / "inputs"

    def new_input_path(self, suffix: str = ".png") -> Path:
        """A fresh name in inputs/ (the folder may not exist yet)."""
        return self.inputs / f"{uuid.uuid4().hex}{suffix}"

    @property
    def mag_ratios(self) -> Path:
        """MagCache ratio tables the host calibrated (`framepack-bot calibrate-cache`)."""
        return self.root / "mag_ratios"

    def work_dir(self, job_id: int) -> Path:
        return self.root / "work" / str(job_id)

    def checkpoint(self, job_id: int) -> Path:
        """The job's state after its last finished section: kept as long as its files,
        so that a finished video can be extended exactly (from its latents)."""
        return self.work_dir(job_id) / CHECKPOINT_NAME

    def previews_dir(self, job_id: int) -> Path:
        return self.root / "previews" / str(job_id)

    def videos_dir(self, job_id: int) -> Path:
        return self.root / "videos" / str(job_id)

    def job_dirs(self, job_id: int) -> list[Path]:
        return [self.work_dir(job_id), self.previews_dir(job_id), self.videos_dir(job_id)]

    def free_bytes(self) -> int:
        """Bytes free on the data dir's disk."""
        return shutil.disk_usage(self.root if self.root.exists() else self.root.parent).free

    def ensure(self) -> None:
        for sub in ("inputs", "work", "previews", "videos"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)


def write_atomic(path: Path, data: bytes) -> Path:
    """Write a file so that a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return path


class DiskFull(OSError):
    """The data dir's disk is full (a write failed, or the database could not grow)."""

    def __init__(self, detail: str = "no space left on the data dir's disk") -> None:
        super().__init__(errno.ENOSPC, detail)


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc`, or an error it was raised from, says the disk is full: an OSError
    (ENOSPC, or EDQUOT past a quota), SQLite's "database or disk is full", or a library's
    message that carries the OS's ("No space left on device", safetensors, ffmpeg)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(seen, sqlite3.OperationalError) and "full" in str(seen):
            return True
        if "No space left on device" in str(seen) or "os error 28" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
