"""The fake Slack's records and wire helpers: the calls it received, the messages it keeps, request parsing.

Every message keeps its ``changes``: the wall-clock time (``time.time()``) of each change a person would notice
(its text, or a native stream closing), so a measurement can line them up with the worker's output-stream entry
ids, which are wall-clock milliseconds too.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

BOT_USER = "UKOMTBOT"
BOT_ID = "BKOMT"
TEAM = "T0TEAM"
SECTION_MAX_CHARS = 3000
MAX_SUGGESTED_PROMPTS = 4
STREAM_METHODS = ("chat.startStream", "chat.appendStream", "chat.stopStream")
SECRET = "test-signing-secret"


@dataclass
class Call:
    """One request the fake received."""

    method: str
    args: dict[str, Any]
    at: float  # time.monotonic() when it arrived
    token: str | None = None
    wall: float = field(default_factory=time.time)  # time.time() when it arrived


@dataclass(frozen=True, slots=True)
class Change:
    """A message as it was from ``wall`` (``time.time()``) on."""

    wall: float
    text: str
    streaming: bool
    deleted: bool


@dataclass
class Message:
    """A message in a channel, as Slack keeps it."""

    channel: str
    ts: str
    text: str
    user: str | None = None
    bot_id: str | None = None
    thread_ts: str | None = None
    blocks: list[dict[str, Any]] | None = None
    subtype: str | None = None
    streaming: bool = False
    deleted: bool = False
    updates: int = 0
    changes: list[Change] = field(default_factory=list)  # every visible change, oldest first

    def changed(self) -> None:
        """Note the message as it is now (called by the fake after each change)."""
        self.changes.append(Change(time.time(), self.text, self.streaming, self.deleted))

    def as_api(self) -> dict[str, Any]:
        """The message as conversations.replies returns it."""
        data: dict[str, Any] = {"type": "message", "ts": self.ts, "text": self.text}
        if self.user:
            data["user"] = self.user
        if self.bot_id:
            data["bot_id"] = self.bot_id
        if self.thread_ts:
            data["thread_ts"] = self.thread_ts
        if self.subtype:
            data["subtype"] = self.subtype
        return data


@dataclass
class AssistantThreadState:
    """What Slack shows of one assistant thread: its status line, suggested prompts and title."""

    status: str = ""
    statuses: list[str] = field(default_factory=list)  # every status set, in order ("" clears)
    prompts: list[dict[str, str]] = field(default_factory=list)
    prompts_title: str | None = None
    title: str | None = None


class SlackError(Exception):
    """An ``ok: false`` answer."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


async def arguments(request: web.Request) -> dict[str, Any]:
    """A Web API call's arguments, from its query and its form or JSON body."""
    args: dict[str, Any] = dict(request.query)
    if request.can_read_body:
        if request.content_type == "application/json":
            args.update(await request.json())
        else:
            args.update(dict(await request.post()))
    return args


def blocks_of(args: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``blocks`` argument, sent as JSON text or as a list."""
    blocks = args.get("blocks") or []
    return json.loads(blocks) if isinstance(blocks, str) else list(blocks)


def feedback_element_ok(element: dict[str, Any]) -> bool:
    """Whether a ``context_actions`` element is ``feedback_buttons`` with both buttons, as Slack requires."""
    if element.get("type") != "feedback_buttons" or not element.get("action_id"):
        return False
    buttons = [element.get("positive_button") or {}, element.get("negative_button") or {}]
    return all(b.get("value") and (b.get("text") or {}).get("type") == "plain_text" for b in buttons)


def stream_text(args: dict[str, Any]) -> str:
    """The text a ``chat.*Stream`` call adds (``markdown_text`` and ``markdown_text`` chunks)."""
    text = str(args.get("markdown_text") or "")
    for chunk in args.get("chunks") or []:
        if chunk.get("type") == "markdown_text":
            text += str(chunk.get("text") or "")
    return text


def ts_key(ts: str) -> tuple[int, int]:
    """A message ``ts`` as a sort key."""
    seconds, _, fraction = ts.partition(".")
    return int(seconds), int(fraction or 0)


def unescape(text: str) -> str:
    """Slack's escaping undone: the text as a person reads it."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def rate_limited(retry_after: int) -> web.Response:
    """Slack's 429 answer with ``Retry-After`` in whole seconds."""
    return web.json_response(
        {"ok": False, "error": "ratelimited"}, status=429, headers={"Retry-After": str(retry_after)}
    )
