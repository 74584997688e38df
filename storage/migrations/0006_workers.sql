-- 6: what each worker is doing (starting, downloading or loading the model,
-- ready, rendering), written by the worker with its heartbeat, for the host's
-- page and the chats; and every restart of a worker that died, written by the
-- supervisor of `framepack-bot run`.
CREATE TABLE IF NOT EXISTS workers (
    worker_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '{}',
    started_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS workers_recent ON workers (updated_at);
CREATE TABLE IF NOT EXISTS worker_restarts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    exit_code INTEGER,
    uptime REAL NOT NULL,
    delay REAL NOT NULL,
    at REAL NOT NULL
);
