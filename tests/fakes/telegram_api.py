"""A fake Telegram Bot API served on loopback, for end-to-end tests of the Telegram adapter.

The real python-telegram-bot client talks HTTP to it as it would to api.telegram.org::

    async with FakeTelegram() as tg:
        app = (Application.builder().token(tg.token)
               .base_url(tg.base_url).base_file_url(tg.base_file_url).build())
        ...  # start polling
        photo = tg.user_sends_photo(user_id=7, image=png, caption="/animate a cat")
        await tg.wait_for(lambda: tg.messages(7))

Tests drive it as users would (``user_sends_*``, ``user_presses_button``) and read what
users would see (``messages``: each bot message in its current state with its edit
history). It answers as Telegram does where a bot can get it wrong: the length of texts
and captions counted after entity parsing, "message is not modified", flood control
with 429 and ``retry_after``, the 20 MB download and 50 MB upload limits (2000 MB with
``local_mode``), group privacy mode, long polling that confirms updates only through
``offset`` (so an update handed to a bot that died is handed out again).

Everything runs on the test's event loop; state changes only in the request handlers
and the ``user_*`` methods, which is what lets ``wait_for`` sleep on an event instead
of polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import math
import mimetypes
import re
import shutil
import tempfile
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar
from urllib.parse import unquote, urlparse

from aiohttp import web
from PIL import Image

T = TypeVar("T")
Kind = Literal["text", "photo", "video", "document", "animation"]
ChatType = Literal["private", "group", "supergroup"]

MiB = 1 << 20
TEXT_LIMIT = 4096  # characters of a message's text, after entity parsing
CAPTION_LIMIT = 1024  # characters of a media caption, after entity parsing
CALLBACK_DATA_LIMIT = 64  # bytes of a button's callback_data
PHOTO_LIMIT = 10 * 1000 * 1000  # bytes of a photo a bot uploads

# Descriptions as Telegram words them; python-telegram-bot strips "Bad Request: " and
# capitalises the rest into BadRequest.message.
NOT_MODIFIED = (
    "message is not modified: specified new message content and reply markup are exactly "
    "the same as a current content and reply markup of the message"
)
CONFLICT = (
    "Conflict: terminated by other getUpdates request; "
    "make sure that only one bot instance is running"
)
CHAT_ACTIONS = frozenset(
    {
        "typing", "upload_photo", "record_video", "upload_video", "record_voice",
        "upload_voice", "upload_document", "choose_sticker", "find_location",
        "record_video_note", "upload_video_note",
    }
)  # fmt: skip


# --- records tests read -------------------------------------------------------------------


@dataclass(frozen=True)
class Limit:
    """At most ``count`` sends or edits in any window of ``seconds``."""

    count: int
    seconds: float


@dataclass(frozen=True)
class FloodLimits:
    """How many sends and edits Telegram takes before it answers 429; None: no limit.

    Telegram asks for about one message a second in a chat (short bursts pass), twenty a
    minute in a group and thirty a second overall; edits count like messages.
    """

    per_chat: Limit | None = Limit(3, 3.0)
    per_group: Limit | None = Limit(20, 60.0)
    overall: Limit | None = Limit(30, 1.0)

    @classmethod
    def strict(cls) -> FloodLimits:
        """One a second in a chat, no burst: what a careful bot should keep to."""
        return cls(per_chat=Limit(1, 1.0))


DEFAULT_FLOOD = FloodLimits()


@dataclass(frozen=True)
class FileLimits:
    """Sizes Telegram refuses, in bytes; None: no limit."""

    download: int | None = 20 * MiB  # getFile: "file is too big"
    upload: int | None = 50 * MiB  # multipart body: 413 Request Entity Too Large

    @classmethod
    def local(cls) -> FileLimits:
        """A local Bot API server (``--local``): any download, uploads up to 2000 MB."""
        return cls(download=None, upload=2000 * MiB)


@dataclass(frozen=True)
class Upload:
    """A file part of a multipart request."""

    field_name: str
    file_name: str | None
    mime_type: str | None
    data: bytes = field(repr=False)

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class StoredFile:
    """A file Telegram holds, under its file_id."""

    file_id: str
    file_unique_id: str
    kind: str  # "photo" (one size of a photo), "video", "document", "animation"
    file_path: str  # relative, as getFile returns it: "photos/file_3.jpg"
    data: bytes = field(repr=False)
    file_name: str | None = None
    mime_type: str | None = None
    width: int = 0
    height: int = 0
    duration: int = 0

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class Entity:
    """A formatting entity, its offset and length in characters of the plain text."""

    type: str
    offset: int
    length: int
    url: str | None = None


@dataclass(frozen=True)
class Button:
    """An inline keyboard button."""

    text: str
    callback_data: str | None = None
    url: str | None = None


Keyboard = tuple[tuple[Button, ...], ...]


@dataclass(frozen=True)
class MessageState:
    """What a message shows at one moment: its first state, or one after an edit."""

    kind: Kind
    text: str  # the text, or the caption of a media message ("" for none), as users read it
    entities: tuple[Entity, ...] = ()
    keyboard: Keyboard = ()
    files: tuple[StoredFile, ...] = ()  # a photo's sizes smallest first; else one file
    force_reply: bool = False  # the bot asked the user's client to reply to it
    at: float = field(default=0.0, compare=False)  # when the fake took it (its clock)

    @property
    def file(self) -> StoredFile | None:
        """The media file (a photo's largest size)."""
        return self.files[-1] if self.files else None

    @property
    def media(self) -> bytes | None:
        return self.files[-1].data if self.files else None

    def same_as(self, other: MessageState) -> bool:
        """Telegram's test for "message is not modified"."""
        mine, theirs = self.file, other.file
        return (
            self.kind == other.kind
            and self.text == other.text
            and self.entities == other.entities
            and self.keyboard == other.keyboard
            and (mine.file_unique_id if mine else None)
            == (theirs.file_unique_id if theirs else None)
        )


@dataclass(eq=False)
class Message:
    """A message in a chat, the bot's or a user's, with every state it went through."""

    chat_id: int
    message_id: int
    sender_id: int
    from_bot: bool
    date: int
    reply_to_message_id: int | None
    history: list[MessageState]  # as sent, then after each edit, in order
    deleted: bool = False
    edit_date: int | None = None
    reached_bot: bool = False  # a user's message the bot received (group privacy mode)
    media_group_id: str | None = None  # pictures sent together (an album)

    @property
    def state(self) -> MessageState:
        return self.history[-1]

    @property
    def kind(self) -> Kind:
        return self.state.kind

    @property
    def text(self) -> str:
        """The text, or the caption of a media message, as users read it."""
        return self.state.text

    @property
    def caption(self) -> str | None:
        return None if self.kind == "text" else self.state.text

    @property
    def reply_markup(self) -> Keyboard:
        return self.state.keyboard

    @property
    def buttons(self) -> list[Button]:
        return [button for row in self.state.keyboard for button in row]

    @property
    def media(self) -> bytes | None:
        return self.state.media

    @property
    def file(self) -> StoredFile | None:
        return self.state.file

    @property
    def edits(self) -> int:
        return len(self.history) - 1

    def button(self, text: str) -> Button:
        """The button whose label contains ``text``."""
        for button in self.buttons:
            if text in button.text:
                return button
        raise LookupError(f"no button {text!r} in {[b.text for b in self.buttons]}")


@dataclass(frozen=True)
class Call:
    """One request to the API and Telegram's answer."""

    method: str
    params: dict[str, Any]  # decoded; file parts as Upload records
    status: int
    response: dict[str, Any]
    at: float  # the fake's clock

    @property
    def ok(self) -> bool:
        return self.status == 200

    @property
    def result(self) -> Any:
        return self.response.get("result")

    @property
    def description(self) -> str | None:
        return self.response.get("description")


@dataclass(frozen=True)
class AnsweredCallback:
    query_id: str
    user_id: int
    data: str
    text: str | None
    show_alert: bool
    url: str | None


@dataclass(frozen=True)
class ChatAction:
    chat_id: int
    action: str
    at: float  # the fake's clock


@dataclass
class Chat:
    id: int
    type: ChatType
    blocked: bool = False  # a private chat whose user blocked the bot

    def to_json(self) -> dict[str, Any]:
        if self.type == "private":
            return {"id": self.id, "type": "private", **_user_names(self.id)}
        return {"id": self.id, "type": self.type, "title": f"Group {self.id}"}


@dataclass(frozen=True)
class _PendingCallback:
    user_id: int
    data: str


class ApiError(Exception):
    """An answer other than ok, as Telegram sends it."""

    def __init__(self, code: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ok": False,
            "error_code": self.code,
            "description": self.description,
        }
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        return body


def bad_request(what: str) -> ApiError:
    return ApiError(400, f"Bad Request: {what}")


# --- the fake -----------------------------------------------------------------------------


class FakeTelegram:
    """An in-process Telegram Bot API on 127.0.0.1 and a random port."""

    def __init__(
        self,
        *,
        token: str = "123456:TEST",
        bot_username: str = "framepack_test_bot",
        flood: FloodLimits | None = DEFAULT_FLOOD,
        local_mode: bool = False,
        group_privacy: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.token = token
        self.bot_username = bot_username
        self.bot_id = int(token.split(":", 1)[0])
        self.local_mode = local_mode
        self.file_limits = FileLimits.local() if local_mode else FileLimits()
        # Privacy mode: in groups the bot gets only commands, and replies to it or to them.
        self.group_privacy = group_privacy
        self._clock = clock
        self._gate = _FloodGate(flood, clock) if flood else None

        self.calls: list[Call] = []
        self.answered_callbacks: list[AnsweredCallback] = []
        self.chat_actions: list[ChatAction] = []
        self.downloads: list[str] = []  # file paths fetched from the file URL
        self.commands: list[dict[str, Any]] = []  # as set by setMyCommands
        self.too_many_requests = 0  # 429s answered, forced or provoked
        self.provoked_429s = 0  # of those, the ones the flood limits gave

        self._chats: dict[int, Chat] = {}
        self._messages: dict[int, dict[int, Message]] = defaultdict(dict)
        self._message_ids: dict[int, itertools.count[int]] = defaultdict(lambda: itertools.count(1))
        self._files: dict[str, StoredFile] = {}
        self._files_by_path: dict[str, StoredFile] = {}
        self._photos: dict[str, tuple[StoredFile, ...]] = {}  # any size's file_id: all sizes
        self._file_numbers = itertools.count(1)
        self._updates: deque[dict[str, Any]] = deque()
        self._update_ids = itertools.count(1)
        self._allowed_updates: frozenset[str] | None = None
        self._callbacks: dict[str, _PendingCallback] = {}
        self._callback_ids = itertools.count(1_000_001)
        self._forced_429s: dict[str, deque[int]] = defaultdict(deque)
        self._forced_errors: dict[str, deque[tuple[int, str]]] = defaultdict(deque)
        self._outages: dict[str, tuple[float, bool]] = {}  # method -> (until, held)
        self.handler_errors: list[BaseException] = []  # the fake's own crashes
        self._poll_generation = 0
        self.waiting_polls = 0  # getUpdates requests held open now
        self._changed = asyncio.Event()
        self._closing = False
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._local_dir: Path | None = None
        self._methods: dict[str, tuple[str, Callable[[dict, dict], Any]]] = {
            name.lower(): (name, handler)
            for name, handler in {
                "getMe": self._get_me,
                "getFile": self._get_file,
                "sendMessage": self._send_message,
                "sendPhoto": self._send_photo,
                "sendVideo": self._send_video,
                "sendDocument": self._send_document,
                "sendAnimation": self._send_animation,
                "editMessageText": self._edit_message_text,
                "editMessageCaption": self._edit_message_caption,
                "editMessageMedia": self._edit_message_media,
                "editMessageReplyMarkup": self._edit_message_reply_markup,
                "deleteMessage": self._delete_message,
                "answerCallbackQuery": self._answer_callback_query,
                "sendChatAction": self._send_chat_action,
                "deleteWebhook": self._delete_webhook,
                "getWebhookInfo": self._get_webhook_info,
                "setMyCommands": self._set_my_commands,
                "getMyCommands": lambda params, uploads: self.commands,
                "deleteMyCommands": self._delete_my_commands,
                "close": lambda params, uploads: True,
                "logOut": lambda params, uploads: True,
                "getUpdates": self._not_awaited,  # answered in _handle_api, it waits
            }.items()
        }

    # --- life cycle ---------------------------------------------------------------------

    async def start(self) -> None:
        # The client's limit is ours to answer (413 as JSON), so aiohttp's is set out of reach.
        app = web.Application(client_max_size=4096 * MiB)
        app.router.add_route("*", "/bot{token}/{method}", self._handle_api)
        app.router.add_get("/file/bot{token}/{path:.+}", self._handle_download)
        # handler_cancellation: a long poll whose client went away (a stopped or killed
        # bot) ends instead of holding updates; they stay queued until confirmed anyway.
        self._runner = web.AppRunner(
            app, handler_cancellation=True, shutdown_timeout=0.5, access_log=None
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = self._runner.addresses[0][1]
        if self.local_mode:
            self._local_dir = Path(tempfile.mkdtemp(prefix="fake-telegram-"))

    async def stop(self) -> None:
        self._closing = True
        self._touch()  # pending long polls answer now, with what they have
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._local_dir is not None:
            shutil.rmtree(self._local_dir, ignore_errors=True)
            self._local_dir = None

    async def __aenter__(self) -> FakeTelegram:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
        if self.handler_errors and exc is None:
            raise AssertionError(
                f"the fake Bot API crashed in its own handler: {self.handler_errors!r}"
            ) from self.handler_errors[0]

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeTelegram is not started")
        return self._port

    @property
    def base_url(self) -> str:
        """For ``Application.builder().base_url(...)``: the token is appended to it."""
        return f"http://127.0.0.1:{self.port}/bot"

    @property
    def base_file_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/file/bot"

    # --- test controls ------------------------------------------------------------------

    @property
    def flood(self) -> FloodLimits | None:
        return self._gate.limits if self._gate else None

    @flood.setter
    def flood(self, limits: FloodLimits | None) -> None:
        """Change the limits (None: off); what was counted so far is forgotten."""
        self._gate = _FloodGate(limits, self._clock) if limits else None

    def force_retry_after(self, method: str, seconds: int, times: int = 1) -> None:
        """Answer the next ``times`` calls of ``method`` with 429 and ``retry_after``."""
        self._forced_429s[method.lower()].extend([seconds] * times)

    def force_error(self, method: str, description: str, *, code: int = 400) -> None:
        """The next call of `method` is answered with this error (as Telegram words it)."""
        self._forced_errors[method.lower()].append((code, description))

    def outage(
        self, seconds: float, *, methods: tuple[str, ...] = ("getFile", "download"), held: bool
    ) -> None:
        """The Bot API out for `seconds` for these methods ("download": the file URL):
        500s, or (`held`) requests left unanswered until it is over, then a 502."""
        until = self._clock() + seconds
        for method in methods:
            self._outages[method.lower()] = (until, held)

    async def _out(self, method: str) -> None:
        found = self._outages.get(method.lower())
        if found is None:
            return
        until, held = found
        now = self._clock()
        if now >= until:
            del self._outages[method.lower()]
            return
        if held:
            await asyncio.sleep(until - now)
            raise ApiError(502, "Bad Gateway")
        raise ApiError(500, "Internal Server Error")

    def user_blocks_bot(self, user_id: int) -> None:
        """Sends to the user's private chat answer 403 from now on."""
        self._chat(user_id, "private").blocked = True

    # --- what users do ------------------------------------------------------------------

    def user_sends_text(
        self,
        *,
        user_id: int,
        text: str,
        chat_id: int | None = None,
        chat_type: ChatType = "private",
        reply_to: int | None = None,
    ) -> Message:
        state = MessageState("text", text, _bot_commands(text))
        return self._user_message(user_id, chat_id, chat_type, state, reply_to)

    def user_sends_photo(
        self,
        *,
        user_id: int,
        image: bytes,
        caption: str | None = None,
        chat_id: int | None = None,
        chat_type: ChatType = "private",
        reply_to: int | None = None,
    ) -> Message:
        """A picture sent as a photo: Telegram gives the bot several sizes, largest last."""
        try:
            sizes = self._store_photo(image)
        except ApiError as error:
            raise ValueError(f"a user's photo must be an image Pillow reads: {error}") from None
        caption = caption or ""
        state = MessageState("photo", caption, _bot_commands(caption), files=sizes)
        return self._user_message(user_id, chat_id, chat_type, state, reply_to)

    def user_sends_document(
        self,
        *,
        user_id: int,
        data: bytes,
        file_name: str,
        mime_type: str,
        caption: str | None = None,
        chat_id: int | None = None,
        chat_type: ChatType = "private",
        reply_to: int | None = None,
    ) -> Message:
        """Any bytes sent as a file ("send as file" of an image, or a corrupt one)."""
        stored = self._store_file("document", data, file_name=file_name, mime_type=mime_type)
        caption = caption or ""
        state = MessageState("document", caption, _bot_commands(caption), files=(stored,))
        return self._user_message(user_id, chat_id, chat_type, state, reply_to)

    def user_sends_video(
        self,
        *,
        user_id: int,
        data: bytes,
        duration: int,
        width: int,
        height: int,
        caption: str | None = None,
        chat_id: int | None = None,
        chat_type: ChatType = "private",
        reply_to: int | None = None,
    ) -> Message:
        """A video as Telegram delivers one the user sent as a video (not as a file)."""
        stored = self._store_file(
            "video",
            data,
            file_name="video.mp4",
            mime_type="video/mp4",
            width=width,
            height=height,
            duration=duration,
        )
        caption = caption or ""
        state = MessageState("video", caption, _bot_commands(caption), files=(stored,))
        return self._user_message(user_id, chat_id, chat_type, state, reply_to)

    def user_sends_album(
        self,
        *,
        user_id: int,
        images: list[bytes],
        caption: str | None = None,
        chat_id: int | None = None,
        chat_type: ChatType = "private",
    ) -> list[Message]:
        """Pictures sent together: one message each with the same media_group_id, the
        caption on the first, as Telegram delivers an album."""
        group = str(next(self._file_numbers) + 10**12)
        sent = []
        for n, image in enumerate(images):
            text = (caption or "") if n == 0 else ""
            state = MessageState("photo", text, _bot_commands(text), files=self._store_photo(image))
            sent.append(
                self._user_message(user_id, chat_id, chat_type, state, None, media_group=group)
            )
        return sent

    def user_sends_animation(
        self,
        *,
        user_id: int,
        data: bytes,
        file_name: str = "animation.mp4",
        mime_type: str = "video/mp4",
        caption: str | None = None,
        chat_id: int | None = None,
        chat_type: ChatType = "private",
        reply_to: int | None = None,
    ) -> Message:
        """A GIF as Telegram delivers it: an animation (a silent MP4), a document alongside."""
        stored = self._store_file("animation", data, file_name=file_name, mime_type=mime_type)
        caption = caption or ""
        state = MessageState("animation", caption, _bot_commands(caption), files=(stored,))
        return self._user_message(user_id, chat_id, chat_type, state, reply_to)

    def user_presses_button(
        self, *, user_id: int, chat_id: int, message_id: int, data: str, forged: bool = False
    ) -> str:
        """Press the inline button carrying ``data``; returns the callback query id.

        `forged`: data no button carries, as a modified client can send (Telegram only
        checks its length, at most 64 bytes)."""
        message = self.message(chat_id, message_id)
        if len(data.encode()) > CALLBACK_DATA_LIMIT:
            raise ValueError(f"callback data over {CALLBACK_DATA_LIMIT} bytes: {data!r}")
        shown = any(b.callback_data == data for b in message.buttons)
        if message.deleted or not (shown or forged):
            raise ValueError(
                f"message {message_id} shows no button with data {data!r}: "
                f"{[b.callback_data for b in message.buttons]}"
            )
        query_id = str(next(self._callback_ids))
        self._callbacks[query_id] = _PendingCallback(user_id, data)
        self._queue_update(
            "callback_query",
            {
                "id": query_id,
                "from": _user_json(user_id),
                "message": self._message_json(message),
                "chat_instance": str(chat_id),
                "data": data,
            },
        )
        return query_id

    # --- what users see -----------------------------------------------------------------

    def messages(self, chat_id: int) -> list[Message]:
        """The bot's messages in a chat, oldest first, deleted ones included (flagged)."""
        return [m for m in self._messages[chat_id].values() if m.from_bot]

    def message(self, chat_id: int, message_id: int) -> Message:
        """Any message, the bot's or a user's."""
        try:
            return self._messages[chat_id][message_id]
        except KeyError:
            raise LookupError(f"no message {message_id} in chat {chat_id}") from None

    def calls_to(self, method: str) -> list[Call]:
        return [call for call in self.calls if call.method == method]

    @property
    def pending_updates(self) -> int:
        """Updates queued and not yet confirmed by an ``offset``."""
        return len(self._updates)

    async def wait_for(self, predicate: Callable[[], T], timeout: float = 5.0) -> T:
        """Wait until ``predicate()`` over the fake's state is true and return its value.

        Sleeps on the change event the fake sets after every request and user action.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not (result := predicate()):
            remaining = deadline - loop.time()
            if remaining <= 0:
                recent = [
                    f"{c.method} {c.status} {c.description or ''}".strip() for c in self.calls[-8:]
                ]
                raise TimeoutError(f"not true within {timeout} s; last calls: {recent}")
            await self._wait_change(remaining)
        return result

    # --- HTTP ---------------------------------------------------------------------------

    async def _handle_api(self, request: web.Request) -> web.Response:
        name, handler = self._methods.get(
            request.match_info["method"].lower(), (request.match_info["method"], None)
        )
        params: dict[str, Any] = {}
        uploads: dict[str, Upload] = {}
        try:
            self._check_token(request.match_info["token"])
            params, uploads = await _read_params(request)
            if handler is None:
                raise ApiError(404, "Not Found")
            await self._out(name)
            limit = self.file_limits.upload
            if limit is not None and sum(u.size for u in uploads.values()) > limit:
                raise ApiError(413, "Request Entity Too Large")
            error = self._forced_errors.get(name.lower())
            if error:
                raise ApiError(*error.popleft())
            forced = self._forced_429s.get(name.lower())
            if forced:
                seconds = forced.popleft()
                raise ApiError(429, f"Too Many Requests: retry after {seconds}", seconds)
            if name == "getUpdates":
                result = await self._get_updates(params)
            else:
                result = self._through_flood_gate(name, params, lambda: handler(params, uploads))
            status, body = 200, {"ok": True, "result": result}
        except ApiError as error:
            status, body = error.code, error.body()
            if error.code == 429:
                self.too_many_requests += 1
        except Exception as crash:  # the fake's own bug: the test that met it fails
            self.handler_errors.append(crash)
            raise
        self.calls.append(Call(name, {**params, **uploads}, status, body, self._clock()))
        self._touch()
        return web.json_response(body, status=status)

    async def _handle_download(self, request: web.Request) -> web.StreamResponse:
        try:
            self._check_token(request.match_info["token"])
            await self._out("download")
        except ApiError as error:
            return web.json_response(error.body(), status=error.code)
        stored = self._files_by_path.get(request.match_info["path"])
        if stored is None:
            return web.json_response(ApiError(404, "Not Found").body(), status=404)
        self.downloads.append(stored.file_path)
        self._touch()
        return web.Response(
            body=stored.data, content_type=stored.mime_type or "application/octet-stream"
        )

    def _check_token(self, token: str) -> None:
        if token == self.token:
            return
        # Telegram: a well-formed token it does not know is 401, anything else 404.
        if re.fullmatch(r"\d+:[A-Za-z0-9_-]+", token):
            raise ApiError(401, "Unauthorized")
        raise ApiError(404, "Not Found")

    def _through_flood_gate(self, method: str, params: dict, call: Callable[[], T]) -> T:
        """Sends and edits count against the flood limits, once they succeed."""
        chat = self._chats.get(params.get("chat_id"))  # type: ignore[arg-type]
        gate = self._gate
        if gate is None or chat is None or method not in _FLOOD_COUNTED:
            return call()
        wait = gate.retry_after(chat)
        if wait:
            self.provoked_429s += 1
            raise ApiError(429, f"Too Many Requests: retry after {wait}", wait)
        result = call()
        gate.record(chat)
        return result

    def _touch(self) -> None:
        """Wake everything waiting for a change (long polls, ``wait_for``)."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_change(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    # --- updates ------------------------------------------------------------------------

    def _queue_update(self, kind: str, payload: dict[str, Any]) -> None:
        if self._allowed_updates is None or kind in self._allowed_updates:
            self._updates.append({"update_id": next(self._update_ids), kind: payload})
        self._touch()

    async def _get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        offset = params.get("offset")
        limit = min(max(int(params.get("limit") or 100), 1), 100)
        timeout = max(float(params.get("timeout") or 0), 0.0)
        if params.get("allowed_updates"):
            self._allowed_updates = frozenset(params["allowed_updates"])
        if offset:
            self._confirm(int(offset))
        # Telegram answers an older pending getUpdates with 409 when a newer one arrives.
        self._poll_generation += 1
        generation = self._poll_generation
        self._touch()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if generation != self._poll_generation:
                raise ApiError(409, CONFLICT)
            remaining = deadline - loop.time()
            if self._updates or remaining <= 0 or self._closing:
                return list(itertools.islice(self._updates, limit))
            self.waiting_polls += 1
            self._touch()
            try:
                await self._wait_change(remaining)
            finally:
                self.waiting_polls -= 1

    def _confirm(self, offset: int) -> None:
        """Forget updates below ``offset``; a negative one keeps the last ``-offset``."""
        if offset < 0:
            while len(self._updates) > -offset:
                self._updates.popleft()
            return
        while self._updates and self._updates[0]["update_id"] < offset:
            self._updates.popleft()

    def _not_awaited(self, params: dict, uploads: dict) -> Any:
        raise AssertionError("getUpdates is answered by _get_updates")

    # --- methods ------------------------------------------------------------------------

    def _get_me(self, params: dict, uploads: dict) -> dict[str, Any]:
        return {
            **self._bot_json(),
            "can_join_groups": True,
            "can_read_all_group_messages": not self.group_privacy,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }

    def _delete_webhook(self, params: dict, uploads: dict) -> bool:
        if params.get("drop_pending_updates"):
            self._updates.clear()
        return True

    def _get_webhook_info(self, params: dict, uploads: dict) -> dict[str, Any]:
        return {"url": "", "has_custom_certificate": False, "pending_update_count": 0}

    def _set_my_commands(self, params: dict, uploads: dict) -> bool:
        self.commands = list(params.get("commands") or [])
        return True

    def _delete_my_commands(self, params: dict, uploads: dict) -> bool:
        self.commands = []
        return True

    def _get_file(self, params: dict, uploads: dict) -> dict[str, Any]:
        stored = self._files.get(str(params.get("file_id", "")))
        if stored is None:
            raise bad_request("invalid file_id")
        limit = self.file_limits.download
        if limit is not None and stored.size > limit:
            raise bad_request("file is too big")
        result = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": stored.size,
            "file_path": stored.file_path,
        }
        if self._local_dir is not None:
            # A local server answers with the file's absolute path on its own disk, which
            # python-telegram-bot then reads instead of downloading.
            path = self._local_dir / stored.file_path
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(stored.data)
            result["file_path"] = str(path)
        return result

    def _send_message(self, params: dict, uploads: dict) -> dict[str, Any]:
        chat = self._chat_of(params)
        text, entities = _formatted(params.get("text"), params, "entities")
        _check_text(text)
        markup = params.get("reply_markup")
        asks = isinstance(markup, dict) and bool(markup.get("force_reply"))
        state = MessageState("text", text, entities, _keyboard(params), force_reply=asks)
        return self._bot_message(chat, state, self._reply_target(chat, params))

    def _send_photo(self, params: dict, uploads: dict) -> dict[str, Any]:
        return self._send_media("photo", params, uploads)

    def _send_video(self, params: dict, uploads: dict) -> dict[str, Any]:
        return self._send_media("video", params, uploads)

    def _send_document(self, params: dict, uploads: dict) -> dict[str, Any]:
        return self._send_media("document", params, uploads)

    def _send_animation(self, params: dict, uploads: dict) -> dict[str, Any]:
        return self._send_media("animation", params, uploads)

    def _send_media(self, kind: Kind, params: dict, uploads: dict) -> dict[str, Any]:
        chat = self._chat_of(params)
        caption, entities = _formatted(params.get("caption"), params, "caption_entities")
        _check_caption(caption)
        reply_to = self._reply_target(chat, params)
        files = self._input_file(kind, params.get(kind), uploads, params)
        state = MessageState(kind, caption, entities, _keyboard(params), files)
        return self._bot_message(chat, state, reply_to)

    def _edit_message_text(self, params: dict, uploads: dict) -> dict[str, Any]:
        message = self._editable(params)
        if message.kind != "text":
            raise bad_request("there is no text in the message to edit")
        text, entities = _formatted(params.get("text"), params, "entities")
        _check_text(text)
        new = replace(message.state, text=text, entities=entities, keyboard=_keyboard(params))
        return self._edit(message, new)

    def _edit_message_caption(self, params: dict, uploads: dict) -> dict[str, Any]:
        message = self._editable(params)
        if message.kind == "text":
            raise bad_request("there is no caption in the message to edit")
        caption, entities = _formatted(params.get("caption"), params, "caption_entities")
        _check_caption(caption)
        new = replace(message.state, text=caption, entities=entities, keyboard=_keyboard(params))
        return self._edit(message, new)

    def _edit_message_media(self, params: dict, uploads: dict) -> dict[str, Any]:
        message = self._editable(params)
        media = params.get("media")
        if not isinstance(media, dict):
            raise bad_request("can't parse InputMedia JSON object")
        if message.kind == "text":
            raise bad_request("there is no media in the message to edit")
        kind = media.get("type")
        if kind not in ("photo", "video", "animation", "document"):
            raise bad_request(f"media type {kind!r} is not supported by the fake")
        caption, entities = _formatted(media.get("caption"), media, "caption_entities")
        _check_caption(caption)
        files = self._input_file(kind, media.get("media"), uploads, media)
        return self._edit(message, MessageState(kind, caption, entities, _keyboard(params), files))

    def _edit_message_reply_markup(self, params: dict, uploads: dict) -> dict[str, Any]:
        message = self._editable(params)
        return self._edit(message, replace(message.state, keyboard=_keyboard(params)))

    def _delete_message(self, params: dict, uploads: dict) -> bool:
        chat = self._chat_of(params)
        message = self._messages[chat.id].get(params.get("message_id"))  # type: ignore[arg-type]
        if message is None or message.deleted:
            raise bad_request("message to delete not found")
        if not message.from_bot and chat.type != "private":
            raise bad_request("message can't be deleted")  # needs admin rights in groups
        message.deleted = True
        return True

    def _answer_callback_query(self, params: dict, uploads: dict) -> bool:
        query_id = str(params.get("callback_query_id", ""))
        pending = self._callbacks.pop(query_id, None)
        if pending is None:
            raise bad_request(
                "query is too old and response timeout expired or query ID is invalid"
            )
        self.answered_callbacks.append(
            AnsweredCallback(
                query_id=query_id,
                user_id=pending.user_id,
                data=pending.data,
                text=params.get("text"),
                show_alert=bool(params.get("show_alert")),
                url=params.get("url"),
            )
        )
        return True

    def _send_chat_action(self, params: dict, uploads: dict) -> bool:
        chat = self._chat_of(params)
        action = params.get("action")
        if action not in CHAT_ACTIONS:
            raise bad_request("wrong parameter action in request")
        self.chat_actions.append(ChatAction(chat.id, action, self._clock()))
        return True

    # --- chats and messages -------------------------------------------------------------

    def _chat(self, chat_id: int, chat_type: ChatType) -> Chat:
        chat = self._chats.setdefault(chat_id, Chat(chat_id, chat_type))
        if chat.type != chat_type:
            raise ValueError(f"chat {chat_id} is a {chat.type} chat, not {chat_type}")
        return chat

    def _chat_of(self, params: dict[str, Any]) -> Chat:
        chat_id = params.get("chat_id")
        if chat_id is None or chat_id == "":
            raise bad_request("chat_id is empty")
        chat = self._chats.get(chat_id) if isinstance(chat_id, int) else None
        if chat is None:
            raise bad_request("chat not found")
        if chat.blocked:
            raise ApiError(403, "Forbidden: bot was blocked by the user")
        return chat

    def _reply_target(self, chat: Chat, params: dict[str, Any]) -> int | None:
        reply = params.get("reply_parameters")
        if not isinstance(reply, dict):
            if params.get("reply_to_message_id") is None:
                return None
            reply = {"message_id": params["reply_to_message_id"]}
        target = self._messages[chat.id].get(reply.get("message_id"))  # type: ignore[arg-type]
        if target is None or target.deleted:
            if reply.get("allow_sending_without_reply") or params.get(
                "allow_sending_without_reply"
            ):
                return None
            raise bad_request("message to be replied not found")
        return target.message_id

    def _editable(self, params: dict[str, Any]) -> Message:
        if params.get("inline_message_id"):
            raise bad_request("the fake does not implement inline messages")
        chat = self._chat_of(params)
        message = self._messages[chat.id].get(params.get("message_id"))  # type: ignore[arg-type]
        if message is None or message.deleted:
            raise bad_request("message to edit not found")
        if not message.from_bot:
            raise bad_request("message can't be edited")
        return message

    def _edit(self, message: Message, new: MessageState) -> dict[str, Any]:
        if new.same_as(message.state):
            raise bad_request(NOT_MODIFIED)
        message.history.append(replace(new, at=self._clock()))
        message.edit_date = int(time.time())
        return self._message_json(message)

    def _bot_message(self, chat: Chat, state: MessageState, reply_to: int | None) -> dict[str, Any]:
        message = self._new_message(chat, self.bot_id, True, state, reply_to)
        return self._message_json(message)

    def _new_message(
        self,
        chat: Chat,
        sender_id: int,
        from_bot: bool,
        state: MessageState,
        reply_to: int | None,
    ) -> Message:
        message = Message(
            chat_id=chat.id,
            message_id=next(self._message_ids[chat.id]),
            sender_id=sender_id,
            from_bot=from_bot,
            date=int(time.time()),
            reply_to_message_id=reply_to,
            history=[replace(state, at=self._clock())],
        )
        self._messages[chat.id][message.message_id] = message
        return message

    def _user_message(
        self,
        user_id: int,
        chat_id: int | None,
        chat_type: ChatType,
        state: MessageState,
        reply_to: int | None,
        media_group: str | None = None,
    ) -> Message:
        if chat_type == "private" and chat_id not in (None, user_id):
            raise ValueError("a private chat's id is its user's id")
        chat = self._chat(user_id if chat_id is None else chat_id, chat_type)
        if reply_to is not None:
            target = self.message(chat.id, reply_to)
            if target.deleted:
                raise ValueError(f"message {reply_to} was deleted")
        message = self._new_message(chat, user_id, False, state, reply_to)
        message.media_group_id = media_group
        message.reached_bot = self._reaches_bot(chat, message)
        if message.reached_bot:
            self._queue_update("message", self._message_json(message))
        self._touch()
        return message

    def _reaches_bot(self, chat: Chat, message: Message) -> bool:
        """Privacy mode: what a bot gets of a group is commands, and replies to it or them."""
        if chat.type == "private" or not self.group_privacy:
            return True
        first = message.state.entities[0] if message.state.entities else None
        if first is not None and first.type == "bot_command" and first.offset == 0:
            command = message.text[: first.length]
            addressee = command.partition("@")[2]
            return addressee.lower() in ("", self.bot_username.lower())
        if message.reply_to_message_id is not None:
            target = self._messages[chat.id][message.reply_to_message_id]
            return target.from_bot or target.reached_bot
        return False

    # --- files --------------------------------------------------------------------------

    def _input_file(
        self, kind: str, value: Any, uploads: dict[str, Upload], spec: dict[str, Any]
    ) -> tuple[StoredFile, ...]:
        """The files a send or an edit names: an upload, a file_id, or a local path."""
        if value is None or value == "":
            upload = uploads.get(kind)  # sendPhoto & co. upload under the parameter's name
            if upload is None:
                raise bad_request(f"there is no {kind} in the request")
            return self._store_upload(kind, upload, spec)
        if not isinstance(value, str):
            raise bad_request("wrong file identifier/HTTP URL specified")
        if value.startswith("attach://"):
            upload = uploads.get(value.removeprefix("attach://"))
            if upload is None:
                raise bad_request("wrong file identifier/HTTP URL specified")
            return self._store_upload(kind, upload, spec)
        if value.startswith("file://") and self.local_mode:
            path = Path(unquote(urlparse(value).path))
            if not path.is_file():
                raise bad_request("file not found")
            mime = mimetypes.guess_type(path.name)[0]
            return self._store_upload(kind, Upload(kind, path.name, mime, path.read_bytes()), spec)
        if "://" in value:
            raise bad_request("wrong file identifier/HTTP URL specified")
        return self._known_file(kind, value)

    def _known_file(self, kind: str, file_id: str) -> tuple[StoredFile, ...]:
        files = self._photos.get(file_id) or (
            (self._files[file_id],) if file_id in self._files else None
        )
        if files is None:
            raise bad_request("wrong file identifier/HTTP URL specified")
        if files[0].kind != kind:
            raise bad_request(
                f"can't use file of type {files[0].kind.capitalize()} as {kind.capitalize()}"
            )
        return files

    def _store_upload(
        self, kind: str, upload: Upload, spec: dict[str, Any]
    ) -> tuple[StoredFile, ...]:
        if not upload.data:
            raise bad_request("file must be non-empty")
        if kind == "photo":
            if len(upload.data) > PHOTO_LIMIT:  # Telegram takes photos up to 10 MB
                raise bad_request("PHOTO_INVALID_DIMENSIONS")
            return self._store_photo(upload.data)
        if kind in ("video", "animation") and upload.data[4:8] != b"ftyp":
            # what is no MP4 (no ftyp box first) Telegram cannot play as a video
            raise bad_request("wrong type of the web page content")
        default_mime = "application/octet-stream" if kind == "document" else "video/mp4"
        stored = self._store_file(
            kind,
            upload.data,
            file_name=upload.file_name,
            mime_type=upload.mime_type or default_mime,
            width=int(spec.get("width") or 0),
            height=int(spec.get("height") or 0),
            duration=int(spec.get("duration") or 0),
        )
        return (stored,)

    def _store_photo(self, data: bytes) -> tuple[StoredFile, ...]:
        """Sizes as Telegram makes them: small JPEG thumbnails, the picture itself last."""
        try:
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                image.draft("RGB", (320, 320))  # JPEG decodes at a fraction of its size
                thumb = image.convert("RGB")  # decodes, so a corrupt picture fails here
        except Exception:
            raise bad_request("IMAGE_PROCESS_FAILED") from None
        # Thumbnails only need to be smaller pictures: the cheapest filter will do.
        thumbnails = []
        for side in (320, 90):
            if max(width, height) > side:
                thumb.thumbnail((side, side), Image.Resampling.NEAREST)
                buffer = io.BytesIO()
                thumb.save(buffer, "JPEG", quality=80)
                thumbnails.insert(0, (buffer.getvalue(), *thumb.size))
        if width + height > 10_000 or max(width, height) > 20 * min(width, height):
            raise bad_request("PHOTO_INVALID_DIMENSIONS")
        sizes = tuple(
            self._store_file("photo", blob, mime_type="image/jpeg", width=w, height=h)
            for blob, w, h in [*thumbnails, (data, width, height)]
        )
        for size in sizes:
            self._photos[size.file_id] = sizes
        return sizes

    def _store_file(
        self,
        kind: str,
        data: bytes,
        *,
        file_name: str | None = None,
        mime_type: str | None = None,
        width: int = 0,
        height: int = 0,
        duration: int = 0,
    ) -> StoredFile:
        number = next(self._file_numbers)
        suffix = Path(file_name or "").suffix or mimetypes.guess_extension(mime_type or "") or ""
        stored = StoredFile(
            file_id=f"fake_{kind}_{number:06d}",
            file_unique_id=f"u{number:06d}",
            kind=kind,
            file_path=f"{kind}s/file_{number}{suffix}",
            data=data,
            file_name=file_name,
            mime_type=mime_type,
            width=width,
            height=height,
            duration=duration,
        )
        self._files[stored.file_id] = stored
        self._files_by_path[stored.file_path] = stored
        return stored

    # --- JSON as Telegram shapes it -----------------------------------------------------

    def _bot_json(self) -> dict[str, Any]:
        return {
            "id": self.bot_id,
            "is_bot": True,
            "first_name": "FramePack Test Bot",
            "username": self.bot_username,
        }

    def _message_json(self, message: Message, *, with_reply: bool = True) -> dict[str, Any]:
        state = message.state
        body: dict[str, Any] = {
            "message_id": message.message_id,
            "from": self._bot_json() if message.from_bot else _user_json(message.sender_id),
            "chat": self._chats[message.chat_id].to_json(),
            "date": message.date,
        }
        text_key, entities_key = ("text", "entities")
        if state.kind != "text":
            text_key, entities_key = ("caption", "caption_entities")
            body.update(_media_json(state))
        if state.text or state.kind == "text":
            body[text_key] = state.text
        if state.entities:
            body[entities_key] = [_entity_json(state.text, e) for e in state.entities]
        if state.keyboard:
            body["reply_markup"] = {
                "inline_keyboard": [
                    [{k: v for k, v in vars(b).items() if v is not None} for b in row]
                    for row in state.keyboard
                ]
            }
        if message.media_group_id is not None:
            body["media_group_id"] = message.media_group_id
        if message.edit_date is not None:
            body["edit_date"] = message.edit_date
        if with_reply and message.reply_to_message_id is not None:
            target = self._messages[message.chat_id][message.reply_to_message_id]
            if not target.deleted:
                body["reply_to_message"] = self._message_json(target, with_reply=False)
        return body


_FLOOD_COUNTED = frozenset(
    {
        "sendMessage", "sendPhoto", "sendVideo", "sendDocument", "sendAnimation",
        "editMessageText", "editMessageCaption", "editMessageMedia", "editMessageReplyMarkup",
    }
)  # fmt: skip


class _FloodGate:
    """Sliding windows of the sends and edits taken, per chat, per group and overall."""

    def __init__(self, limits: FloodLimits, clock: Callable[[], float]) -> None:
        self.limits = limits
        self._clock = clock
        self._taken: dict[tuple[str, int], deque[float]] = defaultdict(deque)

    def _windows(self, chat: Chat) -> list[tuple[tuple[str, int], Limit | None]]:
        windows = [(("chat", chat.id), self.limits.per_chat), (("all", 0), self.limits.overall)]
        if chat.type != "private":
            windows.append((("group", chat.id), self.limits.per_group))
        return windows

    def retry_after(self, chat: Chat) -> int:
        """Whole seconds until one more may go (0: now), as Telegram's retry_after."""
        now = self._clock()
        wait = 0.0
        for key, limit in self._windows(chat):
            if limit is None:
                continue
            taken = self._taken[key]
            while taken and taken[0] <= now - limit.seconds:
                taken.popleft()
            if len(taken) >= limit.count:
                wait = max(wait, taken[len(taken) - limit.count] + limit.seconds - now)
        return math.ceil(wait) if wait > 0 else 0

    def record(self, chat: Chat) -> None:
        now = self._clock()
        for key, limit in self._windows(chat):
            if limit is not None:
                self._taken[key].append(now)


# --- request decoding -----------------------------------------------------------------------

# python-telegram-bot sends form fields: strings as they are, everything else JSON-encoded.
_INT_PARAMS = frozenset(
    {
        "chat_id", "message_id", "offset", "limit", "timeout", "user_id",
        "reply_to_message_id", "width", "height", "duration", "cache_time",
        "message_thread_id",
    }
)  # fmt: skip
_BOOL_PARAMS = frozenset(
    {
        "show_alert", "disable_notification", "protect_content", "supports_streaming",
        "has_spoiler", "allow_sending_without_reply", "drop_pending_updates",
        "disable_web_page_preview", "disable_content_type_detection",
        "show_caption_above_media",
    }
)  # fmt: skip
_JSON_PARAMS = {
    "reply_markup": "can't parse reply keyboard markup JSON object",
    "reply_parameters": "can't parse reply parameters JSON object",
    "media": "can't parse InputMedia JSON object",
    "entities": "can't parse entities JSON object",
    "caption_entities": "can't parse entities JSON object",
    "allowed_updates": "can't parse allowed updates JSON object",
    "commands": "can't parse commands JSON object",
    "scope": "can't parse BotCommandScope JSON object",
    "link_preview_options": "can't parse link preview options JSON object",
}


async def _read_params(request: web.Request) -> tuple[dict[str, Any], dict[str, Upload]]:
    """The parameters from the query string and a JSON, urlencoded or multipart body."""
    raw: dict[str, Any] = dict(request.query)
    uploads: dict[str, Upload] = {}
    if request.method == "POST" and request.can_read_body:
        if request.content_type == "application/json":
            try:
                body = await request.json()
            except ValueError:
                raise bad_request("can't parse JSON encoded request") from None
            if not isinstance(body, dict):
                raise bad_request("can't parse JSON encoded request")
            raw.update(body)
        else:
            form = await request.post()
            for name, value in form.items():
                if isinstance(value, web.FileField):
                    data = value.file.read()
                    uploads[name] = Upload(name, value.filename, value.content_type, data)
                else:
                    raw[name] = value
    return {name: _typed(name, value) for name, value in raw.items()}, uploads


def _typed(name: str, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if name in _INT_PARAMS:
        try:
            return int(value)
        except ValueError:
            return value  # a "@channel" chat_id; unknown to the fake
    if name in _BOOL_PARAMS:
        return value.lower() in ("true", "1")
    if name in _JSON_PARAMS:
        try:
            return json.loads(value)
        except ValueError:
            raise bad_request(_JSON_PARAMS[name]) from None
    return value


def _keyboard(params: dict[str, Any]) -> Keyboard:
    """The inline keyboard of ``reply_markup``; omitted on an edit, the keyboard goes."""
    markup = params.get("reply_markup")
    if not markup or (isinstance(markup, dict) and markup.get("force_reply")):
        return ()
    rows = markup.get("inline_keyboard") if isinstance(markup, dict) else None
    if not isinstance(rows, list):
        raise bad_request("the fake supports only inline keyboards")
    keyboard = []
    for row in rows:
        buttons = []
        for button in row:
            data = button.get("callback_data")
            if data is not None and not 1 <= len(str(data).encode()) <= CALLBACK_DATA_LIMIT:
                raise bad_request("BUTTON_DATA_INVALID")
            if not button.get("text"):
                raise bad_request("text buttons are unallowed in the inline keyboard")
            buttons.append(Button(button["text"], data, button.get("url")))
        keyboard.append(tuple(buttons))
    return tuple(keyboard)


def _check_text(text: str) -> None:
    if not text:
        raise bad_request("message text is empty")
    if _utf16_len(text) > TEXT_LIMIT:
        raise bad_request("message is too long")


def _check_caption(caption: str) -> None:
    # Telegram counts UTF-16 code units: an emoji outside the BMP is two
    if _utf16_len(caption) > CAPTION_LIMIT:
        raise bad_request("message caption is too long")


# --- JSON pieces --------------------------------------------------------------------------


def _user_names(user_id: int) -> dict[str, Any]:
    return {"first_name": f"User {user_id}", "username": f"user{user_id}"}


def _user_json(user_id: int) -> dict[str, Any]:
    return {"id": user_id, "is_bot": False, **_user_names(user_id), "language_code": "en"}


def _file_json(stored: StoredFile, *fields: str) -> dict[str, Any]:
    body = {
        "file_id": stored.file_id,
        "file_unique_id": stored.file_unique_id,
        "file_size": stored.size,
    }
    for name in fields:
        value = getattr(stored, name)
        if value is not None:
            body[name] = value
    return body


def _media_json(state: MessageState) -> dict[str, Any]:
    if state.kind == "photo":
        return {"photo": [_file_json(size, "width", "height") for size in state.files]}
    stored = state.files[-1]
    document = _file_json(stored, "file_name", "mime_type")
    if state.kind == "document":
        return {"document": document}
    video = _file_json(stored, "width", "height", "duration", "file_name", "mime_type")
    if state.kind == "animation":
        return {"animation": video, "document": document}  # Telegram sends both
    return {"video": video}


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _entity_json(text: str, entity: Entity) -> dict[str, Any]:
    """Offsets in UTF-16 code units, as Telegram counts them."""
    body: dict[str, Any] = {
        "type": entity.type,
        "offset": _utf16_len(text[: entity.offset]),
        "length": _utf16_len(text[entity.offset : entity.offset + entity.length]),
    }
    if entity.url is not None:
        body["url"] = entity.url
    return body


# --- formatted text -----------------------------------------------------------------------

_COMMAND = re.compile(r"(?<!\S)/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,32})?(?![\w@/])")


def _bot_commands(text: str) -> tuple[Entity, ...]:
    """The bot_command entities Telegram marks in what users send."""
    return tuple(
        Entity("bot_command", m.start(), m.end() - m.start()) for m in _COMMAND.finditer(text)
    )


def _formatted(
    raw: str | None, params: dict[str, Any], entities_key: str
) -> tuple[str, tuple[Entity, ...]]:
    """The plain text users read and its entities; lengths are checked on the plain text."""
    raw = raw or ""
    mode = str(params.get("parse_mode") or "").lower()
    if not mode:
        text, entities = raw, _entities_from_json(raw, params.get(entities_key) or [])
    elif mode == "html":
        text, entities = _parse_html(raw)
    elif mode == "markdownv2":
        text, entities = _parse_markdown(raw, v2=True)
    elif mode == "markdown":
        text, entities = _parse_markdown(raw, v2=False)
    else:
        raise bad_request(f"unsupported parse_mode {params.get('parse_mode')}")
    # Telegram trims the text; entities move with it.
    lead = len(text) - len(text.lstrip())
    text = text.strip()
    trimmed = []
    for e in entities:
        start = min(max(e.offset - lead, 0), len(text))
        end = min(max(e.offset + e.length - lead, 0), len(text))
        if end > start:
            trimmed.append(replace(e, offset=start, length=end - start))
    return text, tuple(trimmed)


def _entities_from_json(text: str, items: list[dict[str, Any]]) -> list[Entity]:
    # UTF-16 offsets back to character offsets.
    starts = {}
    units = 0
    for index, char in enumerate(text):
        starts[units] = index
        units += 2 if ord(char) > 0xFFFF else 1
    starts[units] = len(text)
    entities = []
    for item in items:
        start = starts.get(item.get("offset", 0), 0)
        end = starts.get(item.get("offset", 0) + item.get("length", 0), len(text))
        entities.append(Entity(str(item.get("type")), start, end - start, item.get("url")))
    return entities


_HTML_TAGS = {
    "b": "bold", "strong": "bold", "i": "italic", "em": "italic", "u": "underline",
    "ins": "underline", "s": "strikethrough", "strike": "strikethrough",
    "del": "strikethrough", "tg-spoiler": "spoiler", "span": "spoiler", "a": "text_link",
    "code": "code", "pre": "pre", "blockquote": "blockquote", "tg-emoji": "custom_emoji",
}  # fmt: skip
_HTML_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9-]*)([^<>]*)>")
_HTML_CHAR = re.compile(r"&(lt|gt|amp|quot|#[0-9]+|#x[0-9A-Fa-f]+);")
_HTML_NAMED = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}


