"""Queue benchmark: the fair job store beside a plain FIFO, in one run.

`--users` users enqueue `--jobs` jobs; then a worker claims and completes them all.
Prints jobs per second and p50/p99 claim latency while 90-100 % of the jobs wait
and over the whole drain, for our store (fair order, stale check, pause flag,
events) beside a single-table FIFO on plain sqlite3, each through one thread hop
as the worker calls it, so the ratio compares like with like. The queues are
drained in turns of 100 claims, so the machine's changes of speed fall on both.

Then what the bot asks with every /animate: a new job's position and estimated
start with `--waiting` jobs waiting.

Targets: p99 claim under 5 ms with the queue full (a claim is one statement that
holds SQLite's write lock: the bot and the worker take turns at it), and a new
job's position under 10 ms (the bot's reply waits for it). A claim per job of
minutes on the GPU makes the fair claim's cost next to a FIFO's invisible to
users, so the ratio is printed, not judged.

    python benchmarks/queue.py [--jobs 10000] [--users 100] [--waiting 1000]
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and its name would
# shadow the standard library's `queue` (which asyncio imports): put the
# repository root there instead, before anything else is imported.
sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import asyncio
import math
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from storage.records import JobParams
from storage.store import JobStore, QueueLimits

TURN = 100  # claims each queue makes before the other takes its turn
CLAIM_P99_MS = 5.0
POSITION_MS = 10.0


def pct(values: list[float], q: float) -> float:
    """The nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


class Fifo:
    """The baseline: one table, claim the lowest id, on a thread of its own."""

    def __init__(self, path: Path) -> None:
        self.thread = ThreadPoolExecutor(1)
        self.payload = JobParams(prompt="a cat walks").to_json()
        self.conn: sqlite3.Connection | None = None
        self.path = path

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.thread, fn, *args)

    async def open(self) -> None:
        def connect() -> None:
            conn = sqlite3.connect(self.path, isolation_level=None)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(
                "CREATE TABLE q (id INTEGER PRIMARY KEY, user TEXT, payload TEXT, "
                "status TEXT NOT NULL DEFAULT 'queued')"
            )
            conn.execute("CREATE INDEX q_waiting ON q (id) WHERE status = 'queued'")
            self.conn = conn

        await self.run(connect)

    def _enqueue(self, user: str) -> None:
        assert self.conn is not None
        self.conn.execute("INSERT INTO q (user, payload) VALUES (?, ?)", (user, self.payload))

    def _claim(self) -> int | None:
        assert self.conn is not None
        row = self.conn.execute(
            "UPDATE q SET status = 'running' WHERE id = (SELECT id FROM q WHERE status = 'queued' "
            "ORDER BY id LIMIT 1) RETURNING id, user, payload"
        ).fetchone()
        if row is None:
            return None
        JobParams.from_json(row[2])  # the worker needs the job, not only its id
        return row[0]

    def _complete(self, job_id: int) -> None:
        assert self.conn is not None
        self.conn.execute("UPDATE q SET status = 'done' WHERE id = ?", (job_id,))

    async def enqueue(self, user: str) -> None:
        await self.run(self._enqueue, user)

    async def claim(self) -> int | None:
        return await self.run(self._claim)

    async def complete(self, job_id: int) -> None:
        await self.run(self._complete, job_id)


@dataclass
class Contender:
    name: str
    enqueue: Callable[[str], Awaitable[object]]
    claim: Callable[[], Awaitable[Any]]
    complete: Callable[[Any], Awaitable[object]]
    claims: list[float] = field(default_factory=list)
    drain_s: float = 0.0
    enqueue_s: float = 0.0
    done: bool = False


