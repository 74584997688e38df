"""Every message the bot sends or edits on Telegram goes through one `Pacer`.

Telegram answers 429 ("retry after N s") past about one message a second in a
chat, twenty a minute in a group and thirty a second for the whole bot. The
pacer keeps under all three, so in a burst (a hundred users who send /animate
at once) the replies go out at the bot-wide pace instead of finding the limit
with a 429 each; a finished video goes before progress edits that wait for the
same chat. A 429 that still comes holds its chat (or, from a private chat,
where our own pace cannot be the cause, the whole bot) back for its retry_after,
and the same call is tried again: a delivery is never dropped.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

from telegram.error import RetryAfter

from bot.throttle import RateLimiter

log = logging.getLogger("framepack_bot.telegram")

CHAT_PACE = [(1, 1.1)]  # about one message or edit a second in a chat (a little under)
GROUP_PACE = [(20, 61.0)]  # and twenty a minute in a group
BOT_PACE = [(28, 1.0)]  # a little under Telegram's ~30 messages a second for a bot
BOT = "bot"  # the key of the pace that holds every chat

T = TypeVar("T")


def retry_seconds(error: RetryAfter) -> float:
    with warnings.catch_warnings():  # PTB 22 warns that the int form will become a timedelta
        warnings.simplefilter("ignore")
        value = error.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class Pacer:
    def __init__(self) -> None:
        self.retry_afters = 0  # 429s answered to us (tests and the benchmark read it)
        self._chats = RateLimiter(CHAT_PACE)
        self._groups = RateLimiter(GROUP_PACE)
        self._bot = RateLimiter(BOT_PACE)

    async def call(
        self, chat_id: int, request: Callable[[], Awaitable[T]], *, urgent: bool = False
    ) -> T:
        """Send or edit within the chat's, the group's and the bot's pace; on 429 wait
        retry_after and try again. `urgent`: a final delivery, ahead of progress edits."""
        while True:
            try:
                async with contextlib.AsyncExitStack() as paces:
                    await paces.enter_async_context(self._chats.call(chat_id, urgent=urgent))
                    if chat_id < 0:
                        await paces.enter_async_context(self._groups.call(chat_id, urgent=urgent))
                    await paces.enter_async_context(self._bot.call(BOT, urgent=urgent))
                    return await request()
            except RetryAfter as error:
                wait = retry_seconds(error)
                self.retry_afters += 1
                self._chats.penalize(chat_id, wait)
                if chat_id > 0:
                    # Our pace keeps each private chat under its limit, so a 429 there is
                    # Telegram's limit for the whole bot: every chat waits, instead of
                    # each finding out with its own 429. A group's 429 is that group's
                    # own limit and pauses it alone.
                    self._bot.penalize(BOT, wait)
                log.warning(
                    "telegram: flood control %s; retrying in %.0f s",
                    "for the whole bot" if chat_id > 0 else f"in chat {chat_id}",
                    wait,
                )
