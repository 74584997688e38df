"""Removing the files of old jobs: never a done job's video that was not
delivered yet (a bot that was down must still be able to send it)."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from storage.base import StoreBase
from storage.files import POSTER_SUFFIX, DataDir, poster_of
from storage.records import Job

if TYPE_CHECKING:
    from storage.store import JobStore

ORPHAN_INPUT_AGE = 24 * 3600.0  # an input no job refers to (a crash between write and queue)


class Retention(StoreBase):
    def expired_jobs(self, older_than: float) -> list[Job]:
        """Finished jobs whose files may go: never a done job not yet delivered."""
        return self._jobs(
            "WHERE files_removed = 0 AND finished_at < ? AND (status IN ('failed', 'cancelled') "
            "OR (status = 'done' AND delivered_at IS NOT NULL))",
            (self.clock() - older_than,),
        )

    def mark_files_removed(self, job_id: int) -> None:
        self.db.execute("UPDATE jobs SET files_removed = 1 WHERE id = ?", (job_id,))

    def referenced_inputs(self) -> set[str]:
        rows = self._all(
            "SELECT input_path AS p FROM jobs WHERE files_removed = 0 "
            "UNION SELECT end_image_path FROM jobs WHERE files_removed = 0 "
            "AND end_image_path IS NOT NULL"
        )
        return {r["p"] for r in rows}


async def remove_expired_files(store: JobStore, data: DataDir, older_than: float) -> int:
    """Remove the files of finished jobs older than `older_than` seconds, and inputs
    no job refers to; returns how many jobs lost their files."""
    removed = 0
    for job in await store.expired_jobs(older_than):
        await asyncio.to_thread(_remove_files, data, job)
        await store.mark_files_removed(job.id)
        removed += 1
    if data.inputs.is_dir():
        referenced = await store.referenced_inputs()
        await asyncio.to_thread(_remove_orphans, data, referenced)
    return removed


def _remove_files(data: DataDir, job: Job) -> None:
    for folder in data.job_dirs(job.id):
        shutil.rmtree(folder, ignore_errors=True)
    for name in (job.input_path, job.end_image_path):
        if name:
            Path(name).unlink(missing_ok=True)
            poster_of(name).unlink(missing_ok=True)


def _remove_orphans(data: DataDir, referenced: set[str]) -> None:
    cutoff = time.time() - ORPHAN_INPUT_AGE
    for path in data.inputs.iterdir():
        owner = str(path).removesuffix(POSTER_SUFFIX)  # a video's poster goes with it
        if owner not in referenced and path.stat().st_mtime < cutoff:
            path.unlink(missing_ok=True)


async def remove_job_files(store: JobStore, data: DataDir, job: Job) -> None:
    """Remove one finished job's video, previews and work files now (the host deleted
    it). Its pictures stay while another job (a re-roll) uses them; retention takes
    them once none does."""
    await asyncio.to_thread(_remove_job_dirs, data, job.id)
    await store.mark_files_removed(job.id)


def _remove_job_dirs(data: DataDir, job_id: int) -> None:
    for folder in data.job_dirs(job_id):
        shutil.rmtree(folder, ignore_errors=True)
