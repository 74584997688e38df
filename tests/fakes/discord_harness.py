"""Drive a real discord.py bot against a fake Discord on loopback.

    async with DiscordHarness() as discord_fake:
        guild = discord_fake.add_guild("Test")
        channel = guild.add_text_channel("general")
        alice = discord_fake.add_user("alice")
        guild.add_member(alice)
        await discord_fake.start_bot(MyBot())
        picture = discord_fake.upload(png_bytes, "cat.png")
        reply = await discord_fake.slash(alice, channel, "animate", image=picture, prompt="a cat")
        assert reply.thinking and reply.ack_seconds < 3

discord.py runs unmodified: its HTTPClient, webhook adapter, gateway websocket,
command tree and view store talk to an aiohttp server on 127.0.0.1 (the harness
points `discord.http.Route.BASE` and `DiscordWebSocket.DEFAULT_GATEWAY` at it
while it runs). The fake keeps its state across bot restarts, enforces Discord's
rules that a bot can get wrong (3-second acknowledgement, 15-minute interaction
token, upload limit, ephemeral visibility, who may press what) and answers with
Discord's status codes and JSON error codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import discord
import yarl
from aiohttp import web
from discord.gateway import DiscordWebSocket
from discord.http import Route

from tests.fakes import discord_payloads as payloads
from tests.fakes.discord_gateway import GatewayHub
from tests.fakes.discord_rest import FakeDiscordRest, Fault, RateRule
from tests.fakes.discord_state import (
    APPLICATION_COMMAND,
    APPLICATION_COMMAND_AUTOCOMPLETE,
    MESSAGE_COMPONENT,
    MIB,
    MODAL_SUBMIT,
    DiscordWorld,
    FakeAttachment,
    FakeChannel,
    FakeGuild,
    FakeMember,
    FakeMessage,
    FakeRole,
    FakeUser,
    HarnessError,
    InteractionRecord,
    RequestRecord,
)

__all__ = [
    "DiscordHarness",
    "FakeAttachment",
    "FakeChannel",
    "FakeGuild",
    "FakeMessage",
    "FakeUser",
    "HarnessError",
    "InteractionRecord",
    "RequestRecord",
]

# Option types of application commands (Discord's numbers)
SUB_COMMAND, SUB_COMMAND_GROUP, STRING, INTEGER, BOOLEAN = 1, 2, 3, 4, 5
USER, CHANNEL, ROLE, MENTIONABLE, NUMBER, ATTACHMENT = 6, 7, 8, 9, 10, 11


class _ErrorLog(logging.Handler):
    """Collects what discord.py logs at ERROR: exceptions it swallowed in the bot's handlers."""

    def __init__(self, world: DiscordWorld) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []
        self._world = world
        self._loop: asyncio.AbstractEventLoop | None = None

    def attach(self) -> None:
        self._loop = asyncio.get_running_loop()
        logging.getLogger("discord").addHandler(self)

    def detach(self) -> None:
        logging.getLogger("discord").removeHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._world.changed)  # wakes wait_until


def _describe(record: logging.LogRecord) -> str:
    error = record.exc_info[1] if record.exc_info else None
    return f"{record.getMessage()} {error!r}" if error is not None else record.getMessage()


