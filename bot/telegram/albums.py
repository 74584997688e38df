"""Two pictures sent together (an album) with /animate on the first: the start and the
end of the video. Telegram delivers an album as one message per picture, each with
the album's id, in quick succession; the /animate on one waits for the other."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

from telegram import Message

from bot.requests import UserError
from bot.telegram.pictures import END_USAGE, PictureFile, picture_file

ALBUM_WAIT = 3.0  # seconds the /animate of an album waits for its other picture
KEEP = 60.0  # seconds an album's pictures are remembered


class Albums:
    def __init__(self) -> None:
        self._parts: defaultdict[str, dict[int, Message]] = defaultdict(dict)
        self._seen: dict[str, float] = {}
        self._changed = asyncio.Event()

    def add(self, message: Message) -> None:
        group = message.media_group_id
        if group is None:
            return
        self._forget_old()
        self._parts[group][message.message_id] = message
        self._seen[group] = time.monotonic()
        self._changed.set()
        self._changed = asyncio.Event()

    def _forget_old(self) -> None:
        now = time.monotonic()
        for group, seen in list(self._seen.items()):
            if now - seen > KEEP:
                self._parts.pop(group, None)
                del self._seen[group]

    async def other_picture(self, message: Message) -> PictureFile:
        """The album's other picture: the end image of the /animate on `message`."""
        group = message.media_group_id
        assert group is not None
        self.add(message)
        deadline = time.monotonic() + ALBUM_WAIT
        while len(self._parts[group]) < 2 and (left := deadline - time.monotonic()) > 0:
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), left)
            except TimeoutError:
                break
        others = [m for m in self._parts[group].values() if m.message_id != message.message_id]
        if len(others) != 1:
            raise UserError(END_USAGE)
        found = picture_file(others[0])
        if found is None or found.is_video:
            raise UserError("The second picture of the album must be a picture, not a video.")
        return found
