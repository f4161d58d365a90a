"""A fake Slack for the adapter's tests and for ``komt-bot dev soak --via slack``: the Web API methods komt-bot
calls, and a Socket Mode websocket.

It runs on 127.0.0.1 (an ephemeral port) and speaks the real wire protocol to the real slack_sdk and slack-bolt:
``POST/GET /api/{method}`` with form, query or JSON arguments, ``/socket`` for Socket Mode envelopes, and
``/response/{id}`` for slash-command ``response_url`` posts. It keeps the messages of every channel, so a test
can read a thread the way a person would see it, and it records every call with the time it arrived.

Behaviour a test can switch on: errors for a method (``fail``), a 429 with ``Retry-After`` (``rate_limit``),
native streams that expire (``expire_streams``), and ``msg_too_long`` above ``max_message_bytes`` like Slack.
With ``limits`` (:func:`komt_bot.dev.fakes.platform_limits.slack_tiers`) it enforces Slack's tiers like Slack: a
token bucket per method and workspace (``chat.postMessage`` per channel), and a 429 with ``Retry-After`` past it.
It counts every 429 it answered (``refused``).

Assistant threads: ``assistant.threads.setStatus`` / ``setSuggestedPrompts`` / ``setTitle`` keep each thread's
status line, prompts and title (``assistant_threads``); like Slack, a message the app posts in a thread clears its
status. Blocks are checked the way Slack rejects them (sections over 3,000 characters, a ``context_actions``
block whose elements are not ``feedback_buttons`` with both buttons).

Its records and wire helpers are in :mod:`.slack_wire`; Slack's side of requests to the app (signed events) and
readers of the buttons on a message in :mod:`.slack_requests`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from komt_bot.dev.fakes.local_http import serve_on_loopback
from komt_bot.dev.fakes.platform_limits import RateLimits
from komt_bot.dev.fakes.slack_wire import (
    BOT_ID,
    BOT_USER,
    MAX_SUGGESTED_PROMPTS,
    SECTION_MAX_CHARS,
    TEAM,
    AssistantThreadState,
    Call,
    Message,
    SlackError,
    arguments,
    blocks_of,
    feedback_element_ok,
    rate_limited,
    stream_text,
    ts_key,
    unescape,
)


@dataclass
class FakeSlack:
    """The fake server. ``await start()``, point ``api_url`` at it, ``await stop()``."""

    max_message_bytes: int = 4000
    expire_streams: bool = False
    limits: RateLimits | None = None
    calls: list[Call] = field(default_factory=list)
    messages: dict[str, Message] = field(default_factory=dict)
    socket_acks: list[dict[str, Any]] = field(default_factory=list)
    assistant_threads: dict[tuple[str, str], AssistantThreadState] = field(default_factory=dict)
    _failures: dict[str, list[str]] = field(default_factory=dict)
    _rate_limits: dict[str, int] = field(default_factory=dict)
    _sockets: list[web.WebSocketResponse] = field(default_factory=list)
    _counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _runner: web.AppRunner | None = None
    port: int = 0
    refused: int = 0  # calls answered 429, by ``rate_limit`` or by ``limits``

    # -- lifecycle ---------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on an ephemeral port of 127.0.0.1."""
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_get("/socket", self._socket)
        app.router.add_post("/response/{id}", self._response_url)
        self._runner, self.port = await serve_on_loopback(app)

    async def stop(self) -> None:
        """Close every websocket and stop listening."""
        for ws in list(self._sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_url(self) -> str:
        """The Web API base URL to give slack_sdk (with its trailing slash)."""
        return f"http://127.0.0.1:{self.port}/api/"

    def response_url(self, name: str = "r") -> str:
        """A ``response_url`` for slash commands and actions that lands here."""
        return f"http://127.0.0.1:{self.port}/response/{name}"

    # -- test controls -----------------------------------------------------------------------------------------

    def fail(self, method: str, error: str, times: int = 1) -> None:
        """Answer the next ``times`` calls of ``method`` with ``{"ok": false, "error": error}``."""
        self._failures.setdefault(method, []).extend([error] * times)

    def rate_limit(self, method: str, times: int = 1) -> None:
        """Answer the next ``times`` calls of ``method`` with HTTP 429 and ``Retry-After: 1``."""
        self._rate_limits[method] = self._rate_limits.get(method, 0) + times

    def new_ts(self) -> str:
        """A fresh, increasing message timestamp."""
        n = next(self._counter)
        return f"{1_700_000_000 + n}.{n:06d}"

    def add_message(
        self,
        channel: str,
        text: str,
        *,
        user: str | None = None,
        thread_ts: str | None = None,
        bot: bool = False,
        subtype: str | None = None,
    ) -> Message:
        """Put a message in a channel (a person's, or with ``bot=True`` one komt-bot wrote earlier)."""
        message = Message(
            channel,
            self.new_ts(),
            text,
            user=BOT_USER if bot else user,
            bot_id=BOT_ID if bot else None,
            thread_ts=thread_ts,
            subtype=subtype,
        )
        self.messages[message.ts] = message
        return message

    # -- reading what happened ---------------------------------------------------------------------------------

    def calls_of(self, *methods: str) -> list[Call]:
        """The recorded calls of these methods, in arrival order."""
        return [c for c in self.calls if c.method in methods]

    def thread(self, channel: str, thread_ts: str, *, bot_only: bool = True) -> list[Message]:
        """The visible messages of a thread (root excluded), oldest first."""
        found = [
            m
            for m in self.messages.values()
            if m.channel == channel and m.thread_ts == thread_ts and m.ts != thread_ts and not m.deleted
        ]
        if bot_only:
            found = [m for m in found if m.bot_id == BOT_ID]
        return sorted(found, key=lambda m: ts_key(m.ts))

    def assistant_thread(self, channel: str, thread_ts: str) -> AssistantThreadState:
        """The status, prompts and title of an assistant thread (empty until the app sets one)."""
        return self.assistant_threads.setdefault((channel, thread_ts), AssistantThreadState())

    def thread_text(self, channel: str, thread_ts: str) -> str:
        """What the bot's messages in a thread say, joined, with Slack's escaping undone."""
        return "".join(unescape(m.text) for m in self.thread(channel, thread_ts))

    # -- Socket Mode -------------------------------------------------------------------------------------------

    async def socket_connected(self, timeout: float = 10.0) -> None:
        """Wait until a Socket Mode client is connected."""
        deadline = time.monotonic() + timeout
        while not [ws for ws in self._sockets if not ws.closed]:
            if time.monotonic() > deadline:
                raise AssertionError("no Socket Mode client connected")
            await asyncio.sleep(0.02)

    async def send_envelope(
        self, kind: str, payload: dict[str, Any], *, retry_attempt: int = 0, retry_reason: str = ""
    ) -> str:
        """Deliver an envelope (``events_api``, ``slash_commands``, ``interactive``) to the connected client."""
        envelope_id = uuid.uuid4().hex
        envelope = {
            "envelope_id": envelope_id,
            "type": kind,
            "payload": payload,
            "accepts_response_payload": kind != "events_api",
            "retry_attempt": retry_attempt,
            "retry_reason": retry_reason,
        }
        for ws in self._sockets:
            if not ws.closed:
                await ws.send_str(json.dumps(envelope))
                return envelope_id
        raise AssertionError("no Socket Mode client connected")

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._sockets.append(ws)
        await ws.send_str(json.dumps({"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A1"}}))
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                self.socket_acks.append(json.loads(message.data))
        return ws

    async def _response_url(self, request: web.Request) -> web.Response:
        self.calls.append(Call("response_url", await request.json(), time.monotonic()))
        return web.Response(text="ok")

    # -- the Web API -------------------------------------------------------------------------------------------

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args = await arguments(request)
        token = request.headers.get("Authorization", "").removeprefix("Bearer ") or args.pop("token", None)
        self.calls.append(Call(method, args, time.monotonic(), token))
        if self._rate_limits.get(method):
            self._rate_limits[method] -= 1
            self.refused += 1
            return rate_limited(1)
        if self.limits is not None:
            scope = str(args.get("channel")) if method == "chat.postMessage" else TEAM
            wait = self.limits.check(method, scope)
            if wait is not None:
                self.refused += 1
                return rate_limited(max(1, math.ceil(wait)))  # Slack's Retry-After is whole seconds
        try:
            if self._failures.get(method):
                raise SlackError(self._failures[method].pop(0))
            handler = getattr(self, "_" + method.replace(".", "_"), None)
            if handler is None:
                raise SlackError("unknown_method")
            result: dict[str, Any] = handler(args, token)
        except SlackError as e:
            return web.json_response({"ok": False, "error": e.error})
        return web.json_response({"ok": True, **result})

    def _auth_test(self, args: dict[str, Any], token: str | None) -> dict[str, Any]:
        if not token or not token.startswith("xoxb-"):
            raise SlackError("invalid_auth")
        return {"user_id": BOT_USER, "bot_id": BOT_ID, "team_id": TEAM, "user": "komt", "team": "Test"}

    def _apps_connections_open(self, args: dict[str, Any], token: str | None) -> dict[str, Any]:
        if not token or not token.startswith("xapp-"):
            raise SlackError("not_allowed_token_type")
        return {"url": f"ws://127.0.0.1:{self.port}/socket"}

    def _chat_postMessage(self, args: dict[str, Any], token: str | None) -> dict[str, Any]:
        channel, text = str(args["channel"]), str(args.get("text") or "")
        blocks = blocks_of(args)
        self._check_size(text, blocks)
        message = Message(channel, self.new_ts(), text, BOT_USER, BOT_ID, args.get("thread_ts"), blocks)
        self.messages[message.ts] = message
        message.changed()
        self._replied(message)
        return {"channel": channel, "ts": message.ts, "message": message.as_api()}

    def _chat_update(self, args: dict[str, Any], token: str | None) -> dict[str, Any]:
        message = self._find(args)
        text = str(args.get("text") or "")
        blocks = blocks_of(args)
        self._check_size(text, blocks)
        if message.streaming:
            raise SlackError("cant_update_message")
        message.text, message.blocks = text, blocks or None
        message.updates += 1
        message.changed()
        return {"channel": message.channel, "ts": message.ts, "text": text}

    def _chat_delete(self, args: dict[str, Any], token: str | None) -> dict[str, Any]:
        message = self._find(args)
        message.deleted = True
        message.changed()
        return {"channel": message.channel, "ts": message.ts}

    def _chat_postEphemeral(self, args: dict[str, Any], token: str | None) -> dict[str, Any]:
        return {"message_ts": self.new_ts()}

    def _chat_startStream(self, args: dict[str, Any], token: str | None) -> dict[str, Any]:
        channel = str(args["channel"])
        if not args.get("thread_ts"):
            raise SlackError("invalid_arguments")
        if not channel.startswith("D") and not (args.get("recipient_user_id") and args.get("recipient_team_id")):
            raise SlackError("missing_recipient_user_id")
        text = stream_text(args)
        self._check_size(text, None)
        message = Message(channel, self.new_ts(), text, BOT_USER, BOT_ID, str(args["thread_ts"]), streaming=True)
        self.messages[message.ts] = message
        message.changed()
        self._replied(message)
        return {"channel": channel, "ts": message.ts}

    def _chat_appendStream(self, args: dict[str, Any], token: str | None) -> dict[str, Any]:
        message = self._streaming(args)
        text = message.text + stream_text(args)
        self._check_size(text, None)
        message.text = text
        message.changed()
        return {"channel": message.channel, "ts": message.ts}

    def _chat_stopStream(self, args: dict[str, Any], token: str | None) -> dict[str, Any]:
        message = self._streaming(args)
        text = message.text + stream_text(args)
        blocks = blocks_of(args)  # rendered at the bottom of the finished message
        self._check_size(text, blocks)
        message.text, message.streaming = text, False
        message.blocks = blocks or None
        message.changed()
        return {"channel": message.channel, "ts": message.ts, "message": message.as_api()}

    def _assistant_threads_setStatus(self, args: dict[str, Any], token: str | None) -> dict[str, Any]:
        thread = self._assistant(args)
        if "status" not in args:
            raise SlackError("invalid_arguments")
        thread.status = str(args["status"])
        thread.statuses.append(thread.status)
        return {}

    def _assistant_threads_setSuggestedPrompts(self, args: dict[str, Any], token: str | None) -> dict[str, Any]:
        thread = self._assistant(args)
        raw = args.get("prompts")
        prompts = json.loads(raw) if isinstance(raw, str) else raw
        if not isinstance(prompts, list) or not 0 < len(prompts) <= MAX_SUGGESTED_PROMPTS:
            raise SlackError("invalid_arguments")
        if not all(isinstance(p, dict) and p.get("title") and p.get("message") for p in prompts):
            raise SlackError("invalid_arguments")
        thread.prompts, thread.prompts_title = list(prompts), args.get("title")
        return {}

    def _assistant_threads_setTitle(self, args: dict[str, Any], token: str | None) -> dict[str, Any]:
        thread = self._assistant(args)
        if not args.get("title"):
            raise SlackError("invalid_arguments")
        thread.title = str(args["title"])
        return {}

    def _conversations_replies(self, args: dict[str, Any], token: str | None) -> dict[str, Any]:
        channel, root = str(args["channel"]), str(args["ts"])
        found = [
            m.as_api()
            for m in sorted(self.messages.values(), key=lambda m: ts_key(m.ts))
            if m.channel == channel and (m.ts == root or m.thread_ts == root) and not m.deleted and not m.streaming
        ]
        start = int(args.get("cursor") or 0)
        limit = int(args.get("limit") or 1000)
        page = found[start : start + limit]
        more = start + limit < len(found)
        return {
            "messages": page,
            "has_more": more,
            "response_metadata": {"next_cursor": str(start + limit) if more else ""},
        }

    # -- helpers -----------------------------------------------------------------------------------------------

    def _assistant(self, args: dict[str, Any]) -> AssistantThreadState:
        channel, thread_ts = args.get("channel_id"), args.get("thread_ts")
        if not channel or not thread_ts:
            raise SlackError("invalid_arguments")
        if not str(channel).startswith("D"):
            raise SlackError("channel_not_found")  # assistant threads live in the app's DMs
        return self.assistant_thread(str(channel), str(thread_ts))

    def _replied(self, message: Message) -> None:
        """Like Slack: a message the app posts in an assistant thread clears the thread's status."""
        if message.thread_ts and (message.channel, message.thread_ts) in self.assistant_threads:
            self.assistant_threads[(message.channel, message.thread_ts)].status = ""

    def _find(self, args: dict[str, Any]) -> Message:
        message = self.messages.get(str(args.get("ts")))
        if message is None or message.deleted or message.channel != args.get("channel"):
            raise SlackError("message_not_found")
        return message

    def _streaming(self, args: dict[str, Any]) -> Message:
        message = self._find(args)
        if self.expire_streams and message.streaming:
            message.streaming = False
            message.changed()
        if not message.streaming:
            raise SlackError("message_not_in_streaming_state")
        return message

    def _check_size(self, text: str, blocks: list[dict[str, Any]] | None) -> None:
        if len(text.encode("utf-8")) > self.max_message_bytes:
            raise SlackError("msg_too_long")
        for block in blocks or []:
            if block.get("type") == "section" and len(block["text"]["text"]) > SECTION_MAX_CHARS:
                raise SlackError("invalid_blocks")
            if block.get("type") == "context_actions" and not all(map(feedback_element_ok, block["elements"])):
                raise SlackError("invalid_blocks")
