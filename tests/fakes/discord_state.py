"""What the fake Discord knows: users, guilds, channels, messages, interactions.

The loopback REST API (`discord_rest`) and gateway (`discord_gateway`) read and
change this state; tests read it through `DiscordHarness`. Time comes from a
`Clock` that follows the wall clock and can be pushed ahead, so a test can jump
past Discord's 3-second acknowledgement window or 15-minute interaction token
without waiting.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import io
import mimetypes
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import discord

DISCORD_EPOCH_MS = 1_420_070_400_000
MIB = 1024 * 1024
EPHEMERAL = 1 << 6  # message flag: only the interaction's user sees it
LOADING = 1 << 7  # message flag: the "Bot is thinking..." placeholder of a deferred response

# Interaction types (Discord's numbers)
APPLICATION_COMMAND = 2
MESSAGE_COMPONENT = 3
APPLICATION_COMMAND_AUTOCOMPLETE = 4
MODAL_SUBMIT = 5

# Interaction callback types
CHANNEL_MESSAGE = 4
DEFERRED_CHANNEL_MESSAGE = 5
DEFERRED_UPDATE_MESSAGE = 6
UPDATE_MESSAGE = 7
AUTOCOMPLETE_RESULT = 8
MODAL = 9

# Channel types
GUILD_TEXT = 0
DM = 1
PUBLIC_THREAD = 11

# What @everyone may do in a new guild of the fake: enough to use a bot, nothing to manage it.
EVERYONE_PERMISSIONS = discord.Permissions(
    view_channel=True,
    send_messages=True,
    send_messages_in_threads=True,
    create_public_threads=True,
    read_message_history=True,
    embed_links=True,
    attach_files=True,
    add_reactions=True,
    use_application_commands=True,
)


class HarnessError(AssertionError):
    """The test asked for something a real Discord client would not let a user do."""


class ApiError(Exception):
    """A Discord REST error: HTTP status, JSON error code and message."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.code = code
        self.message = message


class Clock:
    """The wall clock plus an offset that only grows: real time passes, tests jump ahead."""

    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self.offset += seconds

    def iso(self, at: float | None = None) -> str:
        moment = self.now() if at is None else at
        return dt.datetime.fromtimestamp(moment, dt.UTC).isoformat()


class Snowflakes:
    """Discord ids that carry the (virtual) time they were made, strictly increasing."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._last = 0

    def next(self) -> int:
        stamp = (int(self._clock.now() * 1000) - DISCORD_EPOCH_MS) << 22
        self._last = max(stamp, self._last + 1)
        return self._last


@dataclass(eq=False)
class FakeUser:
    id: int
    name: str
    bot: bool = False

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"


@dataclass(eq=False)
class FakeRole:
    id: int
    name: str
    permissions: int
    position: int


@dataclass(eq=False)
class FakeMember:
    user: FakeUser
    role_ids: list[int]
    joined_at: float
    nick: str | None = None

    @property
    def id(self) -> int:
        return self.user.id


@dataclass(eq=False)
class FakeGuild:
    id: int
    name: str
    owner_id: int
    world: DiscordWorld = field(repr=False)
    roles: dict[int, FakeRole] = field(default_factory=dict)
    members: dict[int, FakeMember] = field(default_factory=dict)
    upload_limit: int | None = None  # None: the harness-wide limit (10 MiB unless changed)

    def add_member(
        self,
        user: FakeUser,
        *,
        permissions: discord.Permissions | None = None,
        nick: str | None = None,
    ) -> FakeMember:
        """Let `user` join; `permissions` beyond @everyone's come from a role of their own."""
        role_ids: list[int] = []
        if permissions is not None and permissions.value:
            role = self.add_role(f"{user.name}'s role", permissions)
            role_ids.append(role.id)
        member = FakeMember(user, role_ids, self.world.clock.now(), nick)
        self.members[user.id] = member
        self.world.changed()
        return member

    def add_role(self, name: str, permissions: discord.Permissions) -> FakeRole:
        role = FakeRole(self.world.ids.next(), name, permissions.value, len(self.roles))
        self.roles[role.id] = role
        self.world.on_role_created(self, role)
        return role

    def add_text_channel(self, name: str) -> FakeChannel:
        channel = FakeChannel(self.world.ids.next(), GUILD_TEXT, name, self.world, guild_id=self.id)
        self.world.channels[channel.id] = channel
        self.world.on_channel_created(channel)
        return channel

    @property
    def channels(self) -> list[FakeChannel]:
        return [c for c in self.world.channels.values() if c.guild_id == self.id]

    @property
    def effective_upload_limit(self) -> int:
        return self.upload_limit if self.upload_limit is not None else self.world.upload_limit

    def permissions_of(self, user_id: int) -> discord.Permissions:
        """Guild-level permissions as Discord computes them (no channel overwrites in the fake)."""
        if user_id == self.owner_id:
            return discord.Permissions.all()
        member = self.members.get(user_id)
        if member is None:
            return discord.Permissions.none()
        value = self.roles[self.id].permissions
        for role_id in member.role_ids:
            value |= self.roles[role_id].permissions
        permissions = discord.Permissions(value)
        return discord.Permissions.all() if permissions.administrator else permissions


