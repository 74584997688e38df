-- 4: the database keeps the heads and the served times itself. Whatever
-- statement moves a job into or out of the queue, these triggers keep one head
-- per waiting user (their earliest job), so no code path can forget it, and a
-- claim is one UPDATE that SQLite runs under its write lock. The heads are
-- rebuilt first, so the triggers start from a consistent state.
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
    UPDATE jobs SET queue_head = 0
    WHERE platform = NEW.platform AND user_id = NEW.user_id AND status = 'queued'
      AND queue_head = 1 AND id != (
        SELECT id FROM jobs WHERE platform = NEW.platform AND user_id = NEW.user_id
        AND status = 'queued' ORDER BY queued_at, id LIMIT 1);
    UPDATE jobs SET queue_head = 1, owner_served_at = COALESCE((
        SELECT last_served_at FROM users
        WHERE platform = NEW.platform AND user_id = NEW.user_id), 0)
    WHERE queue_head = 0 AND id = (
        SELECT id FROM jobs WHERE platform = NEW.platform AND user_id = NEW.user_id
        AND status = 'queued' ORDER BY queued_at, id LIMIT 1);
END;
-- A job back in the queue (its worker died or stopped) keeps its place in
-- time, so it may come before its owner's current head.
CREATE TRIGGER jobs_requeued AFTER UPDATE OF status ON jobs
WHEN NEW.status = 'queued' AND OLD.status != 'queued'
BEGIN
    UPDATE jobs SET queue_head = 0
    WHERE platform = NEW.platform AND user_id = NEW.user_id AND status = 'queued'
      AND queue_head = 1 AND id != (
        SELECT id FROM jobs WHERE platform = NEW.platform AND user_id = NEW.user_id
        AND status = 'queued' ORDER BY queued_at, id LIMIT 1);
    UPDATE jobs SET queue_head = 1, owner_served_at = COALESCE((
        SELECT last_served_at FROM users
        WHERE platform = NEW.platform AND user_id = NEW.user_id), 0)
    WHERE queue_head = 0 AND id = (
        SELECT id FROM jobs WHERE platform = NEW.platform AND user_id = NEW.user_id
        AND status = 'queued' ORDER BY queued_at, id LIMIT 1);
END;
-- A job leaves the queue (claimed, cancelled, failed): a claim records when its
-- owner was served (the round-robin key), then the owner's next waiting job
-- becomes their head. Leaving code sets queue_head = 0.
CREATE TRIGGER jobs_left_queue AFTER UPDATE OF status ON jobs
WHEN OLD.status = 'queued' AND NEW.status != 'queued'
BEGIN
    INSERT INTO users (platform, user_id, last_served_at)
    SELECT NEW.platform, NEW.user_id, NEW.heartbeat_at WHERE NEW.status = 'running'
    ON CONFLICT (platform, user_id) DO UPDATE SET last_served_at = excluded.last_served_at;
    UPDATE jobs SET queue_head = 1, owner_served_at = COALESCE((
        SELECT last_served_at FROM users
        WHERE platform = NEW.platform AND user_id = NEW.user_id), 0)
    WHERE queue_head = 0 AND id = (
        SELECT id FROM jobs WHERE platform = NEW.platform AND user_id = NEW.user_id
        AND status = 'queued' ORDER BY queued_at, id LIMIT 1);
END;
