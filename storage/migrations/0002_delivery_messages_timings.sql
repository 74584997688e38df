-- 2: delivery copies, chat message references, timings for estimates,
-- platform data of the job's origin, queue flags.
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
