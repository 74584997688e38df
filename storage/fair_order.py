"""The order the queue runs its jobs in, as SQL.

Fairness: a user's n-th waiting job never runs before every other user's
earlier-ranked waiting jobs. Waiting jobs are ordered by (rank among their
owner's waiting jobs, when their owner was last served, time queued). The
middle key is ours: ordering by rank and then time queued alone makes the
claim plain FIFO when rank counts *waiting* jobs (the oldest job is always its
owner's first), and a user who queued five jobs at once would keep the GPU
until all five ran. "Least recently served first" keeps the rule and gives the
round robin users expect.

Each user's first waiting job is their head (`queue_head = 1`) and carries
their last-served time (`owner_served_at`); triggers keep both whatever
statement moves a job (migrations 4 and 5), so the claim is one statement over
one small partial index, and positions read the same order.
"""

from __future__ import annotations

from storage.base import JOB_SELECT

# Every waiting job in the order they will run, with its rank in its owner's
# line and the served time its owner's head carries.
FAIR_ORDER_SQL = """
SELECT {columns}, ROW_NUMBER() OVER owner_line AS owner_rank,
       FIRST_VALUE(j.owner_served_at) OVER owner_line AS served
FROM jobs AS j
WHERE j.status = 'queued'
WINDOW owner_line AS (PARTITION BY j.platform, j.user_id ORDER BY j.queued_at, j.id)
ORDER BY owner_rank, served, j.queued_at, j.id
"""

# Picks the fair next job and takes it, unless an admin paused the queue.
# SQLite runs it under its write lock, so no other process can take it too; the
# triggers record that its owner was served and make their next waiting job
# their head, in the same statement.
CLAIM_SQL = (
    "UPDATE jobs SET status = 'running', worker_id = ?, heartbeat_at = ?, "
    "started_at = COALESCE(started_at, ?), attempts = attempts + 1, queue_head = 0 "
    "WHERE id = (SELECT id FROM jobs WHERE status = 'queued' AND queue_head = 1 "
    "ORDER BY owner_served_at, queued_at, id LIMIT 1) AND status = 'queued' "
    "AND NOT EXISTS (SELECT 1 FROM flags WHERE name = 'paused' AND value = '1') "
    f"RETURNING {JOB_SELECT}"
)
