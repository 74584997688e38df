"""The fake's gateway: a websocket that speaks Discord's JSON gateway protocol to discord.py.

HELLO, IDENTIFY → READY and one GUILD_CREATE per guild, heartbeats, RESUME, member
chunk requests, and the dispatches the harness sends (INTERACTION_CREATE, MESSAGE_*,
GUILD_/CHANNEL_/ROLE_ updates). Frames go out as text, which discord.py reads without
decompression even though it asks for zlib-stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiohttp import WSMsgType, web

from tests.fakes import discord_payloads as payloads
from tests.fakes.discord_state import DM, DiscordWorld, FakeChannel, FakeGuild, FakeRole

DISPATCH, HEARTBEAT, IDENTIFY, PRESENCE, RESUME, RECONNECT, REQUEST_MEMBERS = 0, 1, 2, 3, 6, 7, 8
INVALID_SESSION, HELLO, HEARTBEAT_ACK = 9, 10, 11

GUILD_MEMBERS_INTENT = 1 << 1
GUILD_MESSAGES_INTENT = 1 << 9
DIRECT_MESSAGES_INTENT = 1 << 12
HEARTBEAT_INTERVAL_MS = 41_250


class GatewaySession:
    """One bot connection; frames are queued so that callers need not await the socket."""

    def __init__(self, ws: web.WebSocketResponse, session_id: str) -> None:
        self.ws = ws
        self.session_id = session_id
        self.identified = False
        self.intents = 0
        self.seq = 0
        self._outbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    def send(self, op: int, data: Any = None) -> None:
        self._outbox.put_nowait({"op": op, "d": data, "s": None, "t": None})

    def dispatch(self, event: str, data: Any) -> None:
        self.seq += 1
        self._outbox.put_nowait({"op": DISPATCH, "d": data, "s": self.seq, "t": event})

    async def write_loop(self) -> None:
        while (frame := await self._outbox.get()) is not None:
            if self.ws.closed:
                return
            await self.ws.send_str(json.dumps(frame))

    def stop_writing(self) -> None:
        self._outbox.put_nowait(None)


class GatewayHub:
    def __init__(self, world: DiscordWorld, url: str) -> None:
        self.world = world
        self.url = url
        self.sessions: list[GatewaySession] = []
        self._known_session_ids: set[str] = set()
        self.close_codes: list[int | None] = []
        self.identifications = 0
        self.resumes = 0

    @property
    def live(self) -> list[GatewaySession]:
        return [s for s in self.sessions if s.identified and not s.ws.closed]

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True, max_msg_size=0)
        await ws.prepare(request)
        session = GatewaySession(ws, f"fake-session-{self.world.ids.next()}")
        self.sessions.append(session)
        writer = asyncio.create_task(session.write_loop())
        session.send(HELLO, {"heartbeat_interval": HEARTBEAT_INTERVAL_MS})
        try:
            async for frame in ws:
                if frame.type == WSMsgType.TEXT:
                    await self._receive(session, json.loads(frame.data))
                elif frame.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
                    break
        finally:
            session.stop_writing()
            with contextlib.suppress(Exception):
                await writer
            self.sessions.remove(session)
            self.close_codes.append(ws.close_code)
            self.world.changed()
        return ws

    async def _receive(self, session: GatewaySession, frame: dict[str, Any]) -> None:
        op, data = frame.get("op"), frame.get("d")
        if op == HEARTBEAT:
            session.send(HEARTBEAT_ACK)
        elif op == IDENTIFY:
            if data.get("token") != self.world.token:
                await session.ws.close(code=4004, message=b"Authentication failed.")
                return
            session.intents = int(data.get("intents") or 0)
            session.identified = True
            self.identifications += 1
            self._known_session_ids.add(session.session_id)
            session.dispatch("READY", payloads.ready(self.world, session.session_id, self.url))
            for guild in self.world.guilds.values():
                session.dispatch("GUILD_CREATE", self._guild_payload(session, guild))
            self.world.changed()
        elif op == RESUME:
            if (
                data.get("token") == self.world.token
                and data.get("session_id") in self._known_session_ids
            ):
                session.session_id = data["session_id"]
                session.seq = int(data.get("seq") or 0)
                session.identified = True
                self.resumes += 1
                # Events dispatched while the bot was away are not replayed (Discord would).
                session.dispatch("RESUMED", {})
                self.world.changed()
            else:
                session.send(INVALID_SESSION, False)
        elif op == REQUEST_MEMBERS:
            guild = self.world.guilds.get(int(data["guild_id"]))
            if guild is not None:
                members = [payloads.member(self.world, guild, m) for m in guild.members.values()]
                chunk = {
                    "guild_id": str(guild.id),
                    "members": members,
                    "chunk_index": 0,
                    "chunk_count": 1,
                }
                if data.get("nonce"):
                    chunk["nonce"] = data["nonce"]
                session.dispatch("GUILD_MEMBERS_CHUNK", chunk)

    def _guild_payload(self, session: GatewaySession, guild: FakeGuild) -> dict[str, Any]:
        return payloads.guild(
            self.world, guild, all_members=bool(session.intents & GUILD_MEMBERS_INTENT)
        )

    # dispatches

    def dispatch(self, event: str, data: Any, *, intent: int | None = None) -> None:
        for session in self.live:
            if intent is None or session.intents & intent:
                session.dispatch(event, data)

    def broadcast_guild(self, guild: FakeGuild) -> None:
        for session in self.live:
            session.dispatch("GUILD_CREATE", self._guild_payload(session, guild))

    def broadcast_role(self, guild: FakeGuild, role: FakeRole) -> None:
        self.dispatch("GUILD_ROLE_CREATE", {"guild_id": str(guild.id), "role": payloads.role(role)})

    def broadcast_channel(self, channel: FakeChannel) -> None:
        event = "THREAD_CREATE" if channel.parent_id is not None else "CHANNEL_CREATE"
        data = payloads.channel(self.world, channel)
        if channel.parent_id is not None:
            data["newly_created"] = True
        self.dispatch(event, data)

    def message_event(self, event: str, data: dict[str, Any], channel: FakeChannel) -> None:
        intent = DIRECT_MESSAGES_INTENT if channel.type == DM else GUILD_MESSAGES_INTENT
        self.dispatch(event, data, intent=intent)

    async def close_all(self, code: int = 1000) -> None:
        for session in list(self.sessions):
            await session.ws.close(code=code)
