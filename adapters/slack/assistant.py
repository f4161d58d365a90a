"""Slack's AI-app surface: assistant threads, the split view an app with the ``assistant_view`` feature gets.

Opening one sends ``assistant_thread_started``: komt-bot offers its suggested prompts
(``KOMT_SLACK__SUGGESTED_PROMPTS``). A message there is a direct message in a thread and is answered the usual
way (:meth:`adapters.slack.responder.SlackResponder.answer`), with :class:`AssistantThread` beside it: the
thread's status line (``assistant.threads.setStatus``) says at once that the question is being read, then its
place in the queue while it waits, and is cleared when the answer is complete; the thread is titled after its
first question (``assistant.threads.setTitle``). Everything here is cosmetic: a failed call is logged and never
stops an answer.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Mapping
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from komt_bot import messages
from komt_bot.metrics import Metrics, count_platform_error

log = logging.getLogger(__name__)

PLATFORM = "slack"
TITLE_CHARS = 60
PROMPT_TITLE_CHARS = 40


def _short(text: str, limit: int) -> str:
    first = " ".join(text.strip().splitlines()[0].split()) if text.strip() else ""
    return first if len(first) <= limit else first[: limit - 1] + "…"


def thread_title(question: str) -> str:
    """An assistant thread's title: the first line of its first question, shortened."""
    return _short(question, TITLE_CHARS) or "komt"


def prompt_chips(prompts: list[str]) -> list[dict[str, str]]:
    """Suggested prompts as Slack wants them: a short title on the chip, the whole question as the message."""
    return [{"title": _short(prompt, PROMPT_TITLE_CHARS), "message": prompt} for prompt in prompts]


def started_thread(event: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """``(user, channel, thread_ts)`` of an ``assistant_thread_started`` (or ``..._context_changed``) event."""
    thread = event.get("assistant_thread") or {}
    user, channel, thread_ts = thread.get("user_id"), thread.get("channel_id"), thread.get("thread_ts")
    if isinstance(user, str) and isinstance(channel, str) and isinstance(thread_ts, str):
        return user, channel, thread_ts
    return None


class AssistantThread:
    """One assistant thread while a question in it is answered: its status line and its title."""

    def __init__(self, client: AsyncWebClient, channel: str, thread_ts: str, *, metrics: Metrics | None = None) -> None:
        self.client = client
        self.channel = channel
        self.thread_ts = thread_ts
        self.metrics = metrics
        self.shown: str | None = None  # the status last set ("" once cleared)
        self._broken = False  # Slack refused a status here (not an assistant thread): stop trying

    async def show(self, text: str) -> None:
        """Set the status line to ``text`` (once per text)."""
        if self._broken or text == self.shown:
            return
        status = self.client.assistant_threads_setStatus(channel_id=self.channel, thread_ts=self.thread_ts, status=text)
        if await _quietly("assistant.threads.setStatus", self.channel, status, self.metrics):
            self.shown = text
        else:
            self._broken = True

    async def clear(self) -> None:
        """Clear the status line, if it was ever set."""
        if self.shown:
            self.shown = ""
            status = self.client.assistant_threads_setStatus(
                channel_id=self.channel, thread_ts=self.thread_ts, status=""
            )
            await _quietly("assistant.threads.setStatus", self.channel, status, self.metrics)

    async def title(self, question: str) -> None:
        """Title the thread after ``question``."""
        title = self.client.assistant_threads_setTitle(
            channel_id=self.channel, thread_ts=self.thread_ts, title=thread_title(question)
        )
        await _quietly("assistant.threads.setTitle", self.channel, title, self.metrics)


async def suggest_prompts(
    client: AsyncWebClient, channel: str, thread_ts: str, prompts: list[str], *, metrics: Metrics | None = None
) -> None:
    """Offer ``prompts`` in a newly opened assistant thread (nothing when there are none)."""
    if not prompts:
        return
    call = client.assistant_threads_setSuggestedPrompts(
        channel_id=channel, thread_ts=thread_ts, title=messages.SUGGESTED_PROMPTS_TITLE, prompts=prompt_chips(prompts)
    )
    await _quietly("assistant.threads.setSuggestedPrompts", channel, call, metrics)


async def _quietly(method: str, channel: str, call: Awaitable[Any], metrics: Metrics | None) -> bool:
    """Run one Web API call whose failure must not stop an answer: log and count it, and say whether it worked."""
    try:
        await call
    except Exception as e:  # SlackApiError, or a connection error: the thread works without it
        error = str(e.response.get("error")) if isinstance(e, SlackApiError) else type(e).__name__
        log.warning("slack %s failed in %s: %s", method, channel, error)
        count_platform_error(metrics, PLATFORM, e)
        return False
    return True
