"""A database of every earlier schema version migrates to the current one, released
migrations never change, and a newer database is refused untouched."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from storage.db import MIGRATIONS_DIR, SCHEMA_VERSION, SchemaTooNew, migrate, open_database
from storage.records import JobStatus
from storage.store import JobStore

# Migrations that shipped: a database out there may be at any of these versions,
# so their SQL must never change (a change is a new migration). Add a line here
# when a migration is released.
RELEASED = {
    "0001_queue.sql": "16162e0a48b1d390cad67dc2808216aa3f3a3362be4ad0bc1246895f5d705ca2",
    "0002_delivery_messages_timings.sql": (
        "c5f6176397c0b84eb65a8aec3830821ad3eba1730138e95d14dc086de5f708fc"
    ),
    "0003_fair_order_heads.sql": "e3aeab7b9db6d89d651747c853cc138e6f0e33e48d87f13350a25f3e30fcddbe",
    "0004_head_triggers.sql": "e5f3859dec6a62baeb08568dc5f20a10412899fe78e2bdab492d75d2c0e1235b",
    "0005_cheaper_claim.sql": "e1ebcb5633fa098295e041e02f56b23944a2cfdc86d69b0269655d502d316b72",
    "0006_workers.sql": "a7514899a3368614c4270cd1d978955a42641c16876f05000b4b37ac67131a9e",
    "0007_timings_cache.sql": "efb27b9ec0fe3716fb80573b1412d3fa9eec027efa0cab8a3786715cd33cb21a",
}

V1_JOB = (
    "INSERT INTO jobs (platform, user_id, chat_id, params, input_path, status, queued_at) "
    "VALUES ('telegram', ?, 'c', '{\"prompt\": \"old\", \"seconds\": 3}', '/i.png', ?, ?)"
)


def test_released_migrations_never_change() -> None:
    files = {p.name: p for p in MIGRATIONS_DIR.glob("*.sql")}
    for name, digest in RELEASED.items():
        assert name in files, f"released migration {name} is gone"
        assert hashlib.sha256(files[name].read_bytes()).hexdigest() == digest, (
            f"{name} was released and must not change; write a new migration instead"
        )
    assert len(files) == SCHEMA_VERSION, "SCHEMA_VERSION is the number of migration files"


def make_db_at(path: Path, version: int) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, target=version)
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
        version_now = await store.run(
            lambda: store.core.db.execute("PRAGMA user_version").fetchone()[0]
        )
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
    conn = open_database(tmp_path / "db")
    assert migrate(conn) == SCHEMA_VERSION
    conn.close()


def test_a_newer_database_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(SchemaTooNew, match="upgrade framepack-bot"):
        open_database(path)
    assert path.read_bytes() == before
    assert not path.with_name("db-wal").exists()  # not switched to WAL


@pytest.mark.parametrize("command", ["run", "worker"])
def test_run_and_worker_refuse_a_newer_database_in_one_line(tmp_path: Path, command: str) -> None:
    import os
    import subprocess
    import sys

    data = tmp_path / "data"
    data.mkdir()
    path = data / "framepack-bot.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    before = path.read_bytes()
    config = tmp_path / "config.toml"
    config.write_text(
        f'[storage]\ndata_dir = "{data}"\n[model]\npreset = "tiny"\n[telegram]\nenabled = true\n'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "framepack_bot.cli", command, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TELEGRAM_BOT_TOKEN": "123:abc"},
        cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "upgrade framepack-bot" in proc.stderr
    assert path.read_bytes() == before and not path.with_name(path.name + "-wal").exists()
