"""The one place that owns the connection policy and the schema.

WAL (readers never block the writer: the bot reads events while the worker
writes them), a busy timeout (the bot and the workers are separate processes
that take turns at the write lock), autocommit mode with explicit `BEGIN
IMMEDIATE` transactions (a claim takes the write lock before it reads, so two
processes cannot pick the same job), and numbered migrations recorded in
`PRAGMA user_version`.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import aiosqlite

BUSY_TIMEOUT_MS = 10_000
AUTOCHECKPOINT_PAGES = 20_000  # about 80 MB of WAL

# The statements that keep a user's head, shared by the triggers of migrations 4
# and 5 (NEW is the job that moved). Part of released migrations: never edit
# them; a change to the heads is a new migration.
_FIRST_WAITING = (
    "SELECT id FROM jobs WHERE platform = NEW.platform AND user_id = NEW.user_id "
    "AND status = 'queued' ORDER BY queued_at, id LIMIT 1"
)
_DEMOTE_OTHER_HEADS = (
    "UPDATE jobs SET queue_head = 0 WHERE platform = NEW.platform AND user_id = NEW.user_id "
    f"AND status = 'queued' AND queue_head = 1 AND id != ({_FIRST_WAITING});"
)
_PROMOTE_FIRST_WAITING = (
    "UPDATE jobs SET queue_head = 1, owner_served_at = COALESCE((SELECT last_served_at "
    "FROM users WHERE platform = NEW.platform AND user_id = NEW.user_id), 0) "
    f"WHERE queue_head = 0 AND id = ({_FIRST_WAITING});"
)

# Migration 5's. A user's served time lives on their head while they have
# waiting jobs, and in their users row only once they have none: a claim then
# writes no users row when its owner still waits (a tenth of a claim).
_CURRENT_SERVED = (
    "COALESCE((SELECT owner_served_at FROM jobs WHERE platform = NEW.platform "
    "AND user_id = NEW.user_id AND status = 'queued' AND queue_head = 1 LIMIT 1), "
    "(SELECT last_served_at FROM users WHERE platform = NEW.platform AND user_id = NEW.user_id), 0)"
)
# the served time a leaving job hands on: now if it was claimed, else its own as head
_LEAVING_SERVED = (
    "CASE WHEN NEW.status = 'running' THEN NEW.heartbeat_at ELSE OLD.owner_served_at END"
)
# a job that enters its owner's line: the first waiting one is the head (taking
# the served time from the head it may displace), and no other
_ON_ARRIVAL = (
    f"UPDATE jobs SET queue_head = 1, owner_served_at = {_CURRENT_SERVED} "
    f"WHERE queue_head = 0 AND id = ({_FIRST_WAITING});\n{_DEMOTE_OTHER_HEADS}"
)

# Migration N brings a database from version N-1 to N. Never edit a released
# one: append. Tests build a database at every earlier version and migrate it.
MIGRATIONS: tuple[str, ...] = (
    # 1: the queue itself
    """
    CREATE TABLE IF NOT EXISTS jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        platform TEXT NOT NULL,
        user_id TEXT NOT NULL,
        user_name TEXT NOT NULL DEFAULT '',
        chat_id TEXT NOT NULL,
        params TEXT NOT NULL,
        input_path TEXT NOT NULL,
        end_image_path TEXT,
        status TEXT NOT NULL DEFAULT 'queued',
        attempts INTEGER NOT NULL DEFAULT 0,
        worker_id TEXT,
        queued_at REAL NOT NULL,
        started_at REAL,
        heartbeat_at REAL,
        finished_at REAL,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        result_path TEXT,
        error TEXT,
        delivered_at REAL
    );
    CREATE INDEX IF NOT EXISTS jobs_by_user ON jobs (platform, user_id, status);
    CREATE TABLE IF NOT EXISTS events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        kind TEXT NOT NULL,
        data TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL
    );
    CREATE INDEX IF NOT EXISTS events_by_job ON events (job_id, id);
    CREATE TABLE IF NOT EXISTS users (
        platform TEXT NOT NULL,
        user_id TEXT NOT NULL,
        banned INTEGER NOT NULL DEFAULT 0,
        ban_reason TEXT NOT NULL DEFAULT '',
        overrides TEXT NOT NULL DEFAULT '{}',
        PRIMARY KEY (platform, user_id)
    );
    """,
    # 2: delivery copies, chat message references, timings for estimates,
    # platform data of the job's origin, queue flags
    """
    ALTER TABLE jobs ADD COLUMN upload_limit INTEGER;
    ALTER TABLE jobs ADD COLUMN delivery_path TEXT;
    ALTER TABLE jobs ADD COLUMN origin TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE jobs ADD COLUMN files_removed INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX IF NOT EXISTS jobs_user_waiting ON jobs (platform, user_id, queued_at, id)
        WHERE status = 'queued';
    CREATE INDEX IF NOT EXISTS jobs_running ON jobs (heartbeat_at) WHERE status = 'running';
    CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
    CREATE TABLE IF NOT EXISTS chat_messages (
        job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
        platform TEXT NOT NULL,
        chat_id TEXT NOT NULL,
        message_id TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT '{}',
        updated_at REAL NOT NULL,
        PRIMARY KEY (job_id, platform)
    );
    CREATE TABLE IF NOT EXISTS timings (
        job_id INTEGER PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
        model TEXT NOT NULL,
        video_seconds REAL NOT NULL,
        steps INTEGER NOT NULL,
        sections INTEGER NOT NULL,
        render_seconds REAL NOT NULL,
        step_seconds REAL NOT NULL,
        finished_at REAL NOT NULL
    );
    CREATE INDEX IF NOT EXISTS timings_recent ON timings (finished_at);
    CREATE TABLE IF NOT EXISTS flags (name TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # 3: the fair order. Each user's earliest waiting job is their "head";
    # the next job to run is always a head (rank 1), the one whose owner was
    # served least recently. Heads carry their owner's last-served time so the
    # claim reads one small partial index, whatever the queue's length.
    """
    ALTER TABLE users ADD COLUMN last_served_at REAL NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN queue_head INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN owner_served_at REAL NOT NULL DEFAULT 0;
    UPDATE jobs SET queue_head = 1 WHERE status = 'queued' AND id IN (
        SELECT id FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY platform, user_id
                                                      ORDER BY queued_at, id) AS n
                        FROM jobs WHERE status = 'queued') WHERE n = 1);
    CREATE INDEX jobs_heads ON jobs (owner_served_at, queued_at, id)
        WHERE status = 'queued' AND queue_head = 1;
    """,
    # 4: the database keeps the heads and the served times itself. Whatever
    # statement moves a job into or out of the queue, these triggers keep one
    # head per waiting user (their earliest job), so no code path can forget
    # it, and a claim is one UPDATE that SQLite runs under its write lock: no
    # round trips from Python between picking a job and taking it. The heads
    # are rebuilt first, so the triggers start from a consistent state.
    f"""
    UPDATE jobs SET queue_head = 0 WHERE queue_head = 1;
    UPDATE jobs SET queue_head = 1, owner_served_at = COALESCE((
            SELECT last_served_at FROM users AS u
            WHERE u.platform = jobs.platform AND u.user_id = jobs.user_id), 0)
    WHERE status = 'queued' AND id IN (
        SELECT id FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY platform, user_id
                                                      ORDER BY queued_at, id) AS n
                        FROM jobs WHERE status = 'queued') WHERE n = 1);
    CREATE TRIGGER jobs_enqueued AFTER INSERT ON jobs WHEN NEW.status = 'queued'
    BEGIN
        {_DEMOTE_OTHER_HEADS}
        {_PROMOTE_FIRST_WAITING}
    END;
    -- A job back in the queue (its worker died or stopped) keeps its place in
    -- time, so it may come before its owner's current head.
    CREATE TRIGGER jobs_requeued AFTER UPDATE OF status ON jobs
    WHEN NEW.status = 'queued' AND OLD.status != 'queued'
    BEGIN
        {_DEMOTE_OTHER_HEADS}
        {_PROMOTE_FIRST_WAITING}
    END;
    -- A job leaves the queue (claimed, cancelled, failed): a claim records
    -- when its owner was served (the round-robin key), then the owner's next
    -- waiting job becomes their head. Leaving code sets queue_head = 0.
    CREATE TRIGGER jobs_left_queue AFTER UPDATE OF status ON jobs
    WHEN OLD.status = 'queued' AND NEW.status != 'queued'
    BEGIN
        INSERT INTO users (platform, user_id, last_served_at)
        SELECT NEW.platform, NEW.user_id, NEW.heartbeat_at WHERE NEW.status = 'running'
        ON CONFLICT (platform, user_id) DO UPDATE SET last_served_at = excluded.last_served_at;
        {_PROMOTE_FIRST_WAITING}
    END;
    """,
    # 5: a cheaper claim (benchmarks/queue.py), same order.
    # - A user's jobs indexed by time instead of by status: every claim and
    #   every end of a job moved the job in the old index (a delete and an
    #   insert). The per-user questions that need a status read the partial
    #   indexes of the waiting and running jobs. No platform in the key, so
    #   the planner keeps using jobs_user_waiting for a user's first waiting
    #   job (with both it took this one and walked the user's history).
    # - The served time moves with the head (see _CURRENT_SERVED): a job that
    #   arrives or comes back first in its owner's line takes the head and the
    #   served time of the one it displaces; a leaving head hands its served
    #   time (or, when claimed, now) to the next job, or to the users row when
    #   none is left. Every owner of a job has a users row from their first job
    #   on, so that is a plain UPDATE.
    f"""
    DROP INDEX IF EXISTS jobs_by_user;
    CREATE INDEX jobs_of_user ON jobs (user_id, queued_at);
    INSERT OR IGNORE INTO users (platform, user_id) SELECT DISTINCT platform, user_id FROM jobs;
    CREATE TRIGGER jobs_owner_known AFTER INSERT ON jobs
    BEGIN
        INSERT OR IGNORE INTO users (platform, user_id) VALUES (NEW.platform, NEW.user_id);
    END;
    DROP TRIGGER jobs_enqueued;
    DROP TRIGGER jobs_requeued;
    DROP TRIGGER jobs_left_queue;
    CREATE TRIGGER jobs_enqueued AFTER INSERT ON jobs WHEN NEW.status = 'queued'
    BEGIN
        {_ON_ARRIVAL}
    END;
    CREATE TRIGGER jobs_requeued AFTER UPDATE OF status ON jobs
    WHEN NEW.status = 'queued' AND OLD.status != 'queued'
    BEGIN
        {_ON_ARRIVAL}
    END;
    CREATE TRIGGER jobs_left_queue AFTER UPDATE OF status ON jobs
    WHEN OLD.status = 'queued' AND NEW.status != 'queued'
    BEGIN
        UPDATE jobs SET queue_head = 1, owner_served_at = {_LEAVING_SERVED}
        WHERE queue_head = 0 AND id = ({_FIRST_WAITING});
        UPDATE users SET last_served_at = {_LEAVING_SERVED}
        WHERE platform = NEW.platform AND user_id = NEW.user_id AND NOT EXISTS (
            SELECT 1 FROM jobs WHERE platform = NEW.platform AND user_id = NEW.user_id
            AND status = 'queued');
    END;
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)


class SchemaTooNew(RuntimeError):
    """The database was written by a newer framepack-bot."""


def migrate_sync(conn: sqlite3.Connection, target: int = SCHEMA_VERSION) -> int:
    """Apply the migrations up to `target`; return the version before. Idempotent."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"the database is at schema version {version}; this framepack-bot knows up to "
            f"{SCHEMA_VERSION}: upgrade framepack-bot"
        )
    for number in range(version + 1, target + 1):
        # executescript commits first; the migration and its version bump are
        # one transaction so a crash never leaves a half-migrated file.
        conn.executescript(
            f"BEGIN IMMEDIATE;\n{MIGRATIONS[number - 1]}\nPRAGMA user_version = {number};\nCOMMIT;"
        )
    return version


def _configure(conn: sqlite3.Connection) -> None:
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    # NORMAL is durable across process crashes in WAL mode (only an OS crash
    # can lose the last transactions), and much faster than FULL.
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    # A checkpoint inside a claim costs milliseconds (it copies the WAL into
    # the database and syncs it). The long-running processes checkpoint when
    # they are idle (`checkpoint`); this bound only keeps the WAL from growing
    # without end when nobody does.
    conn.execute(f"PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_PAGES}")


def open_sync(path: Path | str) -> sqlite3.Connection:
    """A configured, migrated blocking connection (for the worker's thread and tools)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
    _configure(conn)
    migrate_sync(conn)
    return conn


async def connect(path: Path | str) -> aiosqlite.Connection:
    """A configured, migrated connection in autocommit mode."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = await aiosqlite.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
    conn.row_factory = aiosqlite.Row
    try:
        # aiosqlite runs these in the connection's own thread
        await conn._execute(_configure, conn._conn)
        await conn._execute(migrate_sync, conn._conn)
    except BaseException:
        await conn.close()
        raise
    return conn


def checkpoint(conn: sqlite3.Connection) -> None:
    """Copy the WAL into the database without waiting for readers (PASSIVE)."""
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
