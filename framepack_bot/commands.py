"""`framepack-bot worker` and `framepack-bot run`: load the config, set up the
log, start the loop. The packages they need are imported inside each, so `run`
(the bot process) never imports torch."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from storage.config import ConfigError, Settings, load_settings

# Libraries that talk a lot at INFO about things the host need not see.
_QUIET = ("diffusers", "transformers", "httpx", "httpcore", "discord.gateway", "aiosqlite")


def _settings(path: str) -> Settings | None:
    try:
        return load_settings(path)
    except ConfigError as exc:
        print(f"framepack-bot: {exc}", file=sys.stderr)
        return None


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.logging.level,
        format="%(asctime)s %(levelname).1s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for name in _QUIET:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.root.level))


def worker_main(args: argparse.Namespace) -> int:
    """One GPU worker alone, until SIGINT or SIGTERM (or an empty queue with --burst)."""
    settings = _settings(args.config)
    if settings is None:
        return 2
    configure_logging(settings)
    from framepack.worker.loop import run_worker

    return asyncio.run(run_worker(settings, burst=args.burst))


def run_main(args: argparse.Namespace) -> int:
    """The chat bots the config enables, and a supervised worker."""
    settings = _settings(args.config)
    if settings is None:
        return 2
    from bot.app import NoAdapterEnabled, check_can_run, run_bots

    try:
        check_can_run(settings)
    except NoAdapterEnabled as exc:
        print(f"framepack-bot: {exc}", file=sys.stderr)
        print(
            "To render queued jobs without a chat bot, run `framepack-bot worker` instead.",
            file=sys.stderr,
        )
        return 2
    configure_logging(settings)
    from framepack_bot.supervisor import serve

    return asyncio.run(serve(settings, run_bots))
