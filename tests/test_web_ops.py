"""/healthz and /metrics: what a load balancer and Prometheus read.

- /metrics is parsed by prometheus-client's own text parser: jobs by status, the
  queue, wait and render histograms, seconds per step, GPU memory, 429s by
  platform (Telegram's pacer, through `run_bots`), worker restarts;
- /healthz is 200 with a heart-beating worker and 503 once its heartbeat is older
  than `[queue] heartbeat_timeout`, also when a real worker process is killed.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from storage.records import JobParams, Timing, WorkerState
from storage.store import JobStore, QueueLimits
from tests.fakes.telegram_api import FakeTelegram
from tests.telegram_harness import make_settings, running_bot
from tests.web_harness import free_port, serving, wait_for, web_config, web_settings
from tests.worker_fixtures import WorkerProcess, settings_of

pytestmark = pytest.mark.filterwarnings("ignore:.*retry_after.*:DeprecationWarning")


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, await response.text()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, by name and labels, through prometheus-client's parser."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


async def add_jobs(store: JobStore, data_root: Path) -> None:
    for n, user in enumerate(("a", "b", "c", "d")):
        await store.enqueue(
            platform="telegram", user_id=user, chat_id=user,
            params=JobParams(prompt=f"job {n}", seconds=1.0), input_path=str(data_root / "x.png"),
        )  # fmt: skip
    done = await store.claim("w1")
    assert done is not None
    await store.complete(done.id, "w1", result_path="/v.mp4")
    await store.record_timing(Timing(done.id, "framepack", 1.0, 25, 1, 42.0, 1.68, time.time()))
    failed = await store.claim("w1")
    assert failed is not None
    await store.fail(failed.id, "broken", worker_id="w1")
    await store.claim("w1")  # one running, one waiting


async def test_metrics_parse_with_prometheus_clients_own_parser(tmp_path: Path) -> None:
    async with serving(web_settings(tmp_path)) as page:
        await add_jobs(page.store, page.data.root)
        await page.store.set_worker(
            "gpu-1",
            WorkerState.RENDERING,
            {"step_seconds": 1.5, "vram_used": 7 << 30, "vram_total": 24 << 30,
             "vram_reserved": 6 << 30, "job_id": 3},
        )  # fmt: skip
        await page.store.record_restart(1, 12.0, 2.0)
        await page.store.record_restart(-9, 30.0, 4.0)
        page.surface.context.rate_limited = lambda: {"telegram": 3}
        status, text = await get(page.url + "metrics")
    assert status == 200
    got = samples(text)
    for status_name, count in (("queued", 1), ("running", 1), ("done", 1), ("failed", 1)):
        assert got[("framepack_jobs", (("status", status_name),))] == count
    assert got[("framepack_queue_length", ())] == 1
    assert got[("framepack_queue_paused", ())] == 0
    assert got[("framepack_job_render_seconds_count", ())] == 1
    assert got[("framepack_job_render_seconds_sum", ())] == 42.0
    assert got[("framepack_job_render_seconds_bucket", (("le", "30.0"),))] == 0
    assert got[("framepack_job_render_seconds_bucket", (("le", "60.0"),))] == 1
    assert got[("framepack_job_wait_seconds_count", ())] == 3  # every job that started
    assert got[("framepack_job_wait_seconds_bucket", (("le", "+Inf"),))] == 3
    assert got[("framepack_worker_step_seconds", (("worker", "gpu-1"),))] == 1.5
    memory = {kind: got[("framepack_gpu_memory_bytes", (("kind", kind), ("worker", "gpu-1")))]
              for kind in ("used", "total", "reserved")}  # fmt: skip
    assert memory == {"used": 7 << 30, "total": 24 << 30, "reserved": 6 << 30}
    assert got[("framepack_worker_state", (("state", "rendering"), ("worker", "gpu-1")))] == 1
    assert got[("framepack_worker_restarts_total", ())] == 2
    assert got[("framepack_rate_limited_total", (("platform", "telegram"),))] == 3


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as tg:
        yield tg


async def test_run_bots_serves_the_page_beside_telegram_with_its_429_count(
    tmp_path: Path, fake: FakeTelegram
) -> None:
    port = free_port()
    settings = make_settings(tmp_path, fake, web={"enabled": True, "listen": f"127.0.0.1:{port}"})
    async with running_bot(settings, fake) as adapter:
        adapter.pacer.retry_afters = 2  # what two 429s of Telegram leave
        status, text = await wait_for(
            lambda: get(f"http://127.0.0.1:{port}/metrics"), what="the page of run_bots"
        )
    assert status == 200
    assert samples(text)[("framepack_rate_limited_total", (("platform", "telegram"),))] == 2


async def test_healthz_turns_503_when_the_heartbeat_is_older_than_heartbeat_timeout(
    tmp_path: Path,
) -> None:
    settings = web_settings(tmp_path)
    timeout = settings.queue.heartbeat_timeout
    async with serving(settings) as page:
        status, text = await get(page.url + "healthz")
        assert status == 503 and '"worker": null' in text  # nobody renders
        await page.store.set_worker("w1", WorkerState.READY)
        status, text = await get(page.url + "healthz")
        assert status == 200 and '"healthy": true' in text and '"database": "ok"' in text
        # the same worker, heard of last `timeout` + 1 seconds ago
        late = await JobStore.open(
            settings.database_path, QueueLimits(), clock=lambda: time.time() - timeout - 1
        )
        await late.set_worker("w1", WorkerState.READY)
        await late.close()
        status, text = await get(page.url + "healthz")
        assert status == 503 and '"healthy": false' in text
        await page.store.set_worker("w1", WorkerState.STOPPED)
        assert (await get(page.url + "healthz"))[0] == 503


@pytest.mark.slow
async def test_healthz_follows_a_real_worker_until_it_is_killed(tmp_path: Path) -> None:
    config = web_config(tmp_path)
    settings = settings_of(config)
    worker = WorkerProcess.start(config, burst=False)
    try:
        async with serving(settings) as page:

            async def healthy() -> bool:
                return (await get(page.url + "healthz"))[0] == 200

            await wait_for(healthy, 120, f"a healthy worker\n{worker.log}")
            worker.kill()  # SIGKILL: no last word in the store
            killed = time.monotonic()

            async def unhealthy() -> bool:
                return (await get(page.url + "healthz"))[0] == 503

            await wait_for(unhealthy, 30, "503 after the kill")
            took = time.monotonic() - killed
    finally:
        worker.kill()
    timeout = settings.queue.heartbeat_timeout
    assert took <= timeout + 2 * settings.worker.heartbeat_seconds + 1