def _parse_html(raw: str) -> tuple[str, list[Entity]]:
    out: list[str] = []
    size = 0
    open_tags: list[tuple[str, int, str]] = []
    entities: list[Entity] = []
    i = 0
    while i < len(raw):
        char = raw[i]
        if char == "<":
            byte_offset = len(raw[:i].encode())
            match = _HTML_TAG.match(raw, i)
            if match is None:
                raise bad_request(
                    f"can't parse entities: Unsupported start tag at byte offset {byte_offset}"
                )
            closing, name, attributes = match.group(1), match.group(2).lower(), match.group(3)
            if name not in _HTML_TAGS:
                raise bad_request(
                    f'can\'t parse entities: Unsupported start tag "{name}" '
                    f"at byte offset {byte_offset}"
                )
            if not closing:
                open_tags.append((name, size, attributes))
            elif not open_tags or open_tags[-1][0] != name:
                expected = f'"</{open_tags[-1][0]}>"' if open_tags else "no end tag"
                raise bad_request(
                    f"can't parse entities: Unmatched end tag at byte offset {byte_offset}, "
                    f'expected {expected}, found "</{name}>"'
                )
            else:
                _, start, attributes = open_tags.pop()
                href = re.search(r"""href\s*=\s*["']([^"']*)["']""", attributes)
                url = href.group(1) if name == "a" and href else None
                if size > start:
                    entities.append(Entity(_HTML_TAGS[name], start, size - start, url))
            i = match.end()
            continue
        if char == "&" and (match := _HTML_CHAR.match(raw, i)):
            code = match.group(1)
            if code in _HTML_NAMED:
                char = _HTML_NAMED[code]
            else:
                char = chr(int(code[2:], 16) if code[1] == "x" else int(code[1:]))
            i = match.end()
        else:
            i += 1
        out.append(char)
        size += 1
    if open_tags:
        raise bad_request(
            "can't parse entities: Can't find end tag corresponding to start tag "
            f'"{open_tags[-1][0]}"'
        )
    return "".join(out), entities


