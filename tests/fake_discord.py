"""A fake Discord for tests: the REST API and the gateway that discord.py talks to, on 127.0.0.1.

It speaks the real wire protocol (HTTP + JSON, and the gateway websocket: HELLO, IDENTIFY, READY, GUILD_CREATE,
heartbeats, RESUME) and keeps just enough state for the routes komt-bot uses: users, guilds, channels, threads,
messages, interactions and their responses. Every REST call is recorded with a monotonic timestamp, so tests
can assert on what the bot sent and when. Tests play the people: they send messages, slash commands and
button clicks as gateway events, and can drop the connection or answer a request with a 429.

Facts discord.py depends on (see the project's platform notes): JSON responses carry exactly
``Content-Type: application/json``; a 429 needs a ``Via`` header or discord.py takes it for a Cloudflare ban.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
import re
import secrets
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import redis.asyncio as aioredis
from aiohttp import WSMsgType, web

from komt_bot import messages
from komt_bot.dev.fakes.local_http import serve_on_loopback
from komt_bot.dev.fakes.platform_limits import RateLimits
from komt_bot.metrics import Metrics
from komt_bot.queue import JobQueue
from komt_bot.settings import DiscordSettings, Settings
from tests.helpers import running_worker

with warnings.catch_warnings():
    # discord.py imports audioop (deprecated) for voice, which komt-bot never uses. Importing it here, once,
    # keeps pytest's filterwarnings=error from failing collection; remove when pyproject ignores it.
    warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)
    import discord  # noqa: F401

DISCORD_EPOCH_MS = 1_420_070_400_000
MESSAGE_CONTENT_INTENT = 1 << 15
API_PREFIX = "/api/v10"
TOKEN_LIFETIME_SECONDS = 15 * 60
T = TypeVar("T")
Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Call:
    """One REST request the bot made."""

    method: str
    path: str  # without the /api/v10 prefix or the query
    query: dict[str, str]
    body: Any
    at: float  # time.monotonic() when it arrived
    wall: float  # time.time() when it arrived (to compare with the queue's timestamps)
    status: int = 0


@dataclass(slots=True)
class _Failure:
    method: str
    pattern: re.Pattern[str]
    status: int
    body: Json
    headers: dict[str, str]


@dataclass(slots=True)
class _Interaction:
    payload: Json
    original: int | None = None  # message id of the response
    acknowledged: bool = False
    responses: list[int] = field(default_factory=list)  # callback types


def buttons(message: Json) -> list[Json]:
    """Every button of a message, row after row."""
    return [item for row in message.get("components") or [] for item in row.get("components", [])]


def _iso(at: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if at is None else at, UTC).isoformat()


class FakeDiscord:
    """A fake Discord REST API and gateway in one aiohttp server."""

    def __init__(self, *, message_content_granted: bool = True, limits: RateLimits | None = None) -> None:
        self.message_content_granted = message_content_granted
        self.limits = limits  # Discord's buckets (fakes.platform_limits.discord_buckets), enforced when given
        self.calls: list[Call] = []
        self.identifies: list[Json] = []
        self.sessions: list[str] = []  # each accepted IDENTIFY, once READY and every GUILD_CREATE went out
        self.resumes: list[Json] = []
        self.commands: dict[str, list[Json]] = {}  # "global" or guild id -> synced commands
        self.users: dict[int, Json] = {}
        self.guilds: dict[int, Json] = {}
        self.channels: dict[int, Json] = {}
        self.roles: dict[int, Json] = {}
        self.messages: dict[int, Json] = {}
        self.interactions: dict[str, _Interaction] = {}  # by token
        self._counter = itertools.count()
        self._failures: list[_Failure] = []
        self._ws: web.WebSocketResponse | None = None
        self._sent: list[Json] = []  # every dispatch, for RESUME
        self._session_id = secrets.token_hex(8)
        self._runner: web.AppRunner | None = None
        self._current_query: dict[str, str] = {}
        self.port = 0
        self.application_id = self.snowflake()
        self.bot = self.add_user("komt-bot", bot=True, user_id=self.application_id)

    # -- server -----------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on an ephemeral port of 127.0.0.1."""
        app = web.Application()
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._rest)
        self._runner, self.port = await serve_on_loopback(app)

    async def close(self) -> None:
        """Stop the server (closing the gateway connection)."""
        if self._ws is not None:
            await self._ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_url(self) -> str:
        """What KOMT_DISCORD__API_URL should be."""
        return f"http://127.0.0.1:{self.port}{API_PREFIX}"

    @property
    def gateway_url(self) -> str:
        """What KOMT_DISCORD__GATEWAY_URL should be."""
        return f"ws://127.0.0.1:{self.port}/gateway"

    # -- the world --------------------------------------------------------------------------------------------

    def snowflake(self, at: float | None = None) -> int:
        """A Discord id whose timestamp is ``at`` (default now)."""
        ms = int((time.time() if at is None else at) * 1000)
        return ((ms - DISCORD_EPOCH_MS) << 22) | (next(self._counter) & 0x3FFFFF)

    def add_user(self, name: str, *, bot: bool = False, user_id: int | None = None) -> Json:
        """A Discord user."""
        user_id = user_id or self.snowflake()
        user = {
            "id": str(user_id),
            "username": name,
            "discriminator": "0",
            "global_name": name,
            "avatar": None,
            "bot": bot,
            "public_flags": 0,
        }
        self.users[user_id] = user
        return user

    def add_guild(self, name: str = "komt-test") -> int:
        """A guild with an @everyone role and the bot as member."""
        guild_id = self.snowflake()
        self.guilds[guild_id] = {"id": str(guild_id), "name": name, "members": {}}
        self._add_role(guild_id, "@everyone", role_id=guild_id)
        self.add_role(guild_id, "komt-bot", bot_id=int(self.bot["id"]))
        return guild_id

    def add_role(self, guild_id: int, name: str, *, bot_id: int | None = None) -> int:
        """A role of the guild (``bot_id`` makes it the bot's managed role)."""
        return self._add_role(guild_id, name, bot_id=bot_id)

    def _add_role(self, guild_id: int, name: str, *, role_id: int | None = None, bot_id: int | None = None) -> int:
        role_id = role_id or self.snowflake()
        self.roles[role_id] = {
            "id": str(role_id),
            "name": name,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "position": len([r for r in self.roles.values() if r.get("_guild") == guild_id]),
            "permissions": "2248473465835073",
            "managed": bot_id is not None,
            "mentionable": True,
            "flags": 0,
            "icon": None,
            "unicode_emoji": None,
            "tags": {"bot_id": str(bot_id)} if bot_id else {},
            "_guild": guild_id,
        }
        return role_id

    def add_channel(self, guild_id: int, name: str = "general") -> int:
        """A text channel of the guild."""
        channel_id = self.snowflake()
        self.channels[channel_id] = {
            "id": str(channel_id),
            "type": 0,
            "guild_id": str(guild_id),
            "name": name,
            "position": len(self.channels),
            "parent_id": None,
            "topic": None,
            "nsfw": False,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "permission_overwrites": [],
            "flags": 0,
        }
        return channel_id

    def add_dm(self, user: Json) -> int:
        """The DM channel between ``user`` and the bot."""
        channel_id = self.snowflake()
        self.channels[channel_id] = {"id": str(channel_id), "type": 1, "recipients": [user], "last_message_id": None}
        return channel_id

    def member(self, guild_id: int, user: Json, roles: tuple[int, ...] = ()) -> Json:
        """Make ``user`` a member of the guild with these roles; returns the member payload (with user)."""
        member = {
            "user": user,
            "roles": [str(r) for r in roles],
            "nick": None,
            "joined_at": _iso(),
            "deaf": False,
            "mute": False,
            "flags": 0,
            "permissions": "2248473465835073",
        }
        self.guilds[guild_id]["members"][int(user["id"])] = member
        return member

    def _role_public(self, role: Json) -> Json:
        return {k: v for k, v in role.items() if not k.startswith("_")}

    def _guild_payload(self, guild_id: int) -> Json:
        guild = self.guilds[guild_id]
        bot_member = self.member(guild_id, self.bot, tuple(self._roles_of_bot(guild_id)))
        return {
            "id": str(guild_id),
            "name": guild["name"],
            "unavailable": False,
            "owner_id": str(self.bot["id"]),
            "member_count": 2,
            "features": [],
            "emojis": [],
            "stickers": [],
            "roles": [self._role_public(r) for r in self.roles.values() if r["_guild"] == guild_id],
            "channels": [c for c in self.channels.values() if c.get("guild_id") == str(guild_id) and c["type"] == 0],
            "threads": [c for c in self.channels.values() if c.get("guild_id") == str(guild_id) and c["type"] == 11],
            "members": [bot_member],
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "premium_tier": 0,
            "preferred_locale": "ko",
            "system_channel_flags": 0,
        }

    def _roles_of_bot(self, guild_id: int) -> list[int]:
        return [int(r["id"]) for r in self.roles.values() if r["_guild"] == guild_id and r["tags"]]

    # -- messages ---------------------------------------------------------------------------------------------

    def _new_message(self, channel_id: int, author: Json, content: str, **extra: Any) -> Json:
        message_id = self.snowflake()
        channel = self.channels[channel_id]
        message: Json = {
            "id": str(message_id),
            "channel_id": str(channel_id),
            "type": 0,
            "content": content,
            "author": author,
            "attachments": [],
            "embeds": [],
            "mentions": [],
            "mention_roles": [],
            "mention_everyone": False,
            "pinned": False,
            "tts": False,
            "timestamp": _iso(),
            "edited_timestamp": None,
            "flags": 0,
            "components": [],
            **extra,
        }
        if "guild_id" in channel:
            message["guild_id"] = channel["guild_id"]
        self.messages[message_id] = message
        channel["last_message_id"] = str(message_id)
        return message

    def _reference(self, message: Json, reply_to: int | None) -> None:
        if reply_to is None or reply_to not in self.messages:
            return
        parent = self.messages[reply_to]
        message["type"] = 19
        message["message_reference"] = {"type": 0, "message_id": str(reply_to), "channel_id": parent["channel_id"]}
        if "guild_id" in parent:
            message["message_reference"]["guild_id"] = parent["guild_id"]

    def public(self, message: Json) -> Json:
        """A message as the API returns it (with the message it replies to)."""
        data = dict(message)
        reference = message.get("message_reference")
        if reference is not None:
            parent = self.messages.get(int(reference["message_id"]))
            data["referenced_message"] = {k: v for k, v in parent.items()} if parent else None
        return data

    def in_channel(self, channel_id: int) -> list[Json]:
        """The channel's messages, oldest first."""
        return [m for m in self.messages.values() if m["channel_id"] == str(channel_id)]

    def by_bot(self, channel_id: int | None = None) -> list[Json]:
        """The bot's messages (in one channel or anywhere), oldest first."""
        return [
            m
            for m in self.messages.values()
            if m["author"]["id"] == self.bot["id"] and (channel_id is None or m["channel_id"] == str(channel_id))
        ]

    def edits_of(self, message_id: int) -> list[Call]:
        """Every edit of one message (channel route or interaction webhook route)."""
        original = {str(i.original) for i in self.interactions.values() if i.original == message_id}
        result = []
        for call in self.calls:
            if call.method != "PATCH" or not (200 <= call.status < 300):
                continue
            if call.path.endswith(f"/messages/{message_id}"):
                result.append(call)
            elif call.path.endswith("/messages/@original") and original:
                token = call.path.split("/")[3]
                if token in self.interactions and self.interactions[token].original == message_id:
                    result.append(call)
        return result

    # -- people -----------------------------------------------------------------------------------------------

    async def user_message(
        self,
        channel_id: int,
        author: Json,
        content: str,
        *,
        mention_bot: bool = False,
        reply_to: int | None = None,
        roles: tuple[int, ...] = (),
    ) -> Json:
        """``author`` writes in a channel (``mention_bot`` puts ``<@bot>`` in front)."""
        if mention_bot:
            content = f"<@{self.bot['id']}> {content}"
        message = self._new_message(channel_id, author, content)
        mentioned = [self.bot] if mention_bot else []
        self._reference(message, reply_to)
        if reply_to is not None and self.messages[reply_to]["author"]["id"] == self.bot["id"] and not mention_bot:
            mentioned = [self.bot]  # a reply pings the author by default
        message["mentions"] = mentioned
        guild_id = self.channels[channel_id].get("guild_id")
        if guild_id is not None:
            member = self.member(int(guild_id), author, roles)
            message["member"] = {k: v for k, v in member.items() if k not in ("user", "permissions")}
        await self._message_create(message)
        return message

    async def _message_create(self, message: Json) -> None:
        payload = self.public(message)
        if not self.message_content_granted and not self._sees_content(message):
            payload = {**payload, "content": ""}
        await self.dispatch("MESSAGE_CREATE", payload)

    def _sees_content(self, message: Json) -> bool:
        """Without the intent a bot still sees its own messages, DMs, and messages that mention it."""
        mentions_bot = any(u["id"] == self.bot["id"] for u in message["mentions"])
        is_dm = "guild_id" not in message
        return mentions_bot or is_dm or message["author"]["id"] == self.bot["id"]

    async def slash(
        self,
        channel_id: int,
        user: Json,
        question: str,
        *,
        created_at: float | None = None,
        roles: tuple[int, ...] = (),
    ) -> _Interaction:
        """``user`` runs ``/ask question:<question>`` (``created_at`` backdates the interaction)."""
        command = self._command("ask")
        data: Json = {
            "id": command["id"],
            "name": "ask",
            "type": 1,
            "options": [{"name": "question", "type": 3, "value": question}],
        }
        if "guild_id" in command:
            data["guild_id"] = command["guild_id"]
        return await self._interact(channel_id, user, 2, data, created_at=created_at, roles=roles)

    def _command(self, name: str) -> Json:
        for commands in self.commands.values():
            for command in commands:
                if command["name"] == name:
                    return command
        raise AssertionError(f"/{name} was never synced")

    async def click(self, message_id: int, user: Json, *, roles: tuple[int, ...] = (), button: int = 0) -> _Interaction:
        """``user`` clicks a button of a message (the first, or the ``button``-th of all its buttons)."""
        message = self.messages[message_id]
        pressed = buttons(message)[button]
        data = {"custom_id": pressed["custom_id"], "component_type": 2}
        return await self._interact(
            int(message["channel_id"]), user, 3, data, message=self.public(message), roles=roles
        )

    async def _interact(
        self,
        channel_id: int,
        user: Json,
        kind: int,
        data: Json,
        *,
        created_at: float | None = None,
        message: Json | None = None,
        roles: tuple[int, ...] = (),
    ) -> _Interaction:
        channel = self.channels[channel_id]
        payload: Json = {
            "id": str(self.snowflake(created_at)),
            "application_id": str(self.application_id),
            "type": kind,
            "token": secrets.token_urlsafe(24),
            "version": 1,
            "channel_id": str(channel_id),
            "channel": {k: v for k, v in channel.items()},
            "data": data,
            "app_permissions": "2248473465835073",
            "locale": "ko",
            "entitlements": [],
            "authorizing_integration_owners": {},
            "attachment_size_limit": 10_485_760,
        }
        if message is not None:
            payload["message"] = message
        if "guild_id" in channel:
            payload["guild_id"] = channel["guild_id"]
            payload["guild_locale"] = "ko"
            payload["context"] = 0
            payload["member"] = self.member(int(channel["guild_id"]), user, roles)
        else:
            payload["context"] = 1
            payload["user"] = user
        interaction = _Interaction(payload)
        self.interactions[payload["token"]] = interaction
        await self.dispatch("INTERACTION_CREATE", payload)
        return interaction

    # -- the gateway ------------------------------------------------------------------------------------------

    async def dispatch(self, event: str, data: Json) -> None:
        """Send a gateway event (kept for a RESUME if the bot is not connected right now)."""
        payload = {"op": 0, "t": event, "s": len(self._sent) + 1, "d": data}
        self._sent.append(payload)
        if self._ws is not None and not self._ws.closed:
            await self._ws.send_str(json.dumps(payload))

    async def disconnect(self, code: int = 4000) -> None:
        """Close the gateway connection with ``code`` (4000: unknown error, the bot resumes)."""
        if self._ws is not None:
            await self._ws.close(code=code)

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._ws = ws
        await ws.send_str(json.dumps({"op": 10, "d": {"heartbeat_interval": 45_000}}))
        async for frame in ws:
            if frame.type != WSMsgType.TEXT:
                continue
            message = json.loads(frame.data)
            await self._on_op(ws, message["op"], message.get("d"))
        return ws

    async def _on_op(self, ws: web.WebSocketResponse, op: int, data: Any) -> None:
        if op == 1:
            await ws.send_str(json.dumps({"op": 11}))
        elif op == 2:
            self.identifies.append(data)
            if data.get("intents", 0) & MESSAGE_CONTENT_INTENT and not self.message_content_granted:
                await ws.close(code=4014, message=b"Disallowed intent(s)")
                return
            await self._ready()
        elif op == 6:
            self.resumes.append(data)
            await self._resume(ws, data)

    async def _ready(self) -> None:
        self._sent.clear()
        self._session_id = secrets.token_hex(8)
        await self.dispatch(
            "READY",
            {
                "v": 10,
                "user": self.bot,
                "guilds": [{"id": str(g), "unavailable": True} for g in self.guilds],
                "session_id": self._session_id,
                "resume_gateway_url": self.gateway_url,
                "application": {"id": str(self.application_id), "flags": 0},
                "private_channels": [],
                "relationships": [],
            },
        )
        for guild_id in self.guilds:
            await self.dispatch("GUILD_CREATE", self._guild_payload(guild_id))
        self.sessions.append(self._session_id)

    async def _resume(self, ws: web.WebSocketResponse, data: Json) -> None:
        if data.get("session_id") != self._session_id:
            await ws.send_str(json.dumps({"op": 9, "d": False}))
            return
        for payload in self._sent[int(data.get("seq") or 0) :]:
            await ws.send_str(json.dumps(payload))
        await self.dispatch("RESUMED", {})

    # -- REST -------------------------------------------------------------------------------------------------

    def fail_next(
        self, method: str, path_pattern: str, *, status: int = 429, retry_after: float = 0.3, times: int = 1
    ) -> None:
        """Answer the next ``times`` matching requests with an error (a 429 with Discord's headers by default)."""
        body: Json = {"message": "You are being rate limited.", "retry_after": retry_after, "global": False}
        headers = {
            "Via": "1.1 google",
            "Retry-After": str(retry_after),
            "X-RateLimit-Limit": "5",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset-After": str(retry_after),
            "X-RateLimit-Bucket": "fake-bucket",
            "X-RateLimit-Scope": "user",
        }
        for _ in range(times):
            self._failures.append(_Failure(method, re.compile(path_pattern), status, body, headers))

    async def _rest(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["tail"]
        body = await self._body(request)
        call = Call(request.method, path, dict(request.query), body, time.monotonic(), time.time())
        self._current_query = call.query
        status, data, headers = (
            self._failure(request.method, path)
            or self._over_limit(request.method, path)
            or await self._route(request.method, path, body)
        )
        headers = {**self._limit_headers(request.method, path), **headers}
        self.calls.append(Call(call.method, call.path, call.query, call.body, call.at, call.wall, status))
        raw = b"" if status == 204 else json.dumps(data).encode()
        return web.Response(status=status, body=raw, headers={"Content-Type": "application/json", **headers})

    @staticmethod
    async def _body(request: web.Request) -> Any:
        if not request.can_read_body:
            return None
        if request.content_type.startswith("multipart/"):
            form = await request.post()
            return json.loads(str(form.get("payload_json", "{}")))
        return await request.json()

    @staticmethod
    def _bucket_of(method: str, path: str) -> tuple[str, str] | None:
        """The per-route bucket of a request: messages per channel, interaction responses per token."""
        if match := re.match(r"/channels/(\d+)/messages", path):
            return "channel", f"{method} {match.group(1)}"
        if match := re.match(r"/webhooks/\d+/([^/]+)", path):
            return "webhook", f"{method} {match.group(1)}"
        return None

    def _over_limit(self, method: str, path: str) -> tuple[int, Json, dict[str, str]] | None:
        """A 429 with Discord's body and headers when the route's bucket, or the global one, is empty."""
        if self.limits is None:
            return None
        route = self._bucket_of(method, path)
        wait = self.limits.check(*route) if route else None
        scope = "user"
        if wait is None:
            wait, scope = self.limits.check("global", "bot"), "global"
        if wait is None:
            return None
        body: Json = {
            "message": "You are being rate limited.",
            "retry_after": round(wait, 3),
            "global": scope == "global",
        }
        headers = {"Via": "1.1 google", "Retry-After": str(math.ceil(wait)), "X-RateLimit-Scope": scope}
        if scope == "global":
            headers["X-RateLimit-Global"] = "true"
        return 429, body, headers

    def _limit_headers(self, method: str, path: str) -> dict[str, str]:
        """``X-RateLimit-*`` of the route's bucket, as Discord sends with every answer (discord.py paces by them)."""
        route = self._bucket_of(method, path)
        bucket = self.limits.bucket(*route) if self.limits is not None and route else None
        if route is None or bucket is None:
            return {}
        return {
            "X-RateLimit-Limit": str(bucket.rule.burst),
            "X-RateLimit-Remaining": str(bucket.remaining()),
            "X-RateLimit-Reset-After": f"{bucket.reset_after():.3f}",
            "X-RateLimit-Bucket": f"{route[0]}-{route[1].replace(' ', '-')}",
        }

    def _failure(self, method: str, path: str) -> tuple[int, Json, dict[str, str]] | None:
        for failure in self._failures:
            if failure.method == method and failure.pattern.fullmatch(path):
                self._failures.remove(failure)
                return failure.status, failure.body, failure.headers
        return None

    async def _route(self, method: str, path: str, body: Any) -> tuple[int, Any, dict[str, str]]:
        for route_method, pattern, handler in self._routes():
            match = re.fullmatch(pattern, path)
            if route_method == method and match:
                status, data = await handler(body, *match.groups())
                return status, data, {}
        return 404, {"message": f"404: Not Found ({method} {path})", "code": 0}, {}

    def _routes(self) -> list[tuple[str, str, Callable[..., Awaitable[tuple[int, Any]]]]]:
        return [
            ("GET", r"/users/@me", self._get_me),
            ("GET", r"/oauth2/applications/@me", self._get_application),
            ("PUT", r"/applications/(\d+)/commands", self._put_commands),
            ("PUT", r"/applications/(\d+)/guilds/(\d+)/commands", self._put_commands),
            ("POST", r"/channels/(\d+)/messages", self._post_message),
            ("GET", r"/channels/(\d+)/messages", self._get_messages),
            ("GET", r"/channels/(\d+)/messages/(\d+)", self._get_message),
            ("PATCH", r"/channels/(\d+)/messages/(\d+)", self._patch_message),
            ("POST", r"/channels/(\d+)/messages/(\d+)/threads", self._post_thread),
            ("POST", r"/interactions/(\d+)/([^/]+)/callback", self._post_callback),
            ("GET", r"/webhooks/(\d+)/([^/]+)/messages/@original", self._get_original),
            ("PATCH", r"/webhooks/(\d+)/([^/]+)/messages/@original", self._patch_original),
            ("POST", r"/webhooks/(\d+)/([^/]+)", self._post_followup),
            ("PATCH", r"/webhooks/(\d+)/([^/]+)/messages/(\d+)", self._patch_followup),
        ]

    async def _get_me(self, _body: Any) -> tuple[int, Any]:
        return 200, {**self.bot, "verified": True, "mfa_enabled": False, "flags": 0}

    async def _get_application(self, _body: Any) -> tuple[int, Any]:
        owner = self.add_user("owner")
        return 200, {
            "id": str(self.application_id),
            "name": "komt-bot",
            "description": "",
            "icon": None,
            "bot_public": True,
            "bot_require_code_grant": False,
            "owner": owner,
            "verify_key": "0" * 64,
            "flags": 0,
            "team": None,
            "summary": "",
            "rpc_origins": [],
        }

    async def _put_commands(self, body: Any, _app: str, guild: str | None = None) -> tuple[int, Any]:
        synced = []
        for command in body:
            data = {**command, "id": str(self.snowflake()), "application_id": str(self.application_id)}
            data["version"] = str(self.snowflake())
            if guild is not None:
                data["guild_id"] = guild
            synced.append(data)
        self.commands[guild or "global"] = synced
        return 200, synced

    def _bot_message(self, channel_id: int, body: Json, **extra: Any) -> Json:
        message = self._new_message(channel_id, self.bot, body.get("content") or "", **extra)
        message["components"] = body.get("components") or []
        message["flags"] = body.get("flags") or 0
        reference = body.get("message_reference")
        if reference:
            self._reference(message, int(reference["message_id"]))
        return message

    async def _post_message(self, body: Json, channel: str) -> tuple[int, Any]:
        if int(channel) not in self.channels:
            return 404, {"message": "Unknown Channel", "code": 10003}
        message = self._bot_message(int(channel), body)
        await self._message_create(message)
        return 200, self.public(message)

    async def _get_messages(self, _body: Any, channel: str) -> tuple[int, Any]:
        request_query = self._current_query  # set by _rest just before routing
        before = int(request_query.get("before", 1 << 63))
        limit = int(request_query.get("limit", 50))
        found = [m for m in self.in_channel(int(channel)) if int(m["id"]) < before]
        return 200, [self.public(m) for m in reversed(found[-limit:])]

    async def _get_message(self, _body: Any, channel: str, message_id: str) -> tuple[int, Any]:
        message = self.messages.get(int(message_id))
        if message is None or message["channel_id"] != channel:
            return 404, {"message": "Unknown Message", "code": 10008}
        return 200, self.public(message)

    def _edit(self, message: Json, body: Json) -> Json:
        if "content" in body:
            message["content"] = body["content"] or ""
        if "components" in body:
            message["components"] = body["components"] or []
        message["edited_timestamp"] = _iso()
        message["flags"] = message["flags"] & ~128  # no longer "thinking"
        return self.public(message)

    async def _patch_message(self, body: Json, channel: str, message_id: str) -> tuple[int, Any]:
        message = self.messages.get(int(message_id))
        if message is None or message["channel_id"] != channel:
            return 404, {"message": "Unknown Message", "code": 10008}
        if message["author"]["id"] != self.bot["id"]:
            return 403, {"message": "Cannot edit a message authored by another user", "code": 50005}
        return 200, self._edit(message, body)

    async def _post_thread(self, body: Json, channel: str, message_id: str) -> tuple[int, Any]:
        parent = self.channels[int(channel)]
        thread_id = int(message_id)
        thread = {
            "id": message_id,
            "type": 11,
            "guild_id": parent["guild_id"],
            "parent_id": channel,
            "owner_id": self.bot["id"],
            "name": body["name"],
            "message_count": 0,
            "member_count": 1,
            "rate_limit_per_user": 0,
            "last_message_id": None,
            "flags": 0,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": body.get("auto_archive_duration", 1440),
                "archive_timestamp": _iso(),
                "locked": False,
            },
        }
        self.channels[thread_id] = thread
        self.messages[thread_id]["thread"] = thread
        await self.dispatch("THREAD_CREATE", {**thread, "newly_created": True})
        return 201, thread

    def _token(self, token: str) -> _Interaction | None:
        interaction = self.interactions.get(token)
        if interaction is None:
            return None
        created = ((int(interaction.payload["id"]) >> 22) + DISCORD_EPOCH_MS) / 1000
        return interaction if time.time() < created + TOKEN_LIFETIME_SECONDS else None

    async def _post_callback(self, body: Json, interaction_id: str, token: str) -> tuple[int, Any]:
        interaction = self.interactions.get(token)
        if interaction is None or interaction.payload["id"] != interaction_id:
            return 404, {"message": "Unknown interaction", "code": 10062}
        if interaction.acknowledged:
            return 400, {"message": "Interaction has already been acknowledged.", "code": 40060}
        interaction.acknowledged = True
        kind = body["type"]
        interaction.responses.append(kind)
        answer: Json = {"interaction": {"id": interaction_id, "type": interaction.payload["type"]}}
        if kind in (4, 5):
            message = self._response_message(interaction, body.get("data") or {}, thinking=kind == 5)
            answer["interaction"].update(
                response_message_id=message["id"],
                response_message_loading=kind == 5,
                response_message_ephemeral=bool(message["flags"] & 64),
            )
            answer["resource"] = {"type": kind, "message": self.public(message)}
        return 200, answer

    def _response_message(self, interaction: _Interaction, data: Json, *, thinking: bool) -> Json:
        payload = interaction.payload
        user = payload.get("user") or payload["member"]["user"]
        metadata = {"id": payload["id"], "type": payload["type"], "user": user, "authorizing_integration_owners": {}}
        message = self._bot_message(
            int(payload["channel_id"]),
            {**data, "flags": (data.get("flags") or 0) | (128 if thinking else 0)},
            type=20,
            interaction_metadata=metadata,
            webhook_id=str(self.application_id),
            application_id=str(self.application_id),
        )
        message["type"] = 20
        interaction.original = int(message["id"])
        return message

    async def _get_original(self, _body: Any, _app: str, token: str) -> tuple[int, Any]:
        interaction = self._token(token)
        if interaction is None or interaction.original is None:
            return 404, {"message": "Unknown Message", "code": 10008}
        return 200, self.public(self.messages[interaction.original])

    async def _patch_original(self, body: Json, _app: str, token: str) -> tuple[int, Any]:
        interaction = self._token(token)
        if interaction is None:
            return 401, {"message": "Invalid Webhook Token", "code": 50027}
        if interaction.original is None:
            return 404, {"message": "Unknown Message", "code": 10008}
        return 200, self._edit(self.messages[interaction.original], body)

    async def _post_followup(self, body: Json, _app: str, token: str) -> tuple[int, Any]:
        interaction = self._token(token)
        if interaction is None:
            return 401, {"message": "Invalid Webhook Token", "code": 50027}
        message = self._response_message_followup(interaction, body)
        await self._message_create(message)
        return 200, self.public(message)

    def _response_message_followup(self, interaction: _Interaction, body: Json) -> Json:
        payload = interaction.payload
        user = payload.get("user") or payload["member"]["user"]
        metadata = {"id": payload["id"], "type": payload["type"], "user": user, "authorizing_integration_owners": {}}
        return self._bot_message(
            int(payload["channel_id"]),
            body,
            interaction_metadata=metadata,
            webhook_id=str(self.application_id),
            application_id=str(self.application_id),
        )

    async def _patch_followup(self, body: Json, _app: str, token: str, message_id: str) -> tuple[int, Any]:
        if self._token(token) is None:
            return 401, {"message": "Invalid Webhook Token", "code": 50027}
        message = self.messages.get(int(message_id))
        if message is None:
            return 404, {"message": "Unknown Message", "code": 10008}
        return 200, self._edit(message, body)

    def replies_to(self, message_id: int | str) -> list[Json]:
        """The bot's messages that reply to this message, oldest first."""
        return [m for m in self.by_bot() if m.get("message_reference", {}).get("message_id") == str(message_id)]

    def first_reply(self, message: Json) -> Json | None:
        """The bot's first message replying to ``message`` (the head of its answer), if any yet."""
        replies = self.replies_to(message["id"])
        return replies[0] if replies else None

    def reply_of(self, message: Json) -> Callable[[], Json | None]:
        """A check for :meth:`final_pieces` and :meth:`wait_for`: the head of the answer to ``message``."""
        return lambda: self.first_reply(message)

    @staticmethod
    def answering(first: Callable[[], Json | None], expected: str) -> Callable[[], Json | None]:
        """A check for :meth:`wait_for`: the head of an answer once it shows the start of ``expected`` itself.

        A placeholder (queue position) or a notice never passes, however long it is: only the answer's own words.
        """

        def check() -> Json | None:
            head = first()
            shown = messages.strip_mark(head["content"]) if head else ""
            return head if shown.strip() and expected.startswith(shown) else None

        return check

    def original_of(self, interaction: _Interaction) -> Callable[[], Json | None]:
        """A check: the original response of ``interaction``, once it exists."""
        return lambda: self.messages.get(interaction.original) if interaction.original else None

    def pieces_from(self, first: Json) -> list[Json]:
        """An answer's messages: ``first`` and each later piece replying to the one before."""
        pieces = [first]
        while nxt := self.replies_to(pieces[-1]["id"]):
            pieces.append(nxt[0])
        return pieces

    @staticmethod
    def is_final(message: Json) -> bool:
        """True when a message of the bot has neither the Stop button nor the writing mark."""
        stop = any(b["custom_id"].startswith("komt:stop:") for b in buttons(message))
        return not stop and not message["content"].endswith(" ✍️") and not message["flags"] & 128

    async def final_pieces(
        self, first: Callable[[], Json | None], expected: str, *, timeout: float = 15.0
    ) -> list[Json]:
        """Wait until the answer starting at ``first()`` reads ``expected`` and is finished; its messages."""

        def done() -> list[Json] | None:
            head = first()
            pieces = self.pieces_from(head) if head else []
            finished = pieces and all(self.is_final(p) for p in pieces)
            return pieces if finished and self.answer_text(pieces) == expected else None

        try:
            return await self.wait_for(done, timeout=timeout, what="a finished answer")
        except AssertionError as e:
            head = first()
            seen = [(p["content"][-80:], bool(p["components"])) for p in self.pieces_from(head)] if head else []
            raise AssertionError(f"{e}; expected {expected[-80:]!r}, have {seen}") from None

    def answer_text(self, pieces: list[Json]) -> str:
        """The text of an answer spread over several messages."""
        return "".join(p["content"] for p in pieces)

    # -- waiting ----------------------------------------------------------------------------------------------

    async def wait_for(self, check: Callable[[], T | None], *, timeout: float = 15.0, what: str = "") -> T:
        """Poll ``check`` until it returns something truthy, failing after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            result = check()
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what or check}")
            await asyncio.sleep(0.02)


# -- the bot running against the fake -------------------------------------------------------------------------


class World:
    """A fake Discord with one guild, one text channel, an admin role and two people, before the bot connects."""

    def __init__(self, *, message_content_granted: bool = True) -> None:
        self.fake = FakeDiscord(message_content_granted=message_content_granted)
        self.guild = self.fake.add_guild()
        self.channel = self.fake.add_channel(self.guild)
        self.admin_role = self.fake.add_role(self.guild, "komt-admin")
        self.member_role = self.fake.add_role(self.guild, "komt-user")
        self.alice = self.fake.add_user("alice")
        self.bob = self.fake.add_user("bob")


class _ErrorLog(logging.Handler):
    """Collects error records, so a test fails when the bot only logged a failure."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class RunningBot:
    """What a test gets while the adapter runs."""

    world: World
    fake: FakeDiscord
    queue: JobQueue
    engine: Any
    settings: Settings
    task: asyncio.Task[None]