@dataclass(eq=False)
class FakeChannel:
    id: int
    type: int
    name: str
    world: DiscordWorld = field(repr=False)
    guild_id: int | None = None
    parent_id: int | None = None  # threads: the channel they hang off
    owner_id: int | None = None  # threads: who started them
    recipient_id: int | None = None  # DMs: the user at the other end

    @property
    def guild(self) -> FakeGuild | None:
        return self.world.guilds.get(self.guild_id) if self.guild_id is not None else None

    @property
    def messages(self) -> list[FakeMessage]:
        """What everybody in the channel sees, oldest first: no ephemeral or deleted messages."""
        return [
            m
            for m in self.world.messages.values()
            if m.channel_id == self.id and not m.deleted and not m.ephemeral
        ]

    @property
    def last_message(self) -> FakeMessage | None:
        visible = self.messages
        return visible[-1] if visible else None

    @property
    def threads(self) -> list[FakeChannel]:
        return [c for c in self.world.channels.values() if c.parent_id == self.id]

    @property
    def upload_limit(self) -> int:
        guild = self.guild
        return guild.effective_upload_limit if guild is not None else self.world.upload_limit


@dataclass(eq=False)
class FakeAttachment:
    """A file on the fake CDN: a user's upload for an attachment option, or a message's file."""

    id: int
    filename: str
    content_type: str
    data: bytes = field(repr=False)
    channel_id: int
    world: DiscordWorld = field(repr=False)
    expires_at: float | None = None  # after this (clock) time the CDN answers 404
    description: str | None = None

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def url(self) -> str:
        stamp = int(self.expires_at if self.expires_at is not None else 0)
        return (
            f"{self.world.http_base}/attachments/{self.channel_id}/{self.id}/{self.filename}"
            f"?ex={stamp:x}&is=0&hm=fake"
        )

    @property
    def image_size(self) -> tuple[int, int] | None:
        """Width and height when the bytes are a picture Pillow can read."""
        if not self.content_type.startswith("image/"):
            return None
        try:
            from PIL import Image

            with Image.open(io.BytesIO(self.data)) as picture:
                return picture.size
        except Exception:  # not a readable picture: Discord then reports no size either
            return None


def guess_content_type(filename: str) -> str:
    return mimetypes.guess_type(filename)[0] or "application/octet-stream"


@dataclass(frozen=True)
class Button:
    custom_id: str | None
    label: str | None
    style: int
    disabled: bool
    url: str | None


@dataclass(frozen=True)
class MessageSnapshot:
    """A message as it looked after its creation or one edit."""

    content: str
    embeds: tuple[dict[str, Any], ...]
    attachments: tuple[FakeAttachment, ...]
    components: tuple[dict[str, Any], ...]
    flags: int
    at: float

    def same_look(self, other: MessageSnapshot) -> bool:
        """Whether a user would see no difference between the two (ignores the time)."""
        return (
            self.content == other.content
            and self.embeds == other.embeds
            and [(a.filename, a.data) for a in self.attachments]
            == [(a.filename, a.data) for a in other.attachments]
            and self.components == other.components
            and self.flags & ~LOADING == other.flags & ~LOADING
        )


