"""`framepack-bot run`'s supervisor writes each death of its worker to the store,
where the host's page and /metrics read it."""

from __future__ import annotations

import asyncio
import functools
import sys
from pathlib import Path

from framepack_bot.supervisor import Backoff, WorkerSupervisor, record_restart
from tests.worker_fixtures import open_store, settings_of, wait_until, write_config


async def test_each_death_of_the_worker_is_recorded_with_its_code_and_delay(
    tmp_path: Path,
) -> None:
    settings = settings_of(write_config(tmp_path))
    store = await open_store(settings)
    dying = [sys.executable, "-c", "import sys; sys.exit(3)"]
    supervisor = WorkerSupervisor(
        dying,
        Backoff(first=0.1, maximum=0.2, reset_after=60),
        on_restart=functools.partial(record_restart, settings),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(supervisor.run(stop))

    async def restarted_twice() -> bool:
        return await store.restart_count() >= 2

    await wait_until(restarted_twice, timeout=30, what="two restarts")
    stop.set()
    await asyncio.wait_for(task, 10)
    last = await store.last_restart()
    assert last is not None and last.exit_code == 3 and last.delay in (0.1, 0.2)
    assert last.uptime > 0
    await store.close()
