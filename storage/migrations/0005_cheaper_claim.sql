-- 5: a cheaper claim, same order.
-- A user's jobs are indexed by time instead of by status: every claim and every
-- end of a job moved the job in the old index (a delete and an insert). The
-- per-user questions that need a status read the partial indexes of the waiting
-- and running jobs. No platform in the key, so the planner keeps using
-- jobs_user_waiting for a user's first waiting job.
-- The served time moves with the head: a job that arrives or comes back first in
-- its owner's line takes the head and the served time of the one it displaces;
-- a leaving head hands its served time (or, when claimed, now) to the next job,
-- or to the users row when none is left. Every owner of a job has a users row
-- from their first job on, so that is a plain UPDATE.
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
-- A job that enters its owner's line: the first waiting one is the head (taking
-- the served time from the head it may displace), and no other.
CREATE TRIGGER jobs_enqueued AFTER INSERT ON jobs WHEN NEW.status = 'queued'
BEGIN
    UPDATE jobs SET queue_head = 1, owner_served_at = COALESCE(
        (SELECT owner_served_at FROM jobs WHERE platform = NEW.platform
         AND user_id = NEW.user_id AND status = 'queued' AND queue_head = 1 LIMIT 1),
        (SELECT last_served_at FROM users WHERE platform = NEW.platform
         AND user_id = NEW.user_id), 0)
    WHERE queue_head = 0 AND id = (
        SELECT id FROM jobs WHERE platform = NEW.platform AND user_id = NEW.user_id
        AND status = 'queued' ORDER BY queued_at, id LIMIT 1);
    UPDATE jobs SET queue_head = 0
    WHERE platform = NEW.platform AND user_id = NEW.user_id AND status = 'queued'
      AND queue_head = 1 AND id != (
        SELECT id FROM jobs WHERE platform = NEW.platform AND user_id = NEW.user_id
        AND status = 'queued' ORDER BY queued_at, id LIMIT 1);
END;
CREATE TRIGGER jobs_requeued AFTER UPDATE OF status ON jobs
WHEN NEW.status = 'queued' AND OLD.status != 'queued'
BEGIN
    UPDATE jobs SET queue_head = 1, owner_served_at = COALESCE(
        (SELECT owner_served_at FROM jobs WHERE platform = NEW.platform
         AND user_id = NEW.user_id AND status = 'queued' AND queue_head = 1 LIMIT 1),
        (SELECT last_served_at FROM users WHERE platform = NEW.platform
         AND user_id = NEW.user_id), 0)
    WHERE queue_head = 0 AND id = (
        SELECT id FROM jobs WHERE platform = NEW.platform AND user_id = NEW.user_id
        AND status = 'queued' ORDER BY queued_at, id LIMIT 1);
    UPDATE jobs SET queue_head = 0
    WHERE platform = NEW.platform AND user_id = NEW.user_id AND status = 'queued'
      AND queue_head = 1 AND id != (
        SELECT id FROM jobs WHERE platform = NEW.platform AND user_id = NEW.user_id
        AND status = 'queued' ORDER BY queued_at, id LIMIT 1);
END;
-- A leaving job hands on its served time: now if it was claimed, else its own
-- as head.
CREATE TRIGGER jobs_left_queue AFTER UPDATE OF status ON jobs
WHEN OLD.status = 'queued' AND NEW.status != 'queued'
BEGIN
    UPDATE jobs SET queue_head = 1, owner_served_at =
        CASE WHEN NEW.status = 'running' THEN NEW.heartbeat_at ELSE OLD.owner_served_at END
    WHERE queue_head = 0 AND id = (
        SELECT id FROM jobs WHERE platform = NEW.platform AND user_id = NEW.user_id
        AND status = 'queued' ORDER BY queued_at, id LIMIT 1);
    UPDATE users SET last_served_at =
        CASE WHEN NEW.status = 'running' THEN NEW.heartbeat_at ELSE OLD.owner_served_at END
    WHERE platform = NEW.platform AND user_id = NEW.user_id AND NOT EXISTS (
        SELECT 1 FROM jobs WHERE platform = NEW.platform AND user_id = NEW.user_id
        AND status = 'queued');
END;
