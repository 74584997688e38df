"""`framepack-bot worker` and `framepack-bot run`: load the config, set up the
log, start the loop. The packages they need are imported inside each, so `run`
(the bot process) never imports torch."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import logging
import sys

from storage.config import ConfigError, Settings, load_settings
from storage.db import SchemaTooNew, check_database

# Libraries that talk a lot at INFO about things the host need not see.
_QUIET = ("diffusers", "transformers", "httpx", "httpcore", "discord.gateway")
NO_WORKER_PACKAGES = (
    "this install has no model stack (torch, diffusers): on the GPU host, "
    "pip install 'framepack-bot[worker]'"
)


def _settings(path: str) -> Settings | int:
    """The config, and a database this version can use; else the exit status, after
    one line that says why (2: the config is wrong, 1: the database is too new)."""
    try:
        settings = load_settings(path)
    except ConfigError as exc:
        print(f"framepack-bot: {exc}", file=sys.stderr)
        return 2
    try:
        check_database(settings.database_path)
    except SchemaTooNew as exc:
        print(f"framepack-bot: {exc}", file=sys.stderr)
        return 1
    return settings


def has_worker_packages() -> bool:
    return importlib.util.find_spec("torch") is not None


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
    if isinstance(settings, int):
        return settings
    if not has_worker_packages():
        print(f"framepack-bot worker: {NO_WORKER_PACKAGES}", file=sys.stderr)
        return 2
    configure_logging(settings)
    from framepack_bot.supervisor import die_with_supervisor

    die_with_supervisor()
    from framepack.worker.loop import run_worker

    return asyncio.run(run_worker(settings, burst=args.burst))


def run_main(args: argparse.Namespace) -> int:
    """The chat bots the config enables, the web page, and a supervised worker."""
    settings = _settings(args.config)
    if isinstance(settings, int):
        return settings
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
