"""Discord API v10 JSON for the fake's state, shaped as discord.py parses it."""

from __future__ import annotations

from typing import Any

from tests.fakes.discord_state import (
    DM,
    PUBLIC_THREAD,
    DiscordWorld,
    FakeAttachment,
    FakeChannel,
    FakeGuild,
    FakeMember,
    FakeMessage,
    FakeRole,
    FakeUser,
)


def user(u: FakeUser) -> dict[str, Any]:
    return {
        "id": str(u.id),
        "username": u.name,
        "discriminator": "0",
        "global_name": u.name,
        "avatar": None,
        "bot": u.bot,
        "public_flags": 0,
    }


def member(
    world: DiscordWorld, guild: FakeGuild, m: FakeMember, *, with_user: bool = True
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "nick": m.nick,
        "roles": [str(r) for r in m.role_ids],
        "joined_at": world.clock.iso(m.joined_at),
        "deaf": False,
        "mute": False,
        "flags": 0,
        "pending": False,
        "avatar": None,
        "premium_since": None,
        "communication_disabled_until": None,
    }
    if with_user:
        payload["user"] = user(m.user)
    return payload


def role(r: FakeRole) -> dict[str, Any]:
    return {
        "id": str(r.id),
        "name": r.name,
        "color": 0,
        "hoist": False,
        "position": r.position,
        "permissions": str(r.permissions),
        "managed": False,
        "mentionable": False,
        "flags": 0,
        "icon": None,
        "unicode_emoji": None,
    }


def channel(world: DiscordWorld, c: FakeChannel) -> dict[str, Any]:
    last = [m.id for m in world.messages.values() if m.channel_id == c.id]
    last_id = str(last[-1]) if last else None
    if c.type == DM:
        recipient = world.users[c.recipient_id] if c.recipient_id is not None else world.bot_user
        return {
            "id": str(c.id),
            "type": DM,
            "recipients": [user(recipient)],
            "last_message_id": last_id,
            "flags": 0,
        }
    payload: dict[str, Any] = {
        "id": str(c.id),
        "type": c.type,
        "guild_id": str(c.guild_id),
        "name": c.name,
        "position": 0,
        "permission_overwrites": [],
        "nsfw": False,
        "parent_id": str(c.parent_id) if c.parent_id else None,
        "topic": None,
        "last_message_id": last_id,
        "rate_limit_per_user": 0,
        "flags": 0,
    }
    if c.type == PUBLIC_THREAD:
        payload.update(
            owner_id=str(c.owner_id),
            member_count=1,
            message_count=len(c.messages),
            thread_metadata={
                "archived": False,
                "auto_archive_duration": 1440,
                "archive_timestamp": world.clock.iso(),
                "locked": False,
            },
        )
    return payload


def guild(world: DiscordWorld, g: FakeGuild, *, all_members: bool) -> dict[str, Any]:
    """GUILD_CREATE: without the members intent Discord sends only the bot's own member."""
    members = [m for m in g.members.values() if all_members or m.user.id == world.bot_user.id]
    channels = [c for c in g.channels if c.type != PUBLIC_THREAD]
    threads = [c for c in g.channels if c.type == PUBLIC_THREAD]
    return {
        "id": str(g.id),
        "name": g.name,
        "icon": None,
        "splash": None,
        "discovery_splash": None,
        "banner": None,
        "description": None,
        "owner_id": str(g.owner_id),
        "roles": [role(r) for r in g.roles.values()],
        "emojis": [],
        "stickers": [],
        "features": [],
        "member_count": len(g.members),
        "large": False,
        "unavailable": False,
        "joined_at": world.clock.iso(),
        "members": [member(world, g, m) for m in members],
        "channels": [channel(world, c) for c in channels],
        "threads": [channel(world, c) for c in threads],
        "voice_states": [],
        "presences": [],
        "stage_instances": [],
        "guild_scheduled_events": [],
        "soundboard_sounds": [],
        "premium_tier": 0,
        "premium_subscription_count": 0,
        "preferred_locale": "en-US",
        "verification_level": 0,
        "default_message_notifications": 0,
        "explicit_content_filter": 0,
        "mfa_level": 0,
        "nsfw_level": 0,
        "system_channel_id": None,
        "afk_channel_id": None,
        "afk_timeout": 300,
        "application_id": None,
        "vanity_url_code": None,
        "max_members": 500000,
    }


