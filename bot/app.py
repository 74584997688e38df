"""The bot process: the enabled chat adapters, the host's web page (bot/web/),
the job tracker and housekeeping on one asyncio loop and one database
connection. No torch here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from bot.adapters import AdapterFactory, AdapterStartFailed, ChatAdapter, JobNotifier
from bot.service import BotService
from bot.tracker import JobTracker
from storage.config import Settings
from storage.files import DataDir
from storage.retention import remove_expired_files
from storage.store import JobStore, QueueLimits

log = logging.getLogger("framepack_bot.bot")

CHECKPOINT_INTERVAL = 30.0  # seconds between two folds of the WAL
RETENTION_INTERVAL = 3600.0


class NoAdapterEnabled(RuntimeError):
    pass


def enabled_adapters(settings: Settings) -> dict[str, AdapterFactory]:
    """The adapter factories the config enables (imported only when enabled)."""
    factories: dict[str, AdapterFactory] = {}
    if settings.telegram.enabled:
        from bot.telegram.adapter import create_telegram_adapter

        factories["telegram"] = create_telegram_adapter
    if settings.discord.enabled:
        from bot.discord.adapter import create_discord_adapter

        factories["discord"] = create_discord_adapter
    return factories


def check_can_run(settings: Settings) -> None:
    """Refuse to start with nothing to serve (no chat platform and the web page off),
    or without the token of an enabled platform. The web page alone needs no token:
    it is how a newcomer tries the bot before creating a chat bot."""
    if not settings.telegram.enabled and not settings.discord.enabled and not settings.web.enabled:
        where = settings.source or "config.toml"
        raise NoAdapterEnabled(
            f"Nothing to serve: no chat platform is enabled and the web page is off. In {where} "
            "set `enabled = true` under [web], or under [telegram] and/or [discord] with the "
            "bot token in the environment variable named by token_env (see README: Set up)."
        )
    for name, section in (("telegram", settings.telegram), ("discord", settings.discord)):
        if section.enabled and not section.token:
            raise NoAdapterEnabled(
                f"[{name}] is enabled but its token is missing: set the environment variable "
                f"{section.token_env}"
                + (f" or the file {section.token_file}" if section.token_file else "")
                + "."
            )


async def _housekeeping(store: JobStore, settings: Settings, stop: asyncio.Event) -> None:
    data = DataDir(settings.storage.data_dir)
    loop = asyncio.get_running_loop()
    next_retention = loop.time()
    while not stop.is_set():
        try:
            await store.checkpoint()
            if settings.storage.retention_days > 0 and loop.time() >= next_retention:
                removed = await remove_expired_files(
                    store, data, settings.storage.retention_days * 86400
                )
                if removed:
                    log.info("retention: removed the files of %d old jobs", removed)
                next_retention = loop.time() + RETENTION_INTERVAL
        except Exception:
            log.exception("housekeeping failed; trying again later")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), CHECKPOINT_INTERVAL)


async def run_bots(
    settings: Settings,
    stop: asyncio.Event,
    *,
    factories: dict[str, AdapterFactory] | None = None,
    poll_interval: float | None = None,
    on_tracker: Callable[[JobTracker], None] | None = None,
) -> None:
    """Serve every enabled platform until `stop` is set (`on_tracker`: for tests that wait
    for the tracker)."""
    if factories is None:
        check_can_run(settings)
        factories = enabled_adapters(settings)
    data = DataDir(settings.storage.data_dir)
    data.ensure()
    store = await JobStore.open(data.database, QueueLimits.from_settings(settings.queue))
    service = BotService(store, settings)
    adapters: dict[str, ChatAdapter] = {}
    tracker: JobTracker | None = None
    page = None

    def wake() -> None:
        if tracker is not None:
            tracker.wake()

    try:
        for name, factory in factories.items():
            adapters[name] = factory(service, wake)
        notifiers: dict[str, JobNotifier] = dict(adapters)
        if settings.web.enabled:
            from bot.web.server import WebSurface

            page = WebSurface(service, wake, rate_limited=lambda: rate_limited(adapters))
            notifiers[page.platform] = page
        extra = {} if poll_interval is None else {"poll_interval": poll_interval}
        min_free = settings.storage.min_free_mb * 1_000_000
        tracker = JobTracker(
            store,
            notifiers,
            tiny=service.tiny,
            has_room=lambda: data.free_bytes() >= min_free,
            **extra,
        )
        if on_tracker is not None:
            on_tracker(tracker)
        for name, adapter in adapters.items():
            await adapter.start()
            log.info("%s: connected", name)
        if page is not None:
            try:
                await page.start()
            except AdapterStartFailed as exc:
                if not adapters:
                    raise
                # the chat bots serve without it; the page's own jobs are still tracked
                log.error("%s The chat bots go on without the web page.", exc)
        tasks = [
            asyncio.create_task(tracker.run(stop), name="tracker"),
            asyncio.create_task(_housekeeping(store, settings, stop), name="housekeeping"),
        ]
        await stop.wait()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        if page is not None:
            try:
                await page.stop()
            except Exception:
                log.exception("web: error while stopping")
        for name, adapter in adapters.items():
            try:
                await adapter.stop()
            except Exception:
                log.exception("%s: error while disconnecting", name)
        await store.close()


def rate_limited(adapters: dict[str, ChatAdapter]) -> dict[str, int]:
    """The 429s each platform answered, for /metrics: Telegram's pacer counts them, the
    Discord adapter counts the ones discord.py waits out by itself."""
    counts = {name: getattr(adapter, "rate_limited", None) for name, adapter in adapters.items()}
    return {name: count for name, count in counts.items() if isinstance(count, int)}