@contextlib.asynccontextmanager
async def running_bot(
    world: World,
    settings: Settings,
    redis: aioredis.Redis,
    engine: Any,
    *,
    worker: bool = True,
    metrics: Metrics | None = None,
    **discord: Any,
) -> AsyncIterator[RunningBot]:
    """Start the fake, the real adapter (``serve``) and a real worker; stop them all afterwards.

    ``discord`` overrides DiscordSettings fields. Fails the test if the bot logged an error.
    """
    from adapters.discord import serve

    fake = world.fake
    await fake.start()
    overrides = {"token": "fake-token", "api_url": fake.api_url, "gateway_url": fake.gateway_url, **discord}
    discord_settings = DiscordSettings.model_validate({**settings.discord.model_dump(), **overrides})
    settings = settings.model_copy(update={"discord": discord_settings})
    queue = JobQueue(redis, settings.queue)
    errors = _ErrorLog()
    loggers = [logging.getLogger(name) for name in ("discord", "adapters", "komt_bot.chat")]
    for logger in loggers:
        logger.addHandler(errors)
    task = asyncio.create_task(serve(settings, queue, metrics=metrics), name="discord-adapter")
    try:
        # A session, not just an IDENTIFY: one refused (no message-content intent) is followed by a second client.
        await fake.wait_for(lambda: task.done() or (fake.sessions and fake.commands), what="the bot to connect")
        if task.done():
            task.result()  # the adapter stopped: raise what stopped it
        async with contextlib.AsyncExitStack() as stack:
            if worker:
                await stack.enter_async_context(running_worker(queue, engine, settings))
            yield RunningBot(world, fake, queue, engine, settings, task)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await fake.close()
        for logger in loggers:
            logger.removeHandler(errors)
    assert not errors.records, [r.getMessage() for r in errors.records]
