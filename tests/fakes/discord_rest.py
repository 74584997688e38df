"""The fake's REST API, interaction webhooks and CDN, served by aiohttp on loopback.

discord.py talks to it through its own HTTPClient and webhook adapter (aiohttp,
multipart uploads, rate-limit buckets and 429 retries all run for real). Every
request is logged as a `RequestRecord`; errors carry Discord's status, JSON code
and message, so discord.py raises the same exceptions it would against Discord.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes import discord_payloads as payloads
from tests.fakes.discord_state import (
    APPLICATION_COMMAND,
    AUTOCOMPLETE_RESULT,
    CHANNEL_MESSAGE,
    DEFERRED_CHANNEL_MESSAGE,
    DEFERRED_UPDATE_MESSAGE,
    DM,
    EPHEMERAL,
    LOADING,
    MESSAGE_COMPONENT,
    MODAL,
    PUBLIC_THREAD,
    UPDATE_MESSAGE,
    ApiError,
    DiscordWorld,
    FakeAttachment,
    FakeChannel,
    FakeMessage,
    InteractionRecord,
    MessageSnapshot,
    RequestRecord,
    guess_content_type,
    walk_components,
)

API_PREFIX = "/api/v10"


@dataclass(frozen=True)
class Upload:
    index: int
    filename: str
    data: bytes


@dataclass
class Call:
    """One request as a handler sees it."""

    request: web.Request
    args: dict[str, str]
    body: Any
    uploads: list[Upload]

    def arg(self, name: str) -> int:
        return int(self.args[name])


@dataclass
class Fault:
    """A canned failure for the next `times` matching requests (None: every one)."""

    method: str
    pattern: str
    status: int
    code: int
    message: str
    times: int | None = 1
    retry_after: float | None = None  # 429s
    is_global: bool = False

    def matches(self, method: str, path: str) -> bool:
        return self.method in ("*", method) and fnmatch.fnmatchcase(path, self.pattern)


@dataclass
class RateRule:
    """Discord-style bucket: `limit` requests per `per` seconds for each concrete path."""

    method: str
    pattern: str
    limit: int
    per: float
    hits: dict[str, deque[float]] = field(default_factory=dict)

    def matches(self, method: str, path: str) -> bool:
        return self.method in ("*", method) and fnmatch.fnmatchcase(path, self.pattern)


def _json(status: int, data: Any, headers: dict[str, str] | None = None) -> web.Response:
    if status == 204:
        return web.Response(status=204, headers=headers)
    # discord.py parses a body as JSON only when the content type is exactly this, no charset.
    return web.Response(
        body=json.dumps(data).encode(),
        status=status,
        headers={**(headers or {}), "Content-Type": "application/json"},
    )


def _error_body(error: ApiError) -> dict[str, Any]:
    return {"message": error.message, "code": error.code}


Handler = Callable[[Call], Awaitable[tuple[int, Any]]]


def _placeholder(name: re.Match[str]) -> str:
    """Ids are snowflakes; tokens are opaque; a webhook message may be "@original"."""
    pattern = {"token": r"[^/]+", "message": r"@original|[0-9]+"}.get(name[1], r"[0-9]+")
    return f"(?P<{name[1]}>{pattern})"


def _too_long(where: str, text: Any, limit: int) -> list[str]:
    length = len(text or "")
    return [f"{where}: Must be {limit} or fewer in length ({length})."] if length > limit else []


def _form_problems(snapshot: MessageSnapshot) -> list[str]:
    """What Discord's form validation refuses in a message (its documented limits)."""
    problems = _too_long("content", snapshot.content, 2000)
    if len(snapshot.embeds) > 10:
        problems.append("embeds: Must be 10 or fewer in length.")
    total = 0
    for i, embed in enumerate(snapshot.embeds):
        fields = embed.get("fields") or []
        texts = [
            (f"embeds.{i}.title", embed.get("title"), 256),
            (f"embeds.{i}.description", embed.get("description"), 4096),
            (f"embeds.{i}.footer.text", (embed.get("footer") or {}).get("text"), 2048),
            (f"embeds.{i}.author.name", (embed.get("author") or {}).get("name"), 256),
        ]
        for j, embed_field in enumerate(fields):
            texts.append((f"embeds.{i}.fields.{j}.name", embed_field.get("name"), 256))
            texts.append((f"embeds.{i}.fields.{j}.value", embed_field.get("value"), 1024))
        for where, text, limit in texts:
            problems += _too_long(where, text, limit)
            total += len(text or "")
        if len(fields) > 25:
            problems.append(f"embeds.{i}.fields: Must be 25 or fewer in length.")
    if total > 6000:
        problems.append(f"embeds: Embed size exceeds maximum size of 6000 ({total}).")
    rows = snapshot.components
    if len(rows) > 5 and not snapshot.flags & (1 << 15):  # classic action rows, not components v2
        problems.append("components: Must be 5 or fewer in length.")
    for i, row in enumerate(rows):
        if row.get("type") == 1 and len(row.get("components") or []) > 5:
            problems.append(f"components.{i}.components: Must be 5 or fewer in length.")
    for component in walk_components(rows):
        problems += _too_long("custom_id", component.get("custom_id"), 100)
        problems += _too_long("label", component.get("label"), 80)
    return problems


