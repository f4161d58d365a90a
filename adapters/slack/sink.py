"""The Slack side of a reply: the reply editor's post/edit carried out with Slack's Web API.

The first message is a placeholder (queue position, Stop button) posted with ``chat.postMessage``. When the
answer's words arrive and the workspace allows it, the answer streams natively: ``chat.startStream`` opens a
message below the placeholder, every edit that only adds text becomes a ``chat.appendStream`` of the difference,
and the message's final edit is a ``chat.stopStream``; a further message of a long answer is a stream of its own.
A streaming message cannot carry buttons, so the placeholder stays above the streams holding the Stop button
(``✍️ writing…``) and is deleted when the reply is finished. Anything else -- a workspace that refuses streaming,
a stream that expired (``message_not_in_streaming_state``), a text that is not an extension, such as the notice
after a worker restart or a split that moved back to a better break -- falls back to ``chat.update``, never more
than once a second per message.

The last message of a finished answer gets the feedback buttons (:meth:`SlackSink.final`): in the blocks of a plain
message, or in ``chat.stopStream``'s blocks for a streamed one. In an assistant thread the status lines (queue
position, reconnecting) also go to the thread's status (:class:`~adapters.slack.assistant.AssistantThread`).

Text is escaped for Slack, so an answer cannot ping ``<!channel>`` or mention people, and message sizes are
measured escaped, in UTF-8 bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack.assistant import AssistantThread
from adapters.slack.events import escape
from adapters.slack.feedback import feedback_block
from komt_bot import messages
from komt_bot.chat.editor import EDIT_INTERVAL_SECONDS, ReplyLimits, split_text, utf8_size
from komt_bot.chat.feedback import FinalWithFeedback
from komt_bot.chat.sinks import platform_call
from komt_bot.metrics import Metrics

log = logging.getLogger(__name__)

PLATFORM = "slack"
STOP_ACTION_ID = "komt_stop"
STOP_LABEL = "⏹ Stop"
SECTION_MAX_CHARS = 3000  # Slack's limit for one section block's text


def slack_size(text: str) -> int:
    """What ``text`` costs in a Slack message: UTF-8 bytes after escaping."""
    return utf8_size(escape(text))


def reply_limits(max_bytes: int) -> ReplyLimits:
    """The reply editor's limits for Slack: ``max_bytes`` escaped bytes a message, one edit a second."""
    return ReplyLimits(max_size=max_bytes, measure=slack_size, edit_interval=EDIT_INTERVAL_SECONDS)


def text_sections(text: str) -> list[dict[str, Any]]:
    """``text`` as section blocks (escaped), split before Slack's limit of one section."""
    pieces = split_text(text, SECTION_MAX_CHARS, lambda piece: len(escape(piece)))
    return [{"type": "section", "text": {"type": "mrkdwn", "text": escape(p)}} for p in pieces if p.strip()]


def answer_blocks(text: str, job_id: str) -> list[dict[str, Any]]:
    """Blocks that show ``text``, the last message of a finished answer, with the feedback buttons under it."""
    return [*text_sections(text), feedback_block(job_id)]


def stop_blocks(text: str, job_id: str) -> list[dict[str, Any]]:
    """Blocks that show ``text`` with a Stop button whose value is the answer's job id."""
    sections = text_sections(text)
    button = {
        "type": "button",
        "action_id": STOP_ACTION_ID,
        "text": {"type": "plain_text", "text": STOP_LABEL},
        "style": "danger",
        "value": job_id,
    }
    return [*sections, {"type": "actions", "elements": [button]}]


@dataclass(frozen=True, slots=True)
class ReplyTarget:
    """Where a reply goes and whom it answers."""

    channel: str
    thread_ts: str
    user: str
    team: str | None
    key: str  # the job's idempotency key, ``slack:{team}:{channel}:{ts}`` of the question
    job_id: str  # the job that key stands for (known before it is submitted): its Stop and 👍/👎 buttons carry it