def walk_components(components: Any) -> Iterator[dict[str, Any]]:
    """Every component in a message, action rows and v2 containers included."""
    for component in components or ():
        yield component
        yield from walk_components(component.get("components"))
        accessory = component.get("accessory")
        if accessory:
            yield from walk_components([accessory])


@dataclass(eq=False)
class FakeMessage:
    id: int
    channel_id: int
    author_id: int
    world: DiscordWorld = field(repr=False)
    history: list[MessageSnapshot] = field(default_factory=list)
    type: int = 0
    interaction_id: int | None = None  # set on interaction responses and followups
    ephemeral_for: int | None = None  # ephemeral messages: the only user who sees them
    deleted: bool = False

    @property
    def current(self) -> MessageSnapshot:
        return self.history[-1]

    @property
    def content(self) -> str:
        return self.current.content

    @property
    def embeds(self) -> tuple[dict[str, Any], ...]:
        return self.current.embeds

    @property
    def embed(self) -> dict[str, Any] | None:
        return self.current.embeds[0] if self.current.embeds else None

    @property
    def attachments(self) -> tuple[FakeAttachment, ...]:
        return self.current.attachments

    @property
    def components(self) -> tuple[dict[str, Any], ...]:
        return self.current.components

    @property
    def flags(self) -> int:
        return self.current.flags

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & EPHEMERAL)

    @property
    def loading(self) -> bool:
        """Still the "Bot is thinking..." placeholder of a deferred response."""
        return bool(self.flags & LOADING)

    @property
    def edits(self) -> int:
        return len(self.history) - 1

    @property
    def unchanged_edits(self) -> int:
        """Edits after which the message looked exactly as before (wasted rate limit)."""
        return sum(
            1 for a, b in zip(self.history, self.history[1:], strict=False) if a.same_look(b)
        )

    @property
    def buttons(self) -> list[Button]:
        return [
            Button(
                c.get("custom_id"),
                c.get("label"),
                c.get("style", 1),
                c.get("disabled", False),
                c.get("url"),
            )
            for c in walk_components(self.components)
            if c.get("type") == 2
        ]

    @property
    def custom_ids(self) -> list[str]:
        return [c["custom_id"] for c in walk_components(self.components) if c.get("custom_id")]

    def attachment(self, filename: str) -> FakeAttachment:
        for attachment in self.attachments:
            if attachment.filename == filename:
                return attachment
        names = [a.filename for a in self.attachments]
        raise KeyError(f"message {self.id} has no attachment {filename!r}; it has {names}")

    def embed_image(self, index: int = 0) -> FakeAttachment | str | None:
        """The embed's picture: the attachment that `attachment://name` points at, or its URL."""
        url = (
            ((self.embeds[index].get("image") or {}).get("url"))
            if len(self.embeds) > index
            else None
        )
        if url is not None and url.startswith("attachment://"):
            return self.attachment(url.removeprefix("attachment://"))
        for attachment in self.world.attachments.values():
            if url == attachment.url:  # an embed re-sent as discord.py read it back
                return attachment
        return url


