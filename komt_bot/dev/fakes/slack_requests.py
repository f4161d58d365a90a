"""Slack's side of requests to the app (signed Events API deliveries) and readers of what a message shows.

Used by the Slack tests and by ``komt-bot dev soak --via slack``, which plays Slack's deliveries to real
``komt-bot slack`` processes.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
import uuid
from typing import TYPE_CHECKING, Any

from komt_bot.dev.fakes.slack_wire import BOT_USER, SECRET, TEAM, Call, Message

if TYPE_CHECKING:
    from komt_bot.dev.fakes.slack import FakeSlack


def signed_headers(body: bytes, *, secret: str = SECRET, timestamp: int | None = None) -> dict[str, str]:
    """The headers Slack puts on a request: a timestamp and the v0 HMAC signature of the raw body."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), b"v0:" + stamp.encode() + b":" + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": f"v0={digest}"}


def event_body(event: dict[str, Any], *, event_id: str | None = None) -> dict[str, Any]:
    """An Events API envelope around ``event``."""
    return {
        "token": "legacy",
        "team_id": TEAM,
        "api_app_id": "A0KOMT",
        "event": event,
        "type": "event_callback",
        "event_id": event_id or "Ev" + uuid.uuid4().hex[:10].upper(),
        "event_time": int(time.time()),
        "authorizations": [{"team_id": TEAM, "user_id": BOT_USER, "is_bot": True, "is_enterprise_install": False}],
    }


def message_event(
    message: Message, *, kind: str = "app_mention", channel_type: str | None = None, **extra: Any
) -> dict[str, Any]:
    """The event for a message already in the fake (``app_mention`` or ``message``)."""
    event: dict[str, Any] = {
        "type": kind,
        "user": message.user,
        "text": message.text,
        "ts": message.ts,
        "channel": message.channel,
        "event_ts": message.ts,
        "team": TEAM,
    }
    if message.thread_ts:
        event["thread_ts"] = message.thread_ts
    if channel_type:
        event["channel_type"] = channel_type
    return event | extra


def stop_value(message: Message) -> str:
    """The value of the Stop button on a message."""
    for block in message.blocks or []:
        for element in block.get("elements", []):
            if element.get("action_id") == "komt_stop":
                return str(element["value"])
    raise AssertionError(f"no Stop button on {message.ts}")


def has_stop(message: Message) -> bool:
    """Whether a message shows the Stop button."""
    return any(e.get("action_id") == "komt_stop" for b in message.blocks or [] for e in b.get("elements", []))


def feedback_values(message: Message) -> dict[str, str]:
    """The values of a message's 👍/👎 (``{"up": ..., "down": ...}``); empty without feedback buttons."""
    for block in message.blocks or []:
        for element in block.get("elements", []) if block.get("type") == "context_actions" else []:
            if element.get("type") == "feedback_buttons":
                return {"up": element["positive_button"]["value"], "down": element["negative_button"]["value"]}
    return {}


def update_gaps(fake: FakeSlack) -> list[float]:
    """Seconds between consecutive intermediate chat.update calls of the same message (the final text, which
    goes out as soon as the budget allows, is left out)."""
    by_ts: dict[str, list[Call]] = {}
    for call in fake.calls_of("chat.update"):
        by_ts.setdefault(str(call.args["ts"]), []).append(call)
    return [
        b.at - a.at
        for calls in by_ts.values()
        for a, b in itertools.pairwise(calls)
        if "komt_stop" in json.dumps(b.args.get("blocks") or [])
    ]