class DiscordHarness:
    """A fake Discord (REST, gateway, CDN) on loopback, and the users who click in it."""

    def __init__(
        self,
        *,
        token: str = "fake-bot-token",
        upload_limit: int = 10 * MIB,
        ack_window: float = 3.0,
        strict: bool = True,
    ) -> None:
        self.world = DiscordWorld(token, upload_limit=upload_limit, ack_window=ack_window)
        self.rest = FakeDiscordRest(self.world)
        self.strict = strict
        self._runner: web.AppRunner | None = None
        self._bots: dict[discord.Client, asyncio.Task[None]] = {}
        self._timers: list[asyncio.TimerHandle] = []
        self._saved_endpoints: tuple[str, yarl.URL] | None = None
        self._errors = _ErrorLog(self.world)
        self.gateway: GatewayHub

    # lifecycle

    async def __aenter__(self) -> DiscordHarness:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close(check=exc_info[0] is None)

    async def start(self) -> None:
        self.gateway = GatewayHub(self.world, url="")
        self.world.gateway = self.gateway
        # aiohttp's own body limit must not answer first: the fake's 413 comes from the upload limit
        app = web.Application(client_max_size=1024 * MIB)
        app.add_routes([*self.rest.routes(), web.get("/gateway", self.gateway.handle)])
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.world.http_base = f"http://127.0.0.1:{port}"
        self.gateway.url = f"ws://127.0.0.1:{port}/gateway"
        self._saved_endpoints = (Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY)
        Route.BASE = self.api_base
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway.url)
        self._errors.attach()

    async def close(self, *, check: bool = True) -> None:
        for timer in self._timers:
            timer.cancel()
        for client in list(self._bots):
            await self.stop_bot(client)
        if self._runner is not None:
            await self.gateway.close_all()
            await self._runner.cleanup()
            self._runner = None
        if self._saved_endpoints is not None:
            Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = self._saved_endpoints
            self._saved_endpoints = None
        self._errors.detach()
        if check and self.strict:
            problems = [f"discord.py logged: {_describe(r)}" for r in self.bot_errors]
            if self.world.unhandled:
                problems.append(
                    f"the bot called routes the fake does not serve: {self.world.unhandled}"
                )
            if problems:
                raise AssertionError("\n".join(problems))

    @property
    def api_base(self) -> str:
        """What `discord.http.Route.BASE` points at while the harness runs."""
        return f"{self.world.http_base}/api/v10"

    @property
    def gateway_url(self) -> str:
        """What `DiscordWebSocket.DEFAULT_GATEWAY` points at while the harness runs."""
        return self.gateway.url

    @property
    def token(self) -> str:
        return self.world.token

    @property
    def bot_user(self) -> FakeUser:
        return self.world.bot_user

    @property
    def application_id(self) -> int:
        return self.world.application_id

    @property
    def bot_errors(self) -> list[logging.LogRecord]:
        """Exceptions discord.py caught and logged (failing handlers); clear it to accept them."""
        return self._errors.records

    # the bot

    async def start_bot(self, client: discord.Client, *, timeout: float = 10.0) -> None:
        """Log `client` in, run its `setup_hook`, connect the gateway and wait for `on_ready`."""
        # discord.py waits guild_ready_timeout (2 s) after the last GUILD_CREATE before on_ready.
        state = client._connection
        state.guild_ready_timeout = min(state.guild_ready_timeout, 0.05)
        seen = self.gateway.identifications
        task = asyncio.create_task(client.start(self.world.token), name=f"discord bot {client!r}")
        self._bots[client] = task

        async def ready() -> None:
            await self.wait_until(
                lambda: self.gateway.identifications > seen, timeout=timeout, what="IDENTIFY"
            )
            await client.wait_until_ready()

        waiter = asyncio.create_task(ready())
        done, _ = await asyncio.wait(
            {task, waiter}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if waiter in done:
            waiter.result()
            return
        waiter.cancel()
        await client.close()
        if task in done:
            self._bots.pop(client)
            task.result()  # raises what stopped the bot
            raise RuntimeError("the bot stopped before it was ready")
        raise TimeoutError(f"the bot was not ready within {timeout}s")

    async def stop_bot(self, client: discord.Client | None = None, *, timeout: float = 5.0) -> None:
        """Close the bot (default: every running one); the fake's state stays for a restart."""
        for bot in [client] if client is not None else list(self._bots):
            task = self._bots.pop(bot, None)
            await bot.close()
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(task, timeout)
        if not self._bots:
            await self.wait_until(
                lambda: not self.gateway.sessions, timeout=timeout, what="gateway closed"
            )

    async def reconnect_gateway(self, *, timeout: float = 5.0) -> None:
        """Drop the bot's gateway connection as Discord does now and then (close code 4000);
        discord.py reconnects and RESUMEs at once. Returns when the session is resumed."""
        resumed = self.gateway.resumes
        await self.gateway.close_all(code=4000)
        await self.wait_until(
            lambda: self.gateway.resumes > resumed, timeout=timeout, what="RESUME"
        )

    # building the world

    def add_user(self, name: str, *, bot: bool = False) -> FakeUser:
        return self.world.add_user(name, bot=bot)

    def add_guild(
        self,
        name: str = "Test Guild",
        *,
        owner: FakeUser | None = None,
        upload_limit: int | None = None,
    ) -> FakeGuild:
        """A guild with @everyone, the bot as a member, and `owner` (a new user by default)."""
        return self.world.add_guild(name, owner or self.add_user(f"{name} owner"), upload_limit)

    def dm_channel(self, user: FakeUser) -> FakeChannel:
        return self.world.dm_channel(user)

    def upload(
        self,
        data: bytes,
        filename: str,
        *,
        content_type: str | None = None,
        expires_after: float | None = None,
    ) -> FakeAttachment:
        """A file a user attaches to a command option; its CDN URL 404s after `expires_after` s."""
        return self.world.upload(
            data, filename, content_type=content_type, expires_after=expires_after
        )

    @property
    def download_delay(self) -> float:
        """Seconds of fake time each CDN download takes (0: instant). A bot that downloads
        before it acknowledges then misses the 3-second window, as it would on a slow link."""
        return self.rest.download_delay

    @download_delay.setter
    def download_delay(self, seconds: float) -> None:
        self.rest.download_delay = seconds

    @property
    def upload_limit(self) -> int:
        return self.world.upload_limit

    @upload_limit.setter
    def upload_limit(self, value: int) -> None:
        self.world.upload_limit = value

    # time

    @property
    def now(self) -> float:
        return self.world.clock.now()

    def advance(self, seconds: float) -> None:
        """Jump the fake's clock: acknowledgement windows, tokens and CDN URLs see the jump."""
        self.world.clock.advance(seconds)
        for record in self.world.interactions.values():
            self._check_ack(record)
        self.world.changed()

    def _check_ack(self, record: InteractionRecord) -> None:
        late = self.world.clock.now() - record.dispatched_at >= self.world.ack_window
        if late and not record.acked and not record.failed:
            record.failed = True
            record.settled.set()
            self.world.changed()

    # what users do

    async def slash(
        self,
        user: FakeUser,
        channel: FakeChannel,
        command: str,
        /,
        *,
        wait: bool = True,
        validate: bool = True,
        **options: Any,
    ) -> InteractionRecord:
        """Run `/command` (a path like "admin pause" for subcommands) with `options` by name.

        Values: str/int/float/bool, FakeUser, FakeChannel, FakeRole, FakeAttachment (see
        `upload`). The command must be synced where the user is, and the user must be
        allowed to see it; with `validate` the options must pass the command's own
        schema, as the Discord client enforces. With `wait`, returns once the bot
        acknowledged or the acknowledgement window closed.
        """
        name, *path = command.split()
        scope, spec = self.world.find_command(name, channel)
        self._check_command_permissions(user, channel, spec)
        options_payload, resolved = self._options(spec, path, options, channel, validate)
        data: dict[str, Any] = {"id": spec["id"], "name": name, "type": spec.get("type", 1)}
        if options_payload:
            data["options"] = options_payload
        if resolved:
            data["resolved"] = resolved
        if scope is not None:
            data["guild_id"] = str(scope)
        return await self._dispatch(APPLICATION_COMMAND, user, channel, data, command, None, wait)

    async def autocomplete(
        self,
        user: FakeUser,
        channel: FakeChannel,
        command: str,
        focused: str,
        typed: str,
        /,
        **options: Any,
    ) -> list[dict[str, Any]]:
        """Type `typed` into the option `focused` of `/command` (the other `options` filled
        in already) and return the choices the bot offers, as Discord's client asks."""
        scope, spec = self.world.find_command(command, channel)
        if not any(o.get("name") == focused and o.get("autocomplete") for o in spec["options"]):
            raise HarnessError(f"/{command} has no option {focused!r} with autocomplete")
        options_payload, _ = self._options(spec, [], options, channel, False)
        options_payload.append({"name": focused, "type": 3, "value": typed, "focused": True})
        data: dict[str, Any] = {"id": spec["id"], "name": command, "type": 1}
        data["options"] = options_payload
        if scope is not None:
            data["guild_id"] = str(scope)
        record = await self._dispatch(
            APPLICATION_COMMAND_AUTOCOMPLETE, user, channel, data, command, None, True
        )
        return record.autocomplete_choices or []

    async def press(
        self, user: FakeUser, message: FakeMessage, custom_id: str, *, wait: bool = True
    ) -> InteractionRecord:
        """Click the button `custom_id` on `message` as `user`."""
        self._check_visible(user, message)
        button = next((b for b in message.buttons if b.custom_id == custom_id), None)
        if button is None:
            raise HarnessError(
                f"message {message.id} has no button {custom_id!r}; it has {message.custom_ids}"
            )
        if button.disabled:
            raise HarnessError(f"button {custom_id!r} is disabled")
        data = {"custom_id": custom_id, "component_type": 2}
        channel = self.world.channels[message.channel_id]
        return await self._dispatch(
            MESSAGE_COMPONENT, user, channel, data, custom_id, message, wait
        )

    async def submit(
        self, user: FakeUser, shown: InteractionRecord, values: dict[str, str], *, wait: bool = True
    ) -> InteractionRecord:
        """Fill in and submit the modal the bot answered `shown` with (field custom_id: text),
        as the member whose interaction it was."""
        if shown.modal is None:
            raise HarnessError(f"interaction {shown.id} was not answered with a modal")
        if user.id != shown.user_id:
            raise HarnessError("only the member the modal was shown to can submit it")
        fields = [
            component
            for row in shown.modal.get("components", [])
            for component in (row.get("components") or [row.get("component") or {}])
        ]
        known = {f.get("custom_id") for f in fields}
        unknown = set(values) - known
        if unknown:
            raise HarnessError(f"the modal has no fields {sorted(unknown)}; it has {sorted(known)}")
        rows = [
            {"type": 1, "components": [{"type": 4, "custom_id": f["custom_id"],
                                        "value": values.get(f["custom_id"], f.get("value", ""))}]}
            for f in fields
        ]  # fmt: skip
        data = {"custom_id": shown.modal["custom_id"], "components": rows}
        channel = self.world.channels[shown.channel_id]
        source = (
            self.world.messages[shown.source_message_id]
            if shown.source_message_id is not None
            else None
        )
        return await self._dispatch(MODAL_SUBMIT, user, channel, data, "modal", source, wait)

    async def _dispatch(
        self,
        kind: int,
        user: FakeUser,
        channel: FakeChannel,
        data: dict[str, Any],
        name: str,
        source: FakeMessage | None,
        wait: bool,
    ) -> InteractionRecord:
        interaction_id = self.world.ids.next()
        record = InteractionRecord(
            interaction_id,
            f"fake-interaction-token-{interaction_id}",
            kind,
            name,
            user.id,
            channel.id,
            channel.guild_id,
            self.world.clock.now(),
            self.world,
            source_message_id=source.id if source is not None else None,
        )
        payload = payloads.interaction_base(self.world, kind, user, channel)
        payload.update(id=str(record.id), token=record.token, data=data)
        if source is not None:
            payload["message"] = payloads.message(self.world, source)
        record.payload = payload
        self.world.interactions[record.id] = record
        self.gateway.dispatch("INTERACTION_CREATE", payload)
        loop = asyncio.get_running_loop()
        self._timers.append(loop.call_later(self.world.ack_window, self._check_ack, record))
        self.world.changed()
        if wait:
            await record.settled.wait()
        return record

    def _check_visible(self, user: FakeUser, message: FakeMessage) -> None:
        if message.deleted:
            raise HarnessError(f"message {message.id} was deleted")
        if message.ephemeral_for is not None and message.ephemeral_for != user.id:
            raise HarnessError(f"{user.name} cannot see ephemeral message {message.id}")
        channel = self.world.channels[message.channel_id]
        guild = channel.guild
        if guild is not None and user.id not in guild.members:
            raise HarnessError(f"{user.name} is not a member of {guild.name}")

    def _check_command_permissions(
        self, user: FakeUser, channel: FakeChannel, spec: dict[str, Any]
    ) -> None:
        guild = channel.guild
        required = spec.get("default_member_permissions")
        if guild is None or required is None:
            return
        have = guild.permissions_of(user.id)
        needed = int(required)
        if (needed == 0 and not have.administrator) or needed & ~have.value:
            raise HarnessError(
                f"{user.name} may not use /{spec['name']}: it needs permissions {needed}"
            )

    def _options(
        self,
        spec: dict[str, Any],
        path: list[str],
        given: dict[str, Any],
        channel: FakeChannel,
        validate: bool,
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The interaction's `options` and `resolved`, nested under subcommands as Discord does."""
        resolved: dict[str, Any] = {}
        top: list[dict[str, Any]] = []
        cursor = top
        declared: list[dict[str, Any]] = spec.get("options") or []
        for step in path:
            node = next(
                (
                    o
                    for o in declared
                    if o["name"] == step and o["type"] in (SUB_COMMAND, SUB_COMMAND_GROUP)
                ),
                None,
            )
            if node is None:
                raise HarnessError(f"/{spec['name']} has no subcommand {step!r}")
            entry: dict[str, Any] = {"name": step, "type": node["type"], "options": []}
            cursor.append(entry)
            cursor = entry["options"]
            declared = node.get("options") or []
        if any(o["type"] in (SUB_COMMAND, SUB_COMMAND_GROUP) for o in declared):
            raise HarnessError(
                f"/{spec['name']} needs a subcommand: {[o['name'] for o in declared]}"
            )
        by_name = {o["name"]: o for o in declared}
        unknown = sorted(set(given) - set(by_name))
        if unknown:
            raise HarnessError(f"/{spec['name']} has no option {unknown}; it has {sorted(by_name)}")
        for option in declared:
            if option["name"] not in given:
                if validate and option.get("required"):
                    raise HarnessError(f"/{spec['name']} needs option {option['name']!r}")
                continue
            value = self._option_value(option, given[option["name"]], resolved, channel, validate)
            cursor.append({"name": option["name"], "type": option["type"], "value": value})
        return top, resolved

    def _option_value(
        self,
        option: dict[str, Any],
        value: Any,
        resolved: dict[str, Any],
        channel: FakeChannel,
        validate: bool,
    ) -> Any:
        kind, name = option["type"], option["name"]
        if kind == ATTACHMENT:
            if not isinstance(value, FakeAttachment):
                raise HarnessError(f"option {name!r} takes an upload (DiscordHarness.upload)")
            resolved.setdefault("attachments", {})[str(value.id)] = payloads.attachment(value)
            return str(value.id)
        if kind in (USER, MENTIONABLE) and isinstance(value, FakeUser | FakeMember):
            user = value.user if isinstance(value, FakeMember) else value
            resolved.setdefault("users", {})[str(user.id)] = payloads.user(user)
            guild = channel.guild
            if guild is not None and user.id in guild.members:
                member = payloads.member(self.world, guild, guild.members[user.id], with_user=False)
                resolved.setdefault("members", {})[str(user.id)] = {
                    **member,
                    "permissions": str(guild.permissions_of(user.id).value),
                }
            return str(user.id)
        if kind in (ROLE, MENTIONABLE) and isinstance(value, FakeRole):
            resolved.setdefault("roles", {})[str(value.id)] = payloads.role(value)
            return str(value.id)
        if kind == CHANNEL and isinstance(value, FakeChannel):
            data = payloads.channel(self.world, value)
            resolved.setdefault("channels", {})[str(value.id)] = {
                "id": data["id"],
                "name": data.get("name", ""),
                "type": data["type"],
                "permissions": str(discord.Permissions.all().value),
                **({"parent_id": data["parent_id"]} if data.get("parent_id") else {}),
                **(
                    {"thread_metadata": data["thread_metadata"]}
                    if "thread_metadata" in data
                    else {}
                ),
            }
            return str(value.id)
        expected = {STRING: str, INTEGER: int, BOOLEAN: bool, NUMBER: int | float}.get(kind)
        if (
            expected is None
            or not isinstance(value, expected)
            or (kind in (INTEGER, NUMBER) and isinstance(value, bool))
        ):
            raise HarnessError(f"option {name!r} (type {kind}) cannot take {value!r}")
        if validate:
            self._validate(option, value)
        return value

    @staticmethod
    def _validate(option: dict[str, Any], value: Any) -> None:
        name = option["name"]
        choices = option.get("choices")
        if choices and value not in [c["value"] for c in choices]:
            raise HarnessError(
                f"option {name!r} must be one of {[c['value'] for c in choices]}, not {value!r}"
            )
        if isinstance(value, str):
            if not option.get("min_length", 0) <= len(value) <= option.get("max_length", 6000):
                raise HarnessError(
                    f"option {name!r}: length {len(value)} outside the command's bounds"
                )
        elif ("min_value" in option and value < option["min_value"]) or (
            "max_value" in option and value > option["max_value"]
        ):
            raise HarnessError(f"option {name!r}: {value} outside the command's bounds")

    # faults

    def inject_error(
        self,
        method: str,
        path: str,
        *,
        status: int,
        code: int = 0,
        message: str = "injected",
        times: int | None = 1,
    ) -> None:
        """The next `times` requests matching `method` ("*": any) and `path` (fnmatch on the
        path below /api/v10, or a CDN path /attachments/...) fail with this error."""
        self.rest.faults.append(Fault(method, path, status, code, message, times))

    def inject_rate_limit(
        self,
        method: str,
        path: str,
        *,
        retry_after: float = 0.05,
        times: int | None = 1,
        is_global: bool = False,
    ) -> None:
        """The next `times` matching requests get a 429 with `retry_after` (discord.py retries)."""
        fault = Fault(
            method, path, 429, 0, "You are being rate limited.", times, retry_after, is_global
        )
        self.rest.faults.append(fault)

    def limit_rate(self, method: str, path: str, *, limit: int, per: float) -> None:
        """Enforce a bucket like Discord's: at most `limit` matching requests per `per` seconds
        for each concrete path (e.g. edits of one message); more get a 429."""
        self.rest.rate_rules.append(RateRule(method, path, limit, per))

    # observing

    @property
    def requests(self) -> list[RequestRecord]:
        return self.world.requests

    def requests_to(self, method: str, path: str) -> list[RequestRecord]:
        """Logged requests matching `method` ("*": any) and the fnmatch `path`."""
        return [
            r
            for r in self.world.requests
            if Fault(method, path, 0, 0, "").matches(r.method, r.path)
        ]

    @property
    def messages(self) -> list[FakeMessage]:
        """Every message ever made, ephemeral and deleted ones included, oldest first."""
        return list(self.world.messages.values())

    def message(self, message_id: int) -> FakeMessage:
        return self.world.messages[message_id]

    @property
    def interactions(self) -> list[InteractionRecord]:
        return list(self.world.interactions.values())

    def commands(self, guild: FakeGuild | None = None) -> dict[str, dict[str, Any]]:
        """The application commands synced globally (None) or to `guild`, by name."""
        return dict(self.world.commands.get(guild.id if guild is not None else None, {}))

    async def wait_until(
        self, predicate: Callable[[], Any], *, timeout: float = 5.0, what: str = "a condition"
    ) -> None:
        """Wait until `predicate()` holds; it is re-checked whenever the fake's state changes
        (a request, a message, an interaction, a gateway session), so it should read that state."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for {what}\n{self.transcript()}"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.world.next_change(), remaining)

    def transcript(self) -> str:
        """What happened, for assertion messages: messages, interactions, the last requests."""
        lines = []
        for message in self.world.messages.values():
            channel = self.world.channels[message.channel_id]
            where = f"#{channel.name}" if channel.name else f"dm:{channel.recipient_id}"
            tags = "".join(
                tag
                for tag, on in (
                    (" ephemeral", message.ephemeral),
                    (" loading", message.loading),
                    (" deleted", message.deleted),
                )
                if on
            )
            embed = message.embed or {}
            lines.append(
                f"{where} message {message.id}{tags} edits={message.edits}"
                f" content={message.content!r}"
                f" embed={embed.get('title')!r} files={[a.filename for a in message.attachments]}"
                f" buttons={message.custom_ids}"
            )
        for record in self.world.interactions.values():
            lines.append(
                f"interaction {record.name!r} by {self.world.users[record.user_id].name}:"
                f" response={record.response_type} ack={record.ack_seconds} failed={record.failed}"
                f" webhook_errors={record.webhook_errors}"
            )
        lines += [
            f"{r.method} {r.path} -> {r.status} {r.code or ''}" for r in self.world.requests[-15:]
        ]
        return "\n".join(lines)