class StreamingGate:
    """Whether to try native streaming in a channel. A channel where ``chat.startStream`` failed stays off."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._refused: set[str] = set()

    def allows(self, channel: str) -> bool:
        """True while streaming is on and has not failed in ``channel``."""
        return self.enabled and channel not in self._refused

    def refuse(self, channel: str, error: str) -> None:
        """Stop trying to stream in ``channel`` (this process only)."""
        if channel not in self._refused:
            log.warning("native streaming refused in %s (%s): using chat.update there", channel, error)
        self._refused.add(channel)


@dataclass(slots=True)
class _Message:
    ts: str
    streamed: str | None = None  # the text streamed so far while a native stream is open
    stop: bool = False  # shows the Stop button (a plain message)


class SlackSink(FinalWithFeedback):
    """A :class:`~komt_bot.chat.editor.ReplySink` for one reply in one Slack thread."""

    def __init__(
        self,
        client: AsyncWebClient,
        target: ReplyTarget,
        *,
        streaming: StreamingGate,
        metrics: Metrics | None = None,
        assistant: AssistantThread | None = None,
        interval: float = EDIT_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.client = client
        self.target = target
        self.streaming = streaming
        self.metrics = metrics
        self.assistant = assistant
        self.interval = interval
        self.clock = clock
        self.sleep = sleep
        self._messages: dict[str, _Message] = {}
        self._control: str | None = None  # the placeholder kept for its Stop button while the answer streams
        self._control_text: str | None = None  # a text for it, sent once an edit of it is due
        self._updated: dict[str, float] = {}
        self._feedback: str | None = None  # the job id whose buttons the message being finished gets

    # -- ReplySink ---------------------------------------------------------------------------------------------

    async def post(self, text: str, *, active: bool) -> str:
        """Post the next message of the reply (a stream when the answer is already streaming)."""
        await self._refresh_control()
        body = messages.strip_mark(text)
        if self._messages and active and not messages.is_status(body) and self.streaming.allows(self.target.channel):
            ts = await self._stream_continuation(body)
            if ts is not None:
                return ts
        t = self.target
        blocks = self._blocks(text, active)
        try:
            with self._call():
                response = await self.client.chat_postMessage(
                    channel=t.channel, thread_ts=t.thread_ts, text=escape(text), blocks=blocks
                )
        except SlackApiError as e:
            self._failed("chat.postMessage", e)
            raise
        ts = str(response["ts"])
        self._messages[ts] = _Message(ts, stop=active and blocks is not None)
        await self._show_status(body, active)  # after the post: Slack clears the status when the app posts
        return ts

    async def edit(self, handle: str, text: str, *, active: bool) -> None:
        """Show ``text`` in the message ``handle``: append to its stream, start one, or update it."""
        await self._refresh_control()
        message = self._messages[handle]
        body = messages.strip_mark(text)
        await self._show_status(body, active)
        if message.streamed is not None:
            extends = body.startswith(message.streamed)
            if extends and await self._continue_stream(message, body, final=not active):
                return
            if not extends:
                await self._stop_quietly(message)
            message.streamed = None
        elif self._may_begin_streaming(message, body, active) and await self._begin_streaming(message, body):
            return
        blocks = self._blocks(text, active)
        message.stop = active and blocks is not None
        await self._update(message.ts, text, blocks or [])

    async def close(self) -> None:
        """Finish the reply: close any stream still open and remove the Stop message left above a stream."""
        for message in self._messages.values():
            await self._stop_quietly(message)
        if self._control is None:
            return
        try:
            with self._call():
                await self.client.chat_delete(channel=self.target.channel, ts=self._control)
        except SlackApiError as e:
            self._failed("chat.delete", e)
            await self._update(self._control, messages.BLANKED, [])
        self._control = None

    # -- streaming ---------------------------------------------------------------------------------------------

    def _may_begin_streaming(self, message: _Message, body: str, active: bool) -> bool:
        """The message with the Stop button starts the stream (once) when answer text replaces what it shows."""
        return self._control is None and message.stop and active and not messages.is_status(body)

    async def _begin_streaming(self, message: _Message, body: str) -> bool:
        """Open a stream below the message; the message itself stays, as the Stop button's holder."""
        ts = await self._start_stream(body)
        if ts is None:
            return False
        self._control, self._control_text = message.ts, messages.WRITING
        message.ts, message.streamed, message.stop = ts, body, False
        return True

    async def _stream_continuation(self, body: str) -> str | None:
        """A further message of a streaming answer: a new stream, below a Stop message posted for it if needed."""
        if self._control is None:
            self._control = await self._post_control()
            if self._control is None:
                return None
        ts = await self._start_stream(body)
        if ts is not None:
            self._messages[ts] = _Message(ts, streamed=body)
        return ts

    async def _post_control(self) -> str | None:
        t = self.target
        try:
            with self._call():
                response = await self.client.chat_postMessage(
                    channel=t.channel,
                    thread_ts=t.thread_ts,
                    text=escape(messages.WRITING),
                    blocks=stop_blocks(messages.WRITING, t.job_id),
                )
        except SlackApiError as e:
            self._failed("chat.postMessage", e)
            return None
        return str(response["ts"])

    async def _start_stream(self, body: str) -> str | None:
        t = self.target
        if not self.streaming.allows(t.channel):
            return None
        try:
            with self._call():
                response = await self.client.chat_startStream(
                    channel=t.channel,
                    thread_ts=t.thread_ts,
                    recipient_user_id=t.user,
                    recipient_team_id=t.team,
                    markdown_text=escape(body),
                )
        except SlackApiError as e:
            self._failed("chat.startStream", e)
            self.streaming.refuse(t.channel, _code(e))
            return None
        return str(response["ts"])

    async def _continue_stream(self, message: _Message, body: str, *, final: bool) -> bool:
        """Append the new text (or stop the stream on the final edit); False when the stream is gone."""
        assert message.streamed is not None
        new = escape(body[len(message.streamed) :])
        if not final and not new:
            return True
        channel = self.target.channel
        try:
            with self._call():
                if final:
                    blocks = [feedback_block(self._feedback)] if self._feedback else None
                    await self.client.chat_stopStream(
                        channel=channel, ts=message.ts, markdown_text=new or None, blocks=blocks
                    )
                else:
                    await self.client.chat_appendStream(channel=channel, ts=message.ts, markdown_text=new)
        except SlackApiError as e:
            self._failed("chat.stopStream" if final else "chat.appendStream", e)
            return False
        message.streamed = None if final else body
        return True

    async def _stop_quietly(self, message: _Message) -> None:
        if message.streamed is None:
            return
        message.streamed = None
        try:
            with self._call():
                await self.client.chat_stopStream(channel=self.target.channel, ts=message.ts)
        except SlackApiError as e:
            self._failed("chat.stopStream", e)

    # -- plain messages ----------------------------------------------------------------------------------------

    def _blocks(self, text: str, active: bool) -> list[dict[str, Any]] | None:
        # While an answer streams, its Stop button lives on the placeholder above it, not on each message.
        if active and self._control is None:
            return stop_blocks(text, self.target.job_id)
        if not active and self._feedback is not None:
            return answer_blocks(text, self._feedback)
        return None

    async def _show_status(self, body: str, active: bool) -> None:
        """In an assistant thread, a status line (queue position, reconnecting) is also the thread's status."""
        if self.assistant is not None and active and messages.is_status(body):
            await self.assistant.show(body)

    async def _refresh_control(self) -> None:
        control, text = self._control, self._control_text
        if control is None or text is None or self._updated.get(control, -math.inf) + self.interval > self.clock():
            return
        self._control_text = None
        await self._update(control, text, stop_blocks(text, self.target.job_id))

    async def _update(self, ts: str, text: str, blocks: list[dict[str, Any]]) -> None:
        """``chat.update``, never sooner than the edit interval after the previous one of the same message."""
        wait = self._updated.get(ts, -math.inf) + self.interval - self.clock()
        if wait > 0:
            await self.sleep(wait)
        try:
            with self._call():
                await self.client.chat_update(channel=self.target.channel, ts=ts, text=escape(text), blocks=blocks)
        except SlackApiError as e:
            self._failed("chat.update", e)
        self._updated[ts] = self.clock()

    # -- bookkeeping -------------------------------------------------------------------------------------------

    def _call(self) -> contextlib.AbstractContextManager[None]:
        """Count one Web API call: a message posted or edited, or a platform error (and a 429)."""
        return platform_call(self.metrics, PLATFORM)

    def _failed(self, method: str, error: SlackApiError) -> None:
        log.warning("slack %s failed in %s: %s", method, self.target.channel, _code(error))


def _code(error: SlackApiError) -> str:
    """The error code of a failed Web API call (``message_not_in_streaming_state``, ``ratelimited``, ...)."""
    try:
        return str(error.response.get("error") or error.response.status_code)
    except Exception:  # a response that is not a Slack JSON answer
        return type(error).__name__
