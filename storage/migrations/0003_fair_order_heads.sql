-- 3: the fair order. Each user's earliest waiting job is their "head"; the
-- next job to run is always a head (rank 1), the one whose owner was served
-- least recently. Heads carry their owner's last-served time so the claim
-- reads one small partial index, whatever the queue's length.
ALTER TABLE users ADD COLUMN last_served_at REAL NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN queue_head INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN owner_served_at REAL NOT NULL DEFAULT 0;
UPDATE jobs SET queue_head = 1 WHERE status = 'queued' AND id IN (
    SELECT id FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY platform, user_id
                                                  ORDER BY queued_at, id) AS n
                    FROM jobs WHERE status = 'queued') WHERE n = 1);
CREATE INDEX jobs_heads ON jobs (owner_served_at, queued_at, id)
    WHERE status = 'queued' AND queue_head = 1;
