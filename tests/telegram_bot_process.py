"""The bot process alone, Telegram only and without a worker: what the tests that
kill the bot and the Telegram benchmark run as a subprocess.

    python -m tests.telegram_bot_process --config X [--upload-limit BYTES]

`--upload-limit` stands in for Telegram's 50 MB (a tiny test video is a few tens of
kB); everything else comes from the config, as in `framepack-bot run`. Stops on
SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable

from bot.app import run_bots
from bot.service import BotService
from bot.telegram.adapter import TelegramAdapter
from framepack_bot.commands import configure_logging
from storage.config import load_settings


async def serve(config: str, upload_limit: int | None) -> None:
    settings = load_settings(config)
    configure_logging(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    def telegram(service: BotService, on_change: Callable[[], None]) -> TelegramAdapter:
        return TelegramAdapter(service, on_change, upload_limit_bytes=upload_limit)

    await run_bots(settings, stop, factories={"telegram": telegram})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--upload-limit", type=int, default=None)
    args = parser.parse_args()
    asyncio.run(serve(args.config, args.upload_limit))
    return 0


if __name__ == "__main__":
    sys.exit(main())
