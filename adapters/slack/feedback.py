"""The 👍/👎 of a finished Slack answer: a ``context_actions`` block holding Slack's ``feedback_buttons`` element.

The block is built with slack_sdk's own models (which validate it) and goes under the last message of an answer:
appended to a plain message's blocks, or passed to ``chat.stopStream``, which renders it at the bottom of a
streamed message. Each button's value names its rating and the answer's job (:mod:`komt_bot.chat.feedback`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from slack_sdk.models.blocks import ContextActionsBlock, FeedbackButtonObject, FeedbackButtonsElement

from komt_bot import messages
from komt_bot.chat.feedback import button_value, parse_button_value
from komt_bot.jobs import Rating

FEEDBACK_ACTION_ID = "komt_feedback"


def feedback_block(job_id: str) -> dict[str, Any]:
    """The ``context_actions`` block with the 👍/👎 buttons of the answer of ``job_id``."""
    buttons = FeedbackButtonsElement(
        action_id=FEEDBACK_ACTION_ID,
        positive_button=FeedbackButtonObject(
            text="👍", accessibility_label=messages.FEEDBACK_UP, value=button_value("up", job_id)
        ),
        negative_button=FeedbackButtonObject(
            text="👎", accessibility_label=messages.FEEDBACK_DOWN, value=button_value("down", job_id)
        ),
    )
    block: dict[str, Any] = ContextActionsBlock(elements=[buttons]).to_dict()
    return block


@dataclass(frozen=True, slots=True)
class FeedbackClick:
    """A click on a feedback button, from Slack's ``block_actions`` payload."""

    person: str
    rating: Rating
    job_id: str
    channel: str | None
    thread_ts: str | None


def parse_click(body: Mapping[str, Any], action: Mapping[str, Any]) -> FeedbackClick | None:
    """The click in a ``block_actions`` payload, or None when its value is not one of our buttons'."""
    parsed = parse_button_value(str(action.get("value") or ""))
    person = str((body.get("user") or {}).get("id") or "")
    if parsed is None or not person:
        return None
    message = body.get("message") or {}
    return FeedbackClick(
        person=person,
        rating=parsed[0],
        job_id=parsed[1],
        channel=(body.get("channel") or {}).get("id"),
        thread_ts=message.get("thread_ts") or message.get("ts"),
    )
