"""/metrics in Prometheus's text format (prometheus-client), read from the store at
each scrape, so the figures hold across restarts of the bot and cover every
worker that shares the database.

| metric | type | what |
|---|---|---|
| framepack_jobs{status} | gauge | jobs by status |
| framepack_queue_length | gauge | jobs waiting |
| framepack_queue_paused | gauge | 1 while an admin paused the queue |
| framepack_job_wait_seconds | histogram | queued to first start |
| framepack_job_render_seconds | histogram | first step to done |
| framepack_worker_step_seconds{worker} | gauge | seconds per step lately |
| framepack_gpu_memory_bytes{worker,kind} | gauge | VRAM used (all processes), total, reserved |
| framepack_worker_state{worker,state} | gauge | 1 for each live worker's state |
| framepack_worker_heartbeat_age_seconds{worker} | gauge | since its last heartbeat |
| framepack_worker_restarts_total | counter | workers `run` started again after they died |
| framepack_rate_limited_total{platform} | counter | a chat platform's 429s since the start |

No login (Prometheus scrapes without one): nothing here names a job, a user or
a secret.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from bot.web.context import WebContext, context_of
from storage.stats import Histogram
from storage.store import StoreCore
from storage.workers import GONE

WAIT_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200)
RENDER_BUCKETS = (5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600)
GPU_MEMORY = {"vram_used": "used", "vram_total": "total", "vram_reserved": "reserved"}


def _read(core: StoreCore) -> dict[str, Any]:
    """Everything a scrape needs, in one call on the store's thread."""
    return {
        "counts": core.counts(),
        "paused": core.paused(),
        "wait": core.wait_histogram(WAIT_BUCKETS),
        "render": core.render_histogram(RENDER_BUCKETS),
        "workers": core.workers(core.clock() - 3600),
        "restarts": core.restart_count(),
        "now": core.clock(),
        "timeout": core.limits.heartbeat_timeout,
    }


class _Snapshot:
    """A collector of figures read once: prometheus-client calls `collect` to render."""

    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        yield from self.metrics


def _histogram(name: str, doc: str, histogram: Histogram) -> HistogramMetricFamily:
    buckets = [
        (floatToGoString(bound), count)
        for bound, count in zip(histogram.bounds, histogram.counts, strict=True)
    ]
    buckets.append(("+Inf", histogram.count))
    return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=histogram.total)


def families(state: dict[str, Any], rate_limited: dict[str, int]) -> list[Metric]:
    jobs = GaugeMetricFamily("framepack_jobs", "Jobs by status.", labels=["status"])
    for status, count in sorted(state["counts"].items()):
        jobs.add_metric([status], count)
    out: list[Metric] = [
        jobs,
        GaugeMetricFamily(
            "framepack_queue_length", "Jobs waiting.", value=state["counts"].get("queued", 0)
        ),
        GaugeMetricFamily(
            "framepack_queue_paused", "1 while the queue is paused.", value=int(state["paused"])
        ),
        _histogram(
            "framepack_job_wait_seconds", "Seconds from queued to the first start.", state["wait"]
        ),
        _histogram(
            "framepack_job_render_seconds",
            "Seconds of rendering of finished videos.",
            state["render"],
        ),
    ]
    step = GaugeMetricFamily(
        "framepack_worker_step_seconds", "Seconds per step lately.", labels=["worker"]
    )
    memory = GaugeMetricFamily(
        "framepack_gpu_memory_bytes",
        "GPU memory: used by all processes, total, reserved by the worker.",
        labels=["worker", "kind"],
    )
    states = GaugeMetricFamily(
        "framepack_worker_state", "1 for the state of each live worker.", labels=["worker", "state"]
    )
    ages = GaugeMetricFamily(
        "framepack_worker_heartbeat_age_seconds",
        "Seconds since each worker's last heartbeat.",
        labels=["worker"],
    )
    for worker in state["workers"]:
        age = state["now"] - worker.updated_at
        ages.add_metric([worker.worker_id], age)
        if worker.state in GONE or age > state["timeout"]:
            continue
        states.add_metric([worker.worker_id, worker.state.value], 1)
        seconds = worker.detail.get("step_seconds")
        if isinstance(seconds, int | float):
            step.add_metric([worker.worker_id], seconds)
        for key, kind in GPU_MEMORY.items():
            value = worker.detail.get(key)
            if isinstance(value, int | float):
                memory.add_metric([worker.worker_id, kind], value)
    restarts = CounterMetricFamily(
        "framepack_worker_restarts", "Workers started again after they died."
    )
    restarts.add_metric([], state["restarts"])
    limited = CounterMetricFamily(
        "framepack_rate_limited",
        "429 (rate limited) answers of a chat platform since the bot started.",
        labels=["platform"],
    )
    for platform, count in sorted(rate_limited.items()):
        limited.add_metric([platform], count)
    return [*out, step, memory, states, ages, restarts, limited]


async def render_metrics(ctx: WebContext) -> bytes:
    store = ctx.service.store
    state = await store.run(_read, store.core)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(families(state, dict(ctx.rate_limited()))))  # type: ignore[arg-type]
    return generate_latest(registry)


async def metrics(request: web.Request) -> web.Response:
    body = await render_metrics(context_of(request))
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
