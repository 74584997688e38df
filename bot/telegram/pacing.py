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

import asyncio
import contextlib
import itertools
import logging
import warnings
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

from telegram.error import BadRequest, NetworkError, RetryAfter

from bot.throttle import RateLimiter

log = logging.getLogger("framepack_bot.telegram")

CHAT_PACE = [(1, 1.1)]  # about one message or edit a second in a chat (a little under)
GROUP_PACE = [(20, 61.0)]  # and twenty a minute in a group
BOT_PACE = [(28, 1.0)]  # a little under Telegram's ~30 messages a second for a bot
BOT = "bot"  # the key of the pace that holds every chat
# How long a call that only reads (a picture's download) or whose repeat is harmless
# (a text reply) is tried again through an outage of the Bot API: its 5xx answers and
# timeouts of a minute or two are seen in the wild. Back-off from 1 s to 15 s.
OUTAGE_PATIENCE = 180.0
OUTAGE_BACKOFF = (1.0, 2.0, 4.0, 8.0, 15.0)

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
        self,
        chat_id: int,
        request: Callable[[], Awaitable[T]],
        *,
        urgent: bool | float = False,
    ) -> T:
        """Send or edit within the chat's, the group's and the bot's pace; on 429 wait
        retry_after and try again. `urgent`: a final delivery, ahead of progress edits
        (True, or when its job finished: the earliest first)."""
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


def is_outage(error: BaseException) -> bool:
    """A failure of the Bot API itself (a 5xx, a timeout, no connection), not of the call
    (a 400 is a NetworkError too in PTB, and no retry changes it)."""
    return isinstance(error, NetworkError) and not isinstance(error, BadRequest)


async def through_outage(
    request: Callable[[], Awaitable[T]], *, what: str, patience: float | None = None
) -> T:
    """`request()`, tried again with back-off while the Bot API is out, for at most
    `patience` seconds (then its last error is raised)."""
    patience = OUTAGE_PATIENCE if patience is None else patience
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    for attempt in itertools.count():
        try:
            return await request()
        except NetworkError as error:
            wait = OUTAGE_BACKOFF[min(attempt, len(OUTAGE_BACKOFF) - 1)]
            if not is_outage(error) or loop.time() + wait > deadline:
                raise
            if attempt == 0:
                log.warning("telegram: the Bot API is out (%s); trying %s again", error, what)
            await asyncio.sleep(wait)
    raise AssertionError("unreachable")