@dataclass(eq=False)
class InteractionRecord:
    """One interaction a user started, and everything the bot did with it."""

    id: int
    token: str
    type: int
    name: str  # the command path ("echo", "admin pause") or the component's custom_id
    user_id: int
    channel_id: int
    guild_id: int | None
    dispatched_at: float
    world: DiscordWorld = field(repr=False)
    payload: dict[str, Any] = field(default_factory=dict, repr=False)
    source_message_id: int | None = None  # components: the message the button is on
    response_type: int | None = None
    # from dispatch to the bot's callback, real plus jumped time
    ack_seconds: float | None = None
    # no acknowledgement in time: the user saw "The application did not respond"
    failed: bool = False
    original_message_id: int | None = None
    followup_ids: list[int] = field(default_factory=list)
    modal: dict[str, Any] | None = None
    autocomplete_choices: list[dict[str, Any]] | None = None
    # what the interaction webhook refused: (route, HTTP status, Discord error code)
    webhook_errors: list[tuple[str, int, int]] = field(default_factory=list)
    settled: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def acked(self) -> bool:
        return self.response_type is not None

    @property
    def deferred(self) -> bool:
        return self.response_type in (DEFERRED_CHANNEL_MESSAGE, DEFERRED_UPDATE_MESSAGE)

    @property
    def thinking(self) -> bool:
        """Deferred with a "Bot is thinking..." placeholder (type 5)."""
        return self.response_type == DEFERRED_CHANNEL_MESSAGE

    @property
    def original(self) -> FakeMessage | None:
        """The response message; for deferred updates and updates, the component's message."""
        if self.original_message_id is None:
            return None
        return self.world.messages[self.original_message_id]

    @property
    def ephemeral(self) -> bool:
        original = self.original
        return original is not None and original.interaction_id == self.id and original.ephemeral

    @property
    def followups(self) -> list[FakeMessage]:
        return [self.world.messages[i] for i in self.followup_ids]

    @property
    def replies(self) -> list[FakeMessage]:
        """What the user got back, in order: the response message (if it is one) and followups."""
        own = (
            self.original
            if self.original is not None and self.original.interaction_id == self.id
            else None
        )
        return ([own] if own is not None else []) + [m for m in self.followups if m is not own]

    @property
    def expires_at(self) -> float:
        return self.dispatched_at + self.world.token_lifetime

    def token_expired(self) -> bool:
        return self.world.clock.now() >= self.expires_at


@dataclass(frozen=True)
class RequestRecord:
    """One HTTP request the bot made to the fake, with the fake's answer."""

    method: str
    path: str  # below /api/v10, without the query; CDN downloads start with /attachments
    status: int
    auth: str  # "bot", "webhook" (interaction token in the path) or "none"
    body: Any
    uploads: tuple[tuple[str, int], ...]  # (filename, size)
    at: float
    code: int = 0  # Discord's JSON error code on failures


