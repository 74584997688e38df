"""Retention removes old files, never those of a job its owner has not received."""

from __future__ import annotations

import os
import time
from pathlib import Path

from storage.files import DataDir, write_atomic
from storage.records import JobParams
from storage.retention import remove_expired_files
from storage.store import JobStore
from tests.conftest import ManualClock


async def make_job(store: JobStore, data: DataDir, *, deliver: bool, status: str) -> int:
    src = write_atomic(data.new_input_path(), b"png")
    job = await store.enqueue(
        platform="telegram",
        user_id=f"u{src.stem}",
        chat_id="c",
        params=JobParams(prompt="p"),
        input_path=str(src),
    )
    claimed = await store.claim("w")
    assert claimed is not None and claimed.id == job.id
    for folder in data.job_dirs(job.id):
        folder.mkdir(parents=True)
        (folder / "f.bin").write_bytes(b"x")
    if status == "done":
        await store.complete(job.id, "w", result_path=str(data.videos_dir(job.id) / "f.bin"))
    else:
        await store.fail(job.id, "broken", worker_id="w")
    if deliver:
        assert await store.mark_delivered(job.id)
    return job.id


async def test_old_files_go_undelivered_stay(tmp_path: Path, clock: ManualClock) -> None:
    data = DataDir(tmp_path / "data")
    data.ensure()
    async with await JobStore.open(data.database, clock=clock) as store:
        delivered = await make_job(store, data, deliver=True, status="done")
        undelivered = await make_job(store, data, deliver=False, status="done")
        failed = await make_job(store, data, deliver=False, status="failed")
        orphan = write_atomic(data.new_input_path(), b"never queued")
        os.utime(orphan, (time.time() - 2 * 86400,) * 2)

        assert await remove_expired_files(store, data, older_than=3600) == 0  # too young
        clock.advance(7200)
        assert await remove_expired_files(store, data, older_than=3600) == 2
        for job_id in (delivered, failed):
            assert not any(d.exists() for d in data.job_dirs(job_id))
            assert not Path((await store.get(job_id)).input_path).exists()
        assert all(d.exists() for d in data.job_dirs(undelivered))
        assert Path((await store.get(undelivered)).input_path).exists()
        assert not orphan.exists()
        # once delivered, its files go on the next pass
        await store.mark_delivered(undelivered)
        assert await remove_expired_files(store, data, older_than=3600) == 1
        assert await remove_expired_files(store, data, older_than=3600) == 0
