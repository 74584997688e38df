"""The one place that owns the connection policy and the schema.

WAL (readers never block the writer: the bot reads events while the worker
writes them), a busy timeout (the bot and the workers are separate processes
that take turns at the write lock), autocommit mode with explicit `BEGIN
IMMEDIATE` transactions (a claim takes the write lock before it reads, so two
processes cannot pick the same job), and numbered migrations: literal SQL files
in `storage/migrations/`, applied in order and recorded in `PRAGMA user_version`.
"""

from __future__ import annotations

import sqlite3
from functools import cache
from pathlib import Path

BUSY_TIMEOUT_MS = 10_000
AUTOCHECKPOINT_PAGES = 20_000  # about 80 MB of WAL
MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# The schema this code reads and writes: the number of the last migration file.
SCHEMA_VERSION = 7


class SchemaTooNew(RuntimeError):
    """The database was written by a newer framepack-bot."""


@cache
def migrations() -> tuple[str, ...]:
    """The SQL of migration 1, 2, … (file `NNNN_name.sql` brings version N-1 to N)."""
    files = sorted(MIGRATIONS_DIR.glob("[0-9][0-9][0-9][0-9]_*.sql"))
    numbers = [int(f.name[:4]) for f in files]
    if numbers != list(range(1, len(files) + 1)) or len(files) != SCHEMA_VERSION:
        raise RuntimeError(
            f"{MIGRATIONS_DIR} must hold migrations 1 to {SCHEMA_VERSION}, found {numbers}"
        )
    return tuple(f.read_text(encoding="utf-8") for f in files)


def schema_version(conn: sqlite3.Connection) -> int:
    """The file's version; refuses one written by a newer framepack-bot (reads only)."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(
            f"the database is at schema version {version}; this framepack-bot knows up to "
            f"{SCHEMA_VERSION}: upgrade framepack-bot"
        )
    return version


def migrate(conn: sqlite3.Connection, target: int = SCHEMA_VERSION) -> int:
    """Apply the migrations up to `target`; return the version before. Idempotent."""
    version = schema_version(conn)
    for number in range(version + 1, target + 1):
        # executescript commits first; the migration and its version bump are one
        # transaction so a crash never leaves a half-migrated file.
        conn.executescript(
            f"BEGIN IMMEDIATE;\n{migrations()[number - 1]}\n"
            f"PRAGMA user_version = {number};\nCOMMIT;"
        )
    return version


def _configure(conn: sqlite3.Connection) -> None:
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    # NORMAL is durable across process crashes in WAL mode (only an OS crash
    # can lose the last transactions), and much faster than FULL.
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    # A checkpoint inside a claim costs milliseconds (it copies the WAL into the
    # database and syncs it). The long-running processes checkpoint when they
    # are idle (`checkpoint`); this bound only keeps the WAL from growing without
    # end when nobody does.
    conn.execute(f"PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_PAGES}")


def check_database(path: Path | str) -> int:
    """The schema version of the database at `path` (0 when there is none yet), read
    without writing; raises `SchemaTooNew` for a file from a newer framepack-bot."""
    path = Path(path)
    if not path.exists():
        return 0
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return schema_version(conn)
    finally:
        conn.close()


def open_database(path: Path | str) -> sqlite3.Connection:
    """A configured, migrated connection in autocommit mode.

    The schema is checked before anything is written: a file from a newer
    framepack-bot is refused as it was found (not even switched to WAL).
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
    try:
        schema_version(conn)
        _configure(conn)
        migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def checkpoint(conn: sqlite3.Connection) -> None:
    """Copy the WAL into the database without waiting for readers (PASSIVE)."""
    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