_MARKDOWN_ENTITIES = {
    "*": "bold", "_": "italic", "__": "underline", "~": "strikethrough", "||": "spoiler",
}  # fmt: skip
_MARKDOWN_V2_RESERVED = frozenset("_*[]()~`>#+-=|{}.!")


def _parse_markdown(raw: str, *, v2: bool) -> tuple[str, list[Entity]]:
    """MarkdownV2, or with ``v2=False`` the legacy Markdown (bold, italic, code, links)."""
    out: list[str] = []
    open_marks: dict[str, tuple[int, int]] = {}  # mark: (plain offset, byte offset)
    links: list[int] = []
    entities: list[Entity] = []
    i = 0

    def error(what: str) -> ApiError:
        return bad_request(f"can't parse entities: {what}")

    while i < len(raw):
        char = raw[i]
        size = len(out)
        if char == "\\" and i + 1 < len(raw) and (v2 or raw[i + 1] in "_*`["):
            out.append(raw[i + 1])
            i += 2
            continue
        if raw.startswith("```", i) or char == "`":
            fence = "```" if raw.startswith("```", i) else "`"
            end = raw.find(fence, i + len(fence))
            if end < 0:
                raise error(f"Can't find end of the entity starting at byte offset {i}")
            body = raw[i + len(fence) : end]
            if fence == "```" and "\n" in body:
                body = body.split("\n", 1)[1]  # the first line names the language
            out.extend(body.replace("\\`", "`").replace("\\\\", "\\") if v2 else body)
            entities.append(Entity("pre" if fence == "```" else "code", size, len(out) - size))
            i = end + len(fence)
            continue
        marks = ("__", "||", "*", "_", "~") if v2 else ("*", "_")
        mark = next((m for m in marks if raw.startswith(m, i)), None)
        if mark is not None:
            if mark in open_marks:
                start, _ = open_marks.pop(mark)
                entities.append(Entity(_MARKDOWN_ENTITIES[mark], start, size - start))
            else:
                open_marks[mark] = (size, len(raw[:i].encode()))
            i += len(mark)
            continue
        if char == "[":
            links.append(size)
            i += 1
            continue
        if char == "]" and links and raw.startswith("(", i + 1):
            close = raw.find(")", i + 2)
            if close < 0:
                raise error(f"Can't find end of a URL at byte offset {i}")
            start = links.pop()
            entities.append(Entity("text_link", start, size - start, raw[i + 2 : close]))
            i = close + 1
            continue
        if v2 and char == ">" and (i == 0 or raw[i - 1] == "\n"):
            i += 1  # a blockquote line
            continue
        if v2 and char in _MARKDOWN_V2_RESERVED:
            raise error(
                f"Character '{char}' is reserved and must be escaped with the preceding '\\'"
            )
        out.append(char)
        i += 1
    if open_marks:
        mark, (_, byte_offset) = next(iter(open_marks.items()))
        name = _MARKDOWN_ENTITIES[mark].capitalize()
        raise error(f"Can't find end of {name} entity at byte offset {byte_offset}")
    if links:
        raise error("Can't find end of a URL")
    return "".join(out), entities
