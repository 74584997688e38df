"""A database of every earlier schema version migrates to the current one."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from storage.db import SCHEMA_VERSION, SchemaTooNew, migrate_sync, open_sync
from storage.records import JobStatus
from storage.store import JobStore

V1_JOB = (
    "INSERT INTO jobs (platform, user_id, chat_id, params, input_path, status, queued_at) "
    "VALUES ('telegram', ?, 'c', '{\"prompt\": \"old\", \"seconds\": 3}', '/i.png', ?, ?)"
)


def make_db_at(path: Path, version: int) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    migrate_sync(conn, target=version)
    if version >= 1:
        for n, (user, status) in enumerate(
            [("a", "queued"), ("a", "queued"), ("b", "queued"), ("c", "done")]
        ):
            conn.execute(V1_JOB, (user, status, 100.0 + n))
    assert conn.execute("PRAGMA user_version").fetchone()[0] == version
    conn.close()


@pytest.mark.parametrize("version", range(SCHEMA_VERSION))
async def test_every_earlier_version_migrates(tmp_path: Path, version: int) -> None:
    path = tmp_path / "old.sqlite3"
    make_db_at(path, version)
    async with await JobStore.open(path) as store:
        version_now = (await (await store.conn.execute("PRAGMA user_version")).fetchone())[0]
        assert version_now == SCHEMA_VERSION
        if version >= 1:
            # old jobs keep their data and their fair order: a, b, then a's second
            order = [(j.user_id, j.params.prompt) for j in await store.waiting()]
            assert order == [("a", "old"), ("b", "old"), ("a", "old")]
            job = await store.claim("w")
            assert job is not None and job.user_id == "a" and job.params.seconds == 3
            # a was served just now (recorded for owners the old file never
            # had a users row for), so b goes before a's second job
            assert [(await store.claim("w")).user_id for _ in range(2)] == ["b", "a"]
            assert (await store.get(4)).status is JobStatus.DONE


def test_migrating_twice_changes_nothing(tmp_path: Path) -> None:
    conn = open_sync(tmp_path / "db")
    assert migrate_sync(conn) == SCHEMA_VERSION
    conn.close()


def test_a_newer_database_is_refused(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "db", isolation_level=None)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(SchemaTooNew, match="upgrade framepack-bot"):
        migrate_sync(conn)