async def race(contenders: list[Contender], jobs: int, users: int) -> None:
    for c in contenders:
        t0 = time.perf_counter()
        for i in range(jobs):
            await c.enqueue(f"user{i % users}")
        c.enqueue_s = time.perf_counter() - t0
    while not all(c.done for c in contenders):
        for c in contenders:
            for _ in range(TURN):
                if c.done:
                    break
                c0 = time.perf_counter()
                job = await c.claim()
                if job is None:
                    c.done = True
                    break
                c.claims.append(time.perf_counter() - c0)
                await c.complete(job)
                c.drain_s += time.perf_counter() - c0
    for c in contenders:
        assert len(c.claims) == jobs, (c.name, len(c.claims))


def row(c: Contender, jobs: int) -> dict[str, float]:
    early = c.claims[: max(1, len(c.claims) // 10)]  # while 90-100 % of the jobs wait
    return {
        "enqueue/s": jobs / c.enqueue_s,
        "claim+complete/s": jobs / c.drain_s,
        "p50 ms (full)": 1000 * statistics.median(early),
        "p99 ms (full)": 1000 * pct(early, 0.99),
        "p50 ms (all)": 1000 * statistics.median(c.claims),
        "p99 ms (all)": 1000 * pct(c.claims, 0.99),
    }


async def run_all(tmp: Path, jobs: int, users: int, waiting: int) -> tuple[dict, dict, float]:
    limits = QueueLimits(
        max_waiting_per_user=jobs, max_waiting=jobs + 1, max_video_seconds_per_day=0
    )
    params = JobParams(prompt="a cat walks")
    fifo = Fifo(tmp / "fifo.sqlite3")
    await fifo.open()
    async with await JobStore.open(tmp / "ours.sqlite3", limits) as store:
        ours = Contender(
            "ours",
            lambda u: store.enqueue(
                platform="telegram", user_id=u, chat_id="c", params=params, input_path="/in.png"
            ),
            lambda: store.claim("w1"),
            lambda job: store.complete(job.id, "w1", result_path="/v.mp4"),
        )
        plain = Contender("FIFO", fifo.enqueue, fifo.claim, fifo.complete)
        await race([ours, plain], jobs, users)
    async with await JobStore.open(tmp / "positions.sqlite3", limits) as store:
        for n in range(waiting):
            await store.enqueue(
                platform="telegram", user_id=f"u{n}", chat_id="c", params=params, input_path="/i"
            )
        times = []
        for n in range(50):
            job = await store.enqueue(
                platform="telegram", user_id=f"new{n}", chat_id="c", params=params, input_path="/i"
            )
            start = time.perf_counter()
            await store.position(job.id)
            times.append(1000 * (time.perf_counter() - start))
    return row(ours, jobs), row(plain, jobs), statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=100)
    parser.add_argument("--waiting", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ours, fifo, position_ms = asyncio.run(
            run_all(Path(tmp), args.jobs, args.users, args.waiting)
        )
    print(f"{args.jobs} jobs from {args.users} users, one claiming worker\n")
    print(f"{'':8}" + "".join(f"{k:>18}" for k in ours))
    for name, values in (("ours", ours), ("FIFO", fifo)):
        print(f"{name:8}" + "".join(f"{v:>18.2f}" for v in values.values()))
    ratio = ours["p50 ms (full)"] / fifo["p50 ms (full)"]
    print(f"\nfair claim / FIFO claim, p50 with the queue full: {ratio:.2f}x")
    claim_ok = ours["p99 ms (full)"] < CLAIM_P99_MS
    position_ok = position_ms < POSITION_MS
    print(
        f"target p99 claim < {CLAIM_P99_MS:g} ms: {'met' if claim_ok else 'MISSED'} "
        f"({ours['p99 ms (full)']:.2f} ms)"
    )
    print(
        f"target a new job's position with {args.waiting} waiting < {POSITION_MS:g} ms: "
        f"{'met' if position_ok else 'MISSED'} (p50 {position_ms:.2f} ms)"
    )
    print(
        f"\nrerun: python benchmarks/queue.py --jobs {args.jobs} --users {args.users} "
        f"--waiting {args.waiting}"
    )
    return 0 if claim_ok and position_ok else 1


if __name__ == "__main__":
    sys.exit(main())