def attachment(a: FakeAttachment) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "id": str(a.id),
        "filename": a.filename,
        "size": a.size,
        "url": a.url,
        "proxy_url": a.url,
        "content_type": a.content_type,
    }
    if a.description is not None:
        payload["description"] = a.description
    size = a.image_size
    if size is not None:
        payload["width"], payload["height"] = size
    return payload


def _resolve_embed_urls(
    embed: dict[str, Any], attachments: tuple[FakeAttachment, ...]
) -> dict[str, Any]:
    """Discord answers `attachment://name` in an embed with the attachment's CDN URL."""
    by_name = {a.filename: a for a in attachments}
    resolved = dict(embed)
    for key in ("image", "thumbnail"):
        url = (embed.get(key) or {}).get("url", "")
        name = url.removeprefix("attachment://")
        if url.startswith("attachment://") and name in by_name:
            resolved[key] = {**embed[key], "url": by_name[name].url, "proxy_url": by_name[name].url}
    return resolved


def message(world: DiscordWorld, m: FakeMessage) -> dict[str, Any]:
    now = m.current
    c = world.channels[m.channel_id]
    payload: dict[str, Any] = {
        "id": str(m.id),
        "channel_id": str(m.channel_id),
        "author": user(world.users[m.author_id]),
        "content": now.content,
        "timestamp": world.clock.iso(m.history[0].at),
        "edited_timestamp": world.clock.iso(now.at) if m.edits else None,
        "tts": False,
        "mention_everyone": False,
        "mentions": [],
        "mention_roles": [],
        "attachments": [attachment(a) for a in now.attachments],
        "embeds": [_resolve_embed_urls(e, now.attachments) for e in now.embeds],
        "components": list(now.components),
        "pinned": False,
        "type": m.type,
        "flags": now.flags,
    }
    if c.guild_id is not None:
        payload["guild_id"] = str(c.guild_id)
    if m.interaction_id is not None:
        payload["webhook_id"] = str(world.application_id)
        payload["application_id"] = str(world.application_id)
    return payload


def application(world: DiscordWorld) -> dict[str, Any]:
    """GET /oauth2/applications/@me."""
    return {
        "id": str(world.application_id),
        "name": world.bot_user.name,
        "icon": None,
        "description": "",
        "rpc_origins": [],
        "bot_public": True,
        "bot_require_code_grant": False,
        "bot": user(world.bot_user),
        "owner": user(world.bot_user),
        "summary": "",
        "verify_key": "0" * 64,
        "team": None,
        "flags": 0,
        "interactions_endpoint_url": None,
        "tags": [],
    }


def ready(world: DiscordWorld, session_id: str, resume_url: str) -> dict[str, Any]:
    return {
        "v": 10,
        "user": {
            **user(world.bot_user),
            "verified": True,
            "mfa_enabled": False,
            "email": None,
            "flags": 0,
        },
        "guilds": [{"id": str(g.id), "unavailable": True} for g in world.guilds.values()],
        "session_id": session_id,
        "resume_gateway_url": resume_url,
        "application": {"id": str(world.application_id), "flags": 0},
        "shard": [0, 1],
        "private_channels": [],
        "relationships": [],
        "user_settings": {},
        "geo_ordered_rtc_regions": [],
        "guild_join_requests": [],
    }


def interaction_base(
    world: DiscordWorld, kind: int, who: FakeUser, where: FakeChannel
) -> dict[str, Any]:
    """The fields every interaction carries: who, where, what they may do, the upload limit."""
    payload: dict[str, Any] = {
        "application_id": str(world.application_id),
        "type": kind,
        "version": 1,
        "channel_id": str(where.id),
        "channel": channel(world, where),
        "locale": "en-US",
        "entitlements": [],
        "attachment_size_limit": where.upload_limit,
    }
    g = where.guild
    if g is None:
        payload["user"] = user(who)
        payload["context"] = 1
        payload["authorizing_integration_owners"] = {"1": str(who.id)}
        payload["app_permissions"] = str(world.bot_permissions.value)
        return payload
    if who.id not in g.members:
        raise ValueError(f"{who.name} is not a member of {g.name}")
    payload["guild_id"] = str(g.id)
    payload["guild"] = {"id": str(g.id), "locale": "en-US", "features": []}
    payload["guild_locale"] = "en-US"
    payload["member"] = {
        **member(world, g, g.members[who.id]),
        "permissions": str(g.permissions_of(who.id).value),
    }
    payload["context"] = 0
    payload["authorizing_integration_owners"] = {"0": str(g.id)}
    payload["app_permissions"] = str(g.permissions_of(world.bot_user.id).value)
    return payload