@dataclass(eq=False)
class DiscordWorld:
    """Everything the fake Discord holds; one per harness, it outlives bot restarts."""

    token: str
    clock: Clock = field(default_factory=Clock)
    upload_limit: int = 10 * MIB
    ack_window: float = 3.0
    token_lifetime: float = 15 * 60.0
    cdn_lifetime: float = 24 * 3600.0
    http_base: str = ""

    def __post_init__(self) -> None:
        self.ids = Snowflakes(self.clock)
        self.users: dict[int, FakeUser] = {}
        self.guilds: dict[int, FakeGuild] = {}
        self.channels: dict[int, FakeChannel] = {}
        self.messages: dict[int, FakeMessage] = {}
        self.attachments: dict[int, FakeAttachment] = {}
        self.interactions: dict[int, InteractionRecord] = {}
        self.commands: dict[int | None, dict[str, dict[str, Any]]] = {}  # guild id or None: global
        self.requests: list[RequestRecord] = []
        self.unhandled: list[str] = []
        self.application_id = self.ids.next()
        self.bot_user = FakeUser(self.application_id, "framepack-test-bot", bot=True)
        self.users[self.bot_user.id] = self.bot_user
        self.bot_permissions = EVERYONE_PERMISSIONS | discord.Permissions(
            manage_messages=True, manage_threads=True
        )
        self.gateway: Any = None  # the GatewayHub, set by the harness
        self._changed = asyncio.Event()

    # change notification: tests wait on it instead of polling

    def changed(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def next_change(self) -> None:
        await self._changed.wait()

    # building the world

    def add_user(self, name: str, *, bot: bool = False) -> FakeUser:
        user = FakeUser(self.ids.next(), name, bot)
        self.users[user.id] = user
        return user

    def add_guild(self, name: str, owner: FakeUser, upload_limit: int | None = None) -> FakeGuild:
        guild = FakeGuild(self.ids.next(), name, owner.id, self, upload_limit=upload_limit)
        guild.roles[guild.id] = FakeRole(guild.id, "@everyone", EVERYONE_PERMISSIONS.value, 0)
        self.guilds[guild.id] = guild
        guild.members[owner.id] = FakeMember(owner, [], self.clock.now())
        bot_role = FakeRole(self.ids.next(), self.bot_user.name, self.bot_permissions.value, 1)
        guild.roles[bot_role.id] = bot_role
        guild.members[self.bot_user.id] = FakeMember(self.bot_user, [bot_role.id], self.clock.now())
        if self.gateway is not None:
            self.gateway.broadcast_guild(guild)
        self.changed()
        return guild

    def dm_channel(self, user: FakeUser) -> FakeChannel:
        for channel in self.channels.values():
            if channel.type == DM and channel.recipient_id == user.id:
                return channel
        channel = FakeChannel(self.ids.next(), DM, "", self, recipient_id=user.id)
        self.channels[channel.id] = channel
        self.changed()
        return channel

    def upload(
        self,
        data: bytes,
        filename: str,
        channel_id: int = 0,
        content_type: str | None = None,
        expires_after: float | None = None,
        description: str | None = None,
    ) -> FakeAttachment:
        lifetime = self.cdn_lifetime if expires_after is None else expires_after
        attachment = FakeAttachment(
            self.ids.next(),
            filename,
            content_type or guess_content_type(filename),
            bytes(data),
            channel_id,
            self,
            expires_at=self.clock.now() + lifetime,
            description=description,
        )
        self.attachments[attachment.id] = attachment
        return attachment

    def on_role_created(self, guild: FakeGuild, role: FakeRole) -> None:
        if self.gateway is not None:
            self.gateway.broadcast_role(guild, role)
        self.changed()

    def on_channel_created(self, channel: FakeChannel) -> None:
        if self.gateway is not None:
            self.gateway.broadcast_channel(channel)
        self.changed()

    # messages

    def new_message(
        self,
        channel_id: int,
        author_id: int,
        snapshot: MessageSnapshot,
        *,
        type: int = 0,
        interaction_id: int | None = None,
        ephemeral_for: int | None = None,
    ) -> FakeMessage:
        message = FakeMessage(
            self.ids.next(),
            channel_id,
            author_id,
            self,
            [snapshot],
            type=type,
            interaction_id=interaction_id,
            ephemeral_for=ephemeral_for,
        )
        self.messages[message.id] = message
        self.changed()
        return message

    def message_in(self, channel_id: int, message_id: int) -> FakeMessage:
        message = self.messages.get(message_id)
        if message is None or message.channel_id != channel_id or message.deleted:
            raise ApiError(404, 10008, "Unknown Message")
        return message

    def channel(self, channel_id: int) -> FakeChannel:
        channel = self.channels.get(channel_id)
        if channel is None:
            raise ApiError(404, 10003, "Unknown Channel")
        return channel

    def snapshot(self, **parts: Any) -> MessageSnapshot:
        return MessageSnapshot(
            content=parts.get("content") or "",
            embeds=tuple(copy.deepcopy(parts.get("embeds") or ())),
            attachments=tuple(parts.get("attachments") or ()),
            components=tuple(copy.deepcopy(parts.get("components") or ())),
            flags=int(parts.get("flags") or 0),
            at=self.clock.now(),
        )

    # application commands

    def find_command(self, name: str, channel: FakeChannel) -> tuple[int | None, dict[str, Any]]:
        """The synced command a user in `channel` would see under `name`, and its scope."""
        if channel.guild_id is not None:
            scoped = self.commands.get(channel.guild_id, {}).get(name)
            if scoped is not None:
                return channel.guild_id, scoped
        command = self.commands.get(None, {}).get(name)
        if command is None:
            where = f"guild {channel.guild_id}" if channel.guild_id else "DMs"
            synced = {scope: sorted(cmds) for scope, cmds in self.commands.items()}
            raise HarnessError(f"/{name} is not synced for {where} (synced: {synced})")
        if channel.guild_id is None:
            contexts = command.get("contexts")
            if command.get("dm_permission") is False or (
                contexts is not None and 1 not in contexts
            ):
                raise HarnessError(f"/{name} is not available in DMs")
        return None, command