class FakeDiscordRest:
    def __init__(self, world: DiscordWorld) -> None:
        self.world = world
        self.faults: list[Fault] = []
        self.rate_rules: list[RateRule] = []
        self.download_delay = 0.0  # fake seconds each CDN download takes
        self._routes: list[tuple[str, re.Pattern[str], Handler, str]] = []
        bot, hook = "bot", "webhook"
        for method, template, handler, auth in (
            ("GET", "/users/@me", self.get_me, bot),
            ("GET", "/oauth2/applications/@me", self.get_application, bot),
            ("GET", "/applications/@me", self.get_application, bot),
            ("GET", "/gateway", self.get_gateway, "none"),
            ("GET", "/gateway/bot", self.get_gateway, bot),
            ("GET", "/applications/{app}/commands", self.get_commands, bot),
            ("PUT", "/applications/{app}/commands", self.put_commands, bot),
            ("POST", "/applications/{app}/commands", self.post_command, bot),
            ("GET", "/applications/{app}/guilds/{guild}/commands", self.get_commands, bot),
            ("PUT", "/applications/{app}/guilds/{guild}/commands", self.put_commands, bot),
            ("POST", "/applications/{app}/guilds/{guild}/commands", self.post_command, bot),
            ("GET", "/users/{user}", self.get_user, bot),
            ("POST", "/users/@me/channels", self.open_dm, bot),
            ("GET", "/guilds/{guild}/members/{user}", self.get_member, bot),
            ("GET", "/channels/{channel}", self.get_channel, bot),
            ("POST", "/channels/{channel}/typing", self.typing, bot),
            ("GET", "/channels/{channel}/messages", self.list_messages, bot),
            ("POST", "/channels/{channel}/messages", self.post_message, bot),
            ("GET", "/channels/{channel}/messages/{message}", self.get_message, bot),
            ("PATCH", "/channels/{channel}/messages/{message}", self.edit_message, bot),
            ("DELETE", "/channels/{channel}/messages/{message}", self.delete_message, bot),
            (
                "POST",
                "/channels/{channel}/messages/{message}/threads",
                self.thread_from_message,
                bot,
            ),
            ("POST", "/channels/{channel}/threads", self.thread_without_message, bot),
            ("POST", "/interactions/{interaction}/{token}/callback", self.callback, hook),
            ("POST", "/webhooks/{app}/{token}", self.followup, hook),
            ("GET", "/webhooks/{app}/{token}/messages/{message}", self.get_webhook_message, hook),
            (
                "PATCH",
                "/webhooks/{app}/{token}/messages/{message}",
                self.edit_webhook_message,
                hook,
            ),
            (
                "DELETE",
                "/webhooks/{app}/{token}/messages/{message}",
                self.delete_webhook_message,
                hook,
            ),
        ):
            regex = re.compile("^" + re.sub(r"\{(\w+)\}", _placeholder, template) + "$")
            self._routes.append((method, regex, handler, auth))

    def routes(self) -> list[web.RouteDef]:
        return [
            web.route("*", API_PREFIX + "/{tail:.*}", self.handle_api),
            web.get("/attachments/{channel}/{attachment}/{filename}", self.handle_cdn),
        ]

    # the front door: routing, auth, faults, rate limits, logging

    async def handle_api(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["tail"]
        method = request.method
        body, uploads = await self._read_body(request)
        match = next(
            (
                (h, m, a)
                for meth, rx, h, a in self._routes
                if meth == method and (m := rx.match(path))
            ),
            None,
        )
        auth = "none"
        headers: dict[str, str] = {}
        try:
            if match is None:
                self.world.unhandled.append(f"{method} {path}")
                raise ApiError(404, 0, "404: Not Found")
            handler, found, auth = match
            if auth == "bot" and request.headers.get("Authorization") != f"Bot {self.world.token}":
                raise ApiError(401, 0, "401: Unauthorized")
            fault = self._take_fault(method, path)
            if fault is not None:
                return self._log_fault(fault, method, path, auth, body, uploads)
            limited = self._rate_limit(method, path, headers)
            if limited is not None:
                return self._log_429(limited, method, path, auth, body, uploads, headers)
            status, data = await handler(Call(request, found.groupdict(), body, uploads))
        except ApiError as error:
            self._log(method, path, error.status, auth, body, uploads, error.code)
            return _json(error.status, _error_body(error), headers)
        except Exception as crash:  # a gap in the fake: fail the test, not with a 500 retry loop
            self.world.unhandled.append(f"{method} {path}: the fake crashed: {crash!r}")
            self._log(method, path, 400, auth, body, uploads)
            return _json(400, {"message": f"fake Discord crashed: {crash!r}", "code": 0})
        self._log(method, path, status, auth, body, uploads)
        return _json(status, data, headers)

    async def handle_cdn(self, request: web.Request) -> web.Response:
        attachment = self.world.attachments.get(int(request.match_info["attachment"]))
        path = request.path
        if attachment is None or (
            attachment.expires_at is not None and self.world.clock.now() >= attachment.expires_at
        ):
            self._log("GET", path, 404, "none", None, [])
            return web.Response(status=404, text="This content is no longer available.")
        fault = self._take_fault("GET", path)
        if fault is not None:
            self._log("GET", path, fault.status, "none", None, [])
            return web.Response(status=fault.status, text=fault.message)
        self.world.clock.advance(self.download_delay)
        self._log("GET", path, 200, "none", None, [])
        return web.Response(body=attachment.data, content_type=attachment.content_type)

    async def _read_body(self, request: web.Request) -> tuple[Any, list[Upload]]:
        if request.content_type == "multipart/form-data":
            body: Any = None
            uploads: list[Upload] = []
            reader = await request.multipart()
            async for part in reader:
                name = part.name or ""
                if name == "payload_json":
                    body = json.loads(await part.text())  # type: ignore[union-attr]
                elif name.startswith("files["):
                    data = bytes(await part.read())  # type: ignore[union-attr]
                    uploads.append(Upload(int(name[6:-1]), part.filename or "file", data))  # type: ignore[union-attr]
            return body, uploads
        raw = await request.read()
        return (json.loads(raw) if raw else None), []

    def _take_fault(self, method: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.matches(method, path):
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                return fault
        return None

    def _rate_limit(self, method: str, path: str, headers: dict[str, str]) -> float | None:
        """Count the request in its bucket; the seconds to wait when the bucket is full."""
        for rule in self.rate_rules:
            if not rule.matches(method, path):
                continue
            now = self.world.clock.now()
            hits = rule.hits.setdefault(path, deque())
            while hits and hits[0] <= now - rule.per:
                hits.popleft()
            if len(hits) >= rule.limit:
                return hits[0] + rule.per - now
            hits.append(now)
            headers.update(
                {
                    "X-RateLimit-Limit": str(rule.limit),
                    "X-RateLimit-Remaining": str(rule.limit - len(hits)),
                    "X-RateLimit-Reset-After": f"{hits[0] + rule.per - now:.3f}",
                    "X-RateLimit-Bucket": f"fake-{abs(hash((rule.method, rule.pattern))):x}",
                }
            )
        return None

    def _log_fault(
        self, fault: Fault, method: str, path: str, auth: str, body: Any, uploads: list[Upload]
    ) -> web.Response:
        if fault.status == 429:
            return self._log_429(
                fault.retry_after or 0.0, method, path, auth, body, uploads, {}, fault.is_global
            )
        self._log(method, path, fault.status, auth, body, uploads, fault.code)
        return _json(fault.status, {"message": fault.message, "code": fault.code})

    def _log_429(
        self,
        retry_after: float,
        method: str,
        path: str,
        auth: str,
        body: Any,
        uploads: list[Upload],
        headers: dict[str, str],
        is_global: bool = False,
    ) -> web.Response:
        # discord.py treats a 429 without a Via header as a Cloudflare ban, so send one.
        headers = {
            **headers,
            "Via": "1.1 google",
            "Retry-After": str(max(1, round(retry_after))),
            "X-RateLimit-Limit": headers.get("X-RateLimit-Limit", "1"),
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset-After": f"{retry_after:.3f}",
            "X-RateLimit-Scope": "global" if is_global else "user",
        }
        if is_global:
            headers["X-RateLimit-Global"] = "true"
        self._log(method, path, 429, auth, body, uploads)
        data = {
            "message": "You are being rate limited.",
            "retry_after": retry_after,
            "global": is_global,
        }
        return _json(429, data, headers)

    def _log(
        self,
        method: str,
        path: str,
        status: int,
        auth: str,
        body: Any,
        uploads: list[Upload],
        code: int = 0,
    ) -> None:
        record = RequestRecord(
            method,
            path,
            status,
            auth,
            body,
            tuple((u.filename, len(u.data)) for u in uploads),
            self.world.clock.now(),
            code,
        )
        self.world.requests.append(record)
        self.world.changed()

    # message bodies: what a POST or PATCH makes of a message

    def _check_uploads(self, channel: FakeChannel, uploads: list[Upload]) -> None:
        limit = channel.upload_limit
        if any(len(u.data) > limit for u in uploads):
            raise ApiError(413, 40005, "Request entity too large")

    def _attachments(
        self,
        channel: FakeChannel,
        body: dict[str, Any],
        uploads: list[Upload],
        keep: tuple[FakeAttachment, ...],
    ) -> tuple[FakeAttachment, ...]:
        """The attachments after a create or edit: kept ones by id, new ones by upload index."""
        by_index = {u.index: u for u in uploads}
        kept = {str(a.id): a for a in keep}
        listed = body.get("attachments")
        if listed is None:
            listed = [{"id": u.index, "filename": u.filename} for u in uploads]
            result = list(keep)
        else:
            result = []
        for entry in listed:
            entry_id = str(entry.get("id"))
            if entry_id in kept:
                result.append(kept[entry_id])
                continue
            upload = by_index.get(int(entry_id)) if entry_id.isdigit() else None
            if upload is None:
                raise ApiError(
                    400, 50035, f"Invalid Form Body: attachments: unknown attachment {entry_id}"
                )
            filename = entry.get("filename") or upload.filename
            attachment = self.world.upload(
                upload.data,
                filename,
                channel_id=channel.id,
                content_type=guess_content_type(filename),
                expires_after=self.world.cdn_lifetime,
                description=entry.get("description"),
            )
            result.append(attachment)
        return tuple(result)

    def _snapshot(
        self,
        channel: FakeChannel,
        body: dict[str, Any] | None,
        uploads: list[Upload],
        previous: MessageSnapshot | None,
        flags: int | None = None,
    ) -> MessageSnapshot:
        body = body or {}
        self._check_uploads(channel, uploads)
        before = previous or self.world.snapshot()

        snapshot = self.world.snapshot(
            content=body.get("content", before.content),
            embeds=body.get("embeds", list(before.embeds)),
            components=body.get("components", list(before.components)),
            attachments=self._attachments(channel, body, uploads, before.attachments),
            flags=before.flags if flags is None else flags,
        )
        problems = _form_problems(snapshot)
        if problems:
            raise ApiError(400, 50035, "Invalid Form Body: " + "; ".join(problems))
        if not (snapshot.content or snapshot.embeds or snapshot.attachments or snapshot.components):
            raise ApiError(400, 50006, "Cannot send an empty message")
        return snapshot

    def _announce(self, event: str, message: FakeMessage) -> None:
        if self.world.gateway is not None and not message.ephemeral:
            channel = self.world.channels[message.channel_id]
            self.world.gateway.message_event(event, payloads.message(self.world, message), channel)

    def _bot_channel(self, channel_id: int) -> FakeChannel:
        channel = self.world.channel(channel_id)
        guild = channel.guild
        if guild is not None and self.world.bot_user.id not in guild.members:
            raise ApiError(403, 50001, "Missing Access")
        return channel

    def _bot_message(self, call: Call) -> FakeMessage:
        self._bot_channel(call.arg("channel"))
        message = self.world.message_in(call.arg("channel"), call.arg("message"))
        if message.ephemeral:
            # ephemeral messages live only behind the interaction token
            raise ApiError(404, 10008, "Unknown Message")
        return message

    # bot identity and gateway

    async def get_me(self, call: Call) -> tuple[int, Any]:
        return 200, payloads.user(self.world.bot_user)

    async def get_application(self, call: Call) -> tuple[int, Any]:
        return 200, payloads.application(self.world)

    async def get_gateway(self, call: Call) -> tuple[int, Any]:
        limit = {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1}
        return 200, {"url": self.world.gateway.url, "shards": 1, "session_start_limit": limit}

    # application commands

    def _scope(self, call: Call) -> int | None:
        if int(call.args["app"]) != self.world.application_id:
            raise ApiError(403, 50001, "Missing Access")
        if "guild" in call.args:
            guild_id = call.arg("guild")
            guild = self.world.guilds.get(guild_id)
            if guild is None or self.world.bot_user.id not in guild.members:
                raise ApiError(403, 50001, "Missing Access")
            return guild_id
        return None

    def _stored_command(self, scope: int | None, spec: dict[str, Any]) -> dict[str, Any]:
        old = self.world.commands.get(scope, {}).get(spec["name"])
        command_id = old["id"] if old is not None else str(self.world.ids.next())
        permissions = spec.get("default_member_permissions")
        stored = {
            "type": 1,
            "description": "",
            "options": [],
            **spec,
            "id": command_id,
            "application_id": str(self.world.application_id),
            "version": str(self.world.ids.next()),
            "default_member_permissions": None if permissions is None else str(permissions),
        }
        if scope is not None:
            stored["guild_id"] = str(scope)
        return stored

    async def get_commands(self, call: Call) -> tuple[int, Any]:
        return 200, list(self.world.commands.get(self._scope(call), {}).values())

    async def put_commands(self, call: Call) -> tuple[int, Any]:
        scope = self._scope(call)
        stored = [self._stored_command(scope, spec) for spec in call.body or []]
        self.world.commands[scope] = {c["name"]: c for c in stored}
        self.world.changed()
        return 200, stored

    async def post_command(self, call: Call) -> tuple[int, Any]:
        scope = self._scope(call)
        stored = self._stored_command(scope, call.body)
        self.world.commands.setdefault(scope, {})[stored["name"]] = stored
        self.world.changed()
        return 201, stored

    # users, members, channels

    async def get_user(self, call: Call) -> tuple[int, Any]:
        found = self.world.users.get(call.arg("user"))
        if found is None:
            raise ApiError(404, 10013, "Unknown User")
        return 200, payloads.user(found)

    async def open_dm(self, call: Call) -> tuple[int, Any]:
        found = self.world.users.get(int(call.body["recipient_id"]))
        if found is None:
            raise ApiError(404, 10013, "Unknown User")
        return 200, payloads.channel(self.world, self.world.dm_channel(found))

    async def get_member(self, call: Call) -> tuple[int, Any]:
        guild = self.world.guilds.get(call.arg("guild"))
        if guild is None:
            raise ApiError(404, 10004, "Unknown Guild")
        found = guild.members.get(call.arg("user"))
        if found is None:
            raise ApiError(404, 10007, "Unknown Member")
        return 200, payloads.member(self.world, guild, found)

    async def get_channel(self, call: Call) -> tuple[int, Any]:
        return 200, payloads.channel(self.world, self._bot_channel(call.arg("channel")))

    async def typing(self, call: Call) -> tuple[int, Any]:
        self._bot_channel(call.arg("channel"))
        return 204, None

    # channel messages (bot token)

    async def list_messages(self, call: Call) -> tuple[int, Any]:
        channel = self._bot_channel(call.arg("channel"))
        limit = int(call.request.query.get("limit", 50))
        newest_first = list(reversed(channel.messages))[:limit]
        return 200, [payloads.message(self.world, m) for m in newest_first]

    async def post_message(self, call: Call) -> tuple[int, Any]:
        channel = self._bot_channel(call.arg("channel"))
        body = call.body or {}
        # only interaction responses can be ephemeral
        flags = int(body.get("flags") or 0) & ~EPHEMERAL
        snapshot = self._snapshot(channel, body, call.uploads, None, flags)
        message = self.world.new_message(channel.id, self.world.bot_user.id, snapshot)
        self._announce("MESSAGE_CREATE", message)
        return 200, payloads.message(self.world, message)

    async def get_message(self, call: Call) -> tuple[int, Any]:
        return 200, payloads.message(self.world, self._bot_message(call))

    async def edit_message(self, call: Call) -> tuple[int, Any]:
        message = self._bot_message(call)
        if message.author_id != self.world.bot_user.id:
            raise ApiError(403, 50005, "Cannot edit a message authored by another user")
        channel = self.world.channels[message.channel_id]
        self._edit(message, channel, call)
        self._announce("MESSAGE_UPDATE", message)
        return 200, payloads.message(self.world, message)

    def _edit(self, message: FakeMessage, channel: FakeChannel, call: Call) -> None:
        body = call.body or {}
        flags = message.flags & ~LOADING
        if "flags" in body:
            flags = (int(body["flags"] or 0) & ~EPHEMERAL) | (message.flags & EPHEMERAL)
        message.history.append(self._snapshot(channel, body, call.uploads, message.current, flags))
        self.world.changed()

    async def delete_message(self, call: Call) -> tuple[int, Any]:
        message = self._bot_message(call)
        message.deleted = True
        self.world.changed()
        self.world.gateway.message_event(
            "MESSAGE_DELETE",
            {
                "id": str(message.id),
                "channel_id": str(message.channel_id),
                **self._guild_field(message),
            },
            self.world.channels[message.channel_id],
        )
        return 204, None

    def _guild_field(self, message: FakeMessage) -> dict[str, str]:
        guild_id = self.world.channels[message.channel_id].guild_id
        return {"guild_id": str(guild_id)} if guild_id is not None else {}

    async def thread_from_message(self, call: Call) -> tuple[int, Any]:
        message = self._bot_message(call)
        parent = self.world.channels[message.channel_id]
        if parent.type != 0 or any(c.id == message.id for c in parent.threads):
            raise ApiError(400, 160004, "A thread has already been created for this message")
        # Discord gives a thread started from a message the message's own id.
        thread = FakeChannel(
            message.id,
            PUBLIC_THREAD,
            (call.body or {}).get("name", "thread"),
            self.world,
            guild_id=parent.guild_id,
            parent_id=parent.id,
            owner_id=self.world.bot_user.id,
        )
        self.world.channels[thread.id] = thread
        self.world.on_channel_created(thread)
        return 201, payloads.channel(self.world, thread)

    async def thread_without_message(self, call: Call) -> tuple[int, Any]:
        parent = self._bot_channel(call.arg("channel"))
        if parent.type == DM:
            raise ApiError(400, 50024, "Cannot execute action on this channel type")
        thread = FakeChannel(
            self.world.ids.next(),
            PUBLIC_THREAD,
            (call.body or {}).get("name", "thread"),
            self.world,
            guild_id=parent.guild_id,
            parent_id=parent.id,
            owner_id=self.world.bot_user.id,
        )
        self.world.channels[thread.id] = thread
        self.world.on_channel_created(thread)
        return 201, payloads.channel(self.world, thread)

    # interactions: the callback (the 3-second acknowledgement)

    def _interaction(self, interaction_id: int, token: str) -> InteractionRecord:
        record = self.world.interactions.get(interaction_id)
        if record is None or record.token != token:
            raise ApiError(404, 10062, "Unknown interaction")
        return record

    async def callback(self, call: Call) -> tuple[int, Any]:
        record = self._interaction(call.arg("interaction"), call.args["token"])
        elapsed = self.world.clock.now() - record.dispatched_at
        if record.acked:
            raise ApiError(400, 40060, "Interaction has already been acknowledged.")
        if record.failed or elapsed > self.world.ack_window:
            self._fail(record)
            raise ApiError(404, 10062, "Unknown interaction")
        body = call.body or {}
        kind = int(body.get("type", 0))
        data = body.get("data") or {}
        channel = self.world.channels[record.channel_id]
        message: FakeMessage | None = None
        if kind in (CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE):
            ephemeral = bool(int(data.get("flags") or 0) & EPHEMERAL)
            flags = (EPHEMERAL if ephemeral else 0) | (
                LOADING if kind == DEFERRED_CHANNEL_MESSAGE else 0
            )
            if kind == DEFERRED_CHANNEL_MESSAGE:
                snapshot = self.world.snapshot(flags=flags)
            else:
                snapshot = self._snapshot(channel, data, call.uploads, None, flags)
            message = self.world.new_message(
                channel.id,
                self.world.bot_user.id,
                snapshot,
                type=20 if record.type == APPLICATION_COMMAND else 0,
                interaction_id=record.id,
                ephemeral_for=record.user_id if ephemeral else None,
            )
            record.original_message_id = message.id
            self._announce("MESSAGE_CREATE", message)
        elif kind in (DEFERRED_UPDATE_MESSAGE, UPDATE_MESSAGE):
            if record.type != MESSAGE_COMPONENT or record.source_message_id is None:
                raise ApiError(
                    400,
                    50035,
                    "Invalid Form Body: type: only component interactions update a message",
                )
            message = self.world.messages[record.source_message_id]
            record.original_message_id = message.id
            if kind == UPDATE_MESSAGE:
                self._edit(message, channel, Call(call.request, call.args, data, call.uploads))
                self._announce("MESSAGE_UPDATE", message)
        elif kind == MODAL:
            record.modal = data
        elif kind == AUTOCOMPLETE_RESULT:
            record.autocomplete_choices = list(data.get("choices") or [])
        else:
            raise ApiError(
                400, 50035, f"Invalid Form Body: type: {kind} is not a valid callback type"
            )
        record.response_type = kind
        record.ack_seconds = elapsed
        record.settled.set()
        self.world.changed()
        if call.request.query.get("with_response") not in ("1", "true", "True"):
            return 204, None
        interaction = {
            "id": str(record.id),
            "type": record.type,
            "response_message_loading": kind == DEFERRED_CHANNEL_MESSAGE,
            "response_message_ephemeral": bool(message is not None and message.ephemeral),
        }
        resource: dict[str, Any] = {"type": kind}
        if message is not None:
            interaction["response_message_id"] = str(message.id)
            if kind != DEFERRED_UPDATE_MESSAGE:
                resource["message"] = payloads.message(self.world, message)
        return 200, {"interaction": interaction, "resource": resource}

    def _fail(self, record: InteractionRecord) -> None:
        if not record.acked and not record.failed:
            record.failed = True
            record.settled.set()
            self.world.changed()

    # interactions: the webhook (followups and the original response, 15 minutes)

    def _webhook(self, call: Call) -> InteractionRecord:
        route = f"{call.request.method} {call.request.path}"
        record = next(
            (r for r in self.world.interactions.values() if r.token == call.args["token"]), None
        )
        try:
            if int(call.args["app"]) != self.world.application_id or record is None:
                raise ApiError(401, 50027, "Invalid Webhook Token")
            if record.token_expired():
                raise ApiError(401, 50027, "Invalid Webhook Token")
            if not record.acked:
                raise ApiError(404, 10015, "Unknown Webhook")
        except ApiError as error:
            if record is not None:
                record.webhook_errors.append((route, error.status, error.code))
            raise
        return record

    def _webhook_message(self, record: InteractionRecord, message_ref: str) -> FakeMessage:
        message_id = record.original_message_id if message_ref == "@original" else int(message_ref)
        allowed = {record.original_message_id, *record.followup_ids}
        if message_id is None or message_id not in allowed:
            raise ApiError(404, 10008, "Unknown Message")
        message = self.world.messages[message_id]
        if message.deleted:
            raise ApiError(404, 10008, "Unknown Message")
        return message

    async def followup(self, call: Call) -> tuple[int, Any]:
        record = self._webhook(call)
        channel = self.world.channels[record.channel_id]
        body = call.body or {}
        original = record.original
        if record.thinking and original is not None and original.loading:
            # The first followup after a "thinking" defer fills the placeholder; the
            # placeholder's visibility wins over the followup's ephemeral flag.
            self._edit(original, channel, call)
            record.followup_ids.append(original.id)
            self._announce("MESSAGE_UPDATE", original)
            return 200, payloads.message(self.world, original)
        ephemeral = bool(int(body.get("flags") or 0) & EPHEMERAL)
        snapshot = self._snapshot(channel, body, call.uploads, None, EPHEMERAL if ephemeral else 0)
        message = self.world.new_message(
            channel.id,
            self.world.bot_user.id,
            snapshot,
            type=20 if record.type == APPLICATION_COMMAND else 0,
            interaction_id=record.id,
            ephemeral_for=record.user_id if ephemeral else None,
        )
        record.followup_ids.append(message.id)
        self._announce("MESSAGE_CREATE", message)
        return 200, payloads.message(self.world, message)

    async def get_webhook_message(self, call: Call) -> tuple[int, Any]:
        record = self._webhook(call)
        return 200, payloads.message(
            self.world, self._webhook_message(record, call.args["message"])
        )

    async def edit_webhook_message(self, call: Call) -> tuple[int, Any]:
        record = self._webhook(call)
        message = self._webhook_message(record, call.args["message"])
        self._edit(message, self.world.channels[record.channel_id], call)
        self._announce("MESSAGE_UPDATE", message)
        return 200, payloads.message(self.world, message)

    async def delete_webhook_message(self, call: Call) -> tuple[int, Any]:
        record = self._webhook(call)
        message = self._webhook_message(record, call.args["message"])
        message.deleted = True
        self.world.changed()
        return 204, None
