"""The Web API calls a Slack reply makes, within the workspace's shared budget, with Slack's errors translated.

Slack limits each method per workspace per app (``chat.postMessage`` per channel), so every reply of the process
spends one :class:`~komt_bot.chat.budget.PlatformBudget` (:func:`slack_budget`). A 429 slows the method for every
reply at once; the calls here go through a client without slack_sdk's own rate-limit retry, so no reply sleeps on
its own. Errors come back as :class:`SlackCallError` (with Slack's error code) or, for a message a person deleted,
:class:`~komt_bot.errors.ReplyGoneError`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from komt_bot.chat.budget import PlatformBudget, Priority, Throttled, Tier
from komt_bot.chat.sinks import platform_call
from komt_bot.errors import PlatformError, ReplyGoneError
from komt_bot.metrics import Metrics
from komt_bot.settings import SlackLimitSettings

PLATFORM = "slack"
GONE_CODES = frozenset({"message_not_found", "channel_not_found", "thread_not_found", "is_archived"})


class SlackCallError(PlatformError):
    """Slack refused a reply's call; ``code`` is its error (``message_not_in_streaming_state``, ``ratelimited``)."""

    def __init__(self, method: str, code: str) -> None:
        super().__init__(f"slack {method} failed: {code}")
        self.method = method
        self.code = code


def slack_budget(limits: SlackLimitSettings) -> PlatformBudget:
    """The budget of one app in its workspace, from the documented tiers (or the operator's settings)."""
    tiers = {
        "chat.update": Tier.per_minute(limits.update_per_minute, limits.update_burst),
        "chat.appendStream": Tier.per_minute(limits.append_per_minute, limits.append_burst),
        "chat.startStream": Tier.per_minute(limits.stream_per_minute, limits.stream_burst),
        "chat.stopStream": Tier.per_minute(limits.stream_per_minute, limits.stream_burst),
        "chat.delete": Tier.per_minute(limits.update_per_minute, limits.update_burst),
        "chat.postMessage": Tier.per_minute(limits.post_per_minute_per_channel, limits.post_burst),
    }
    return PlatformBudget(tiers, share=limits.share)


def error_code(error: SlackApiError) -> str:
    """The error code of a failed Web API call (``message_not_in_streaming_state``, ``ratelimited``, ...)."""
    try:
        return str(error.response.get("error") or error.response.status_code)
    except Exception:  # a response that is not a Slack JSON answer
        return type(error).__name__


def retry_after(error: Exception) -> float | None:
    """Seconds a 429 asks to wait (Slack's ``Retry-After``); None for any other error."""
    if not isinstance(error, SlackApiError) or error.response.status_code != 429:
        return None
    headers = error.response.headers or {}
    value = headers.get("Retry-After") or headers.get("retry-after") or "1"
    try:
        return float(value[0] if isinstance(value, list) else value)
    except ValueError:
        return 1.0


class SlackCalls:
    """A reply's Web API calls in one workspace (``team``), each spending the shared budget at its priority."""

    def __init__(
        self, client: AsyncWebClient, budget: PlatformBudget, team: str | None, *, metrics: Metrics | None = None
    ) -> None:
        self.client = client
        self.budget = budget
        self.team = team or ""
        self.metrics = metrics

    def may_stream(self) -> bool:
        """Take a ``chat.startStream`` token if one is free now (a stream is only opened when it costs no wait)."""
        return self.budget.can_take("chat.startStream", self.team)

    async def post(
        self, channel: str, thread_ts: str, text: str, blocks: list[dict[str, Any]] | None, priority: Priority
    ) -> str:
        """``chat.postMessage`` in the thread; the new message's ts."""
        response = await self._call(
            "chat.postMessage",
            channel,
            priority,
            lambda: self.client.chat_postMessage(channel=channel, thread_ts=thread_ts, text=text, blocks=blocks),
        )
        return str(response["ts"])

    async def update(self, channel: str, ts: str, text: str, blocks: list[dict[str, Any]], priority: Priority) -> None:
        """``chat.update`` of a message."""
        await self._call(
            "chat.update",
            self.team,
            priority,
            lambda: self.client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks),
        )

    async def delete(self, channel: str, ts: str) -> None:
        """``chat.delete`` of a message (a finished reply's Stop holder)."""
        await self._call(
            "chat.delete", self.team, Priority.FINAL, lambda: self.client.chat_delete(channel=channel, ts=ts)
        )

    async def start_stream(self, channel: str, thread_ts: str, recipient: str, text: str) -> str:
        """``chat.startStream`` below the thread's messages (its token already taken by :meth:`may_stream`)."""
        response = await self._call(
            "chat.startStream",
            self.team,
            Priority.FIRST,
            lambda: self.client.chat_startStream(
                channel=channel,
                thread_ts=thread_ts,
                recipient_user_id=recipient,
                recipient_team_id=self.team or None,
                markdown_text=text,
            ),
            budgeted=False,  # may_stream took its token
        )
        return str(response["ts"])

    async def append_stream(self, channel: str, ts: str, text: str, priority: Priority) -> None:
        """``chat.appendStream`` of new text."""
        await self._call(
            "chat.appendStream",
            self.team,
            priority,
            lambda: self.client.chat_appendStream(channel=channel, ts=ts, markdown_text=text),
        )

    async def stop_stream(
        self, channel: str, ts: str, text: str | None, blocks: list[dict[str, Any]] | None, priority: Priority
    ) -> None:
        """``chat.stopStream``: the last text and the blocks under the finished message."""
        await self._call(
            "chat.stopStream",
            self.team,
            priority,
            lambda: self.client.chat_stopStream(channel=channel, ts=ts, markdown_text=text, blocks=blocks),
        )

    async def _call(
        self,
        method: str,
        scope: str,
        priority: Priority,
        send: Callable[[], Awaitable[Any]],
        *,
        budgeted: bool = True,
    ) -> Any:
        limit = method if budgeted else ""  # "" is no limit of the budget's
        try:
            with platform_call(self.metrics, PLATFORM):
                return await self.budget.call(limit, scope, priority, send, retry_after=self._counted_retry_after)
        except SlackApiError as e:
            code = error_code(e)
            if code in GONE_CODES:
                raise ReplyGoneError(f"slack {method}: {code}") from e
            raise SlackCallError(method, code) from e
        except Throttled as e:
            raise SlackCallError(method, "ratelimited") from e

    def _counted_retry_after(self, error: Exception) -> float | None:
        seconds = retry_after(error)
        if seconds is not None and self.metrics is not None:
            self.metrics.rate_limited.labels(PLATFORM).inc()
        return seconds
