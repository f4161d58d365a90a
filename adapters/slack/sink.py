"""The Slack side of a reply: the reply editor's post/edit carried out with Slack's Web API.

The first message is a placeholder (queue position, Stop button) posted with ``chat.postMessage``. When the
answer's words arrive and the workspace allows it, the answer streams natively: ``chat.startStream`` opens a
message below the placeholder, every edit that only adds text becomes a ``chat.appendStream`` of the difference,
and the message's final edit is a ``chat.stopStream``; a further message of a long answer is a stream of its own.
A streaming message cannot carry buttons, so the placeholder stays above the streams holding the Stop button
(``✍️ writing…``) and is deleted when the reply is finished. Anything else -- a workspace that refuses streaming,
a stream that expired (``message_not_in_streaming_state``), a text that is not an extension, such as the notice
after a worker restart or a split that moved back to a better break -- falls back to ``chat.update``.

Every call spends the workspace's shared budget (:mod:`adapters.slack.calls`) at the priority the editor gave the
view: a stream is opened only when a ``chat.startStream`` token is free at once (else the answer is written with
``chat.update``), so a busy workspace never waits on Slack's low streaming tier for first words or finals.

The last message of a finished answer gets the feedback buttons (its view's ``feedback``): in the blocks of a plain
message, or in ``chat.stopStream``'s blocks for a streamed one. In an assistant thread the status lines (queue
position, reconnecting) also go to the thread's status (:class:`~adapters.slack.assistant.AssistantThread`).

Text is escaped for Slack, so an answer cannot ping ``<!channel>`` or mention people, and message sizes are
measured escaped, in UTF-8 bytes.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from adapters.slack.assistant import AssistantThread
from adapters.slack.calls import PLATFORM, SlackCallError, SlackCalls
from adapters.slack.events import escape
from adapters.slack.feedback import feedback_block
from komt_bot import messages
from komt_bot.chat.budget import EditSkipped, Priority
from komt_bot.chat.editor import EDIT_INTERVAL_SECONDS, MessageView, ReplyLimits, ViewKind, split_text, utf8_size

log = logging.getLogger(__name__)

__all__ = ["PLATFORM", "SlackSink"]

STOP_ACTION_ID = "komt_stop"
STOP_LABEL = "⏹ Stop"
SECTION_MAX_CHARS = 3000  # Slack's limit for one section block's text


def slack_size(text: str) -> int:
    """What ``text`` costs in a Slack message: UTF-8 bytes after escaping."""
    return utf8_size(escape(text))


def reply_limits(max_bytes: int) -> ReplyLimits:
    """The reply editor's limits for Slack: ``max_bytes`` escaped bytes a message, an edit a second at most (more
    apart while many answers share the workspace's ``chat.update`` budget)."""
    return ReplyLimits(
        max_size=max_bytes, measure=slack_size, edit_interval=EDIT_INTERVAL_SECONDS, edit_method="chat.update"
    )


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
    kind: ViewKind
    streamed: str | None = None  # the text streamed so far while a native stream is open
    stop: bool = False  # shows the Stop button (a plain message)
    orphan_stream: bool = False  # a stream another process opened: stopped before this one edits the message


class SlackSink:
    """A :class:`~komt_bot.chat.editor.ReplySink` for one reply in one Slack thread."""

    def __init__(
        self,
        calls: SlackCalls,
        target: ReplyTarget,
        *,
        streaming: StreamingGate,
        assistant: AssistantThread | None = None,
        interval: float = EDIT_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.calls = calls
        self.target = target
        self.streaming = streaming
        self.assistant = assistant
        self.interval = interval
        self.clock = clock
        self._messages: dict[str, _Message] = {}
        self._control: str | None = None  # the placeholder kept for its Stop button while the answer streams
        self._control_text: str | None = None  # a text for it, sent once an edit of it is due
        self._control_updated = -math.inf

    # -- the reply's record (komt_bot.chat.handover) -------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Where the reply is and what its messages are on Slack, for its delivery record (no streamed text: a
        resumed reply stops a stream it did not open and goes on with ``chat.update``)."""
        t = self.target
        return {
            "channel": t.channel,
            "thread_ts": t.thread_ts,
            "user": t.user,
            "team": t.team,
            "key": t.key,
            "job_id": t.job_id,
            "control": self._control,
            "messages": {
                handle: {"ts": m.ts, "kind": m.kind.value, "stop": m.stop, "stream": m.streamed is not None}
                for handle, m in self._messages.items()
            },
        }

    @classmethod
    def resumed(cls, calls: SlackCalls, state: dict[str, Any], *, streaming: StreamingGate) -> SlackSink:
        """The sink of a reply another process began (its :meth:`state`)."""
        target = ReplyTarget(
            str(state["channel"]),
            str(state["thread_ts"]),
            str(state.get("user") or ""),
            state.get("team"),
            key=str(state.get("key") or ""),
            job_id=str(state["job_id"]),
        )
        sink = cls(calls, target, streaming=streaming)
        sink._control = state.get("control")
        sink._control_text = messages.WRITING if sink._control else None
        for handle, m in (state.get("messages") or {}).items():
            sink._messages[str(handle)] = _Message(
                str(m["ts"]),
                ViewKind(m.get("kind", ViewKind.STATUS)),
                stop=bool(m.get("stop")),
                orphan_stream=bool(m.get("stream")),
            )
        return sink

    # -- ReplySink ---------------------------------------------------------------------------------------------

    async def post(self, view: MessageView) -> str:
        """Post the next message of the reply (a stream when the answer is already streaming)."""
        await self._refresh_control()
        t = self.target
        if self._messages and view.active and view.kind is ViewKind.ANSWER and self.streaming.allows(t.channel):
            ts = await self._stream_continuation(view.body)
            if ts is not None:
                return ts
        blocks = self._blocks(view)
        ts = await self.calls.post(t.channel, t.thread_ts, escape(view.text), blocks, view.priority)
        self._messages[ts] = _Message(ts, view.kind, stop=view.active and blocks is not None)
        await self._show_status(view)  # after the post: Slack clears the status when the app posts
        return ts

    async def edit(self, handle: str, view: MessageView) -> None:
        """Show ``view`` in the message ``handle``: append to its stream, start one, or update it."""
        await self._refresh_control()
        message = self._messages[handle]
        await self._show_status(view)
        if message.orphan_stream:
            await self._stop_quietly(message)
        if message.streamed is not None:
            extends = view.body.startswith(message.streamed)
            if extends and await self._continue_stream(message, view):
                return
            if not extends:
                await self._stop_quietly(message)
            message.streamed = None
        elif self._may_begin_streaming(message, view) and await self._begin_streaming(message, view.body):
            return
        blocks = self._blocks(view)
        await self.calls.update(self.target.channel, message.ts, escape(view.text), blocks or [], view.priority)
        message.kind, message.stop = view.kind, view.active and blocks is not None

    async def close(self) -> None:
        """Finish the reply: close any stream still open and remove the Stop message left above a stream."""
        for message in self._messages.values():
            await self._stop_quietly(message)
        if self._control is None:
            return
        control, self._control = self._control, None
        try:
            await self.calls.delete(self.target.channel, control)
        except SlackCallError as e:
            log.warning("slack chat.delete failed in %s: %s", self.target.channel, e.code)
            await self._quietly(self.calls.update(self.target.channel, control, messages.BLANKED, [], Priority.FINAL))

    # -- streaming ---------------------------------------------------------------------------------------------

    def _may_begin_streaming(self, message: _Message, view: MessageView) -> bool:
        """The placeholder with the Stop button starts the stream (once) when the answer's first words replace it."""
        return (
            self._control is None
            and message.stop
            and message.kind is ViewKind.STATUS
            and view.active
            and view.kind is ViewKind.ANSWER
        )

    async def _begin_streaming(self, message: _Message, body: str) -> bool:
        """Open a stream below the message; the message itself stays, as the Stop button's holder."""
        ts = await self._start_stream(body)
        if ts is None:
            return False
        self._control, self._control_text = message.ts, messages.WRITING
        message.ts, message.streamed, message.stop, message.kind = ts, body, False, ViewKind.ANSWER
        return True

    async def _stream_continuation(self, body: str) -> str | None:
        """A further message of a streaming answer: a new stream, below a Stop message posted for it if needed."""
        if self._control is None:
            if not self.calls.may_stream():
                return None
            self._control = await self._post_control()
            if self._control is None:
                return None
            ts = await self._start_stream(body, token_taken=True)
        else:
            ts = await self._start_stream(body)
        if ts is not None:
            self._messages[ts] = _Message(ts, ViewKind.ANSWER, streamed=body)
        return ts

    async def _post_control(self) -> str | None:
        t = self.target
        blocks = stop_blocks(messages.WRITING, t.job_id)
        try:
            return await self.calls.post(t.channel, t.thread_ts, escape(messages.WRITING), blocks, Priority.FIRST)
        except SlackCallError as e:
            log.warning("slack chat.postMessage failed in %s: %s", t.channel, e.code)
            return None

    async def _start_stream(self, body: str, *, token_taken: bool = False) -> str | None:
        """A new native stream, only when the workspace's ``chat.startStream`` budget has a token free now."""
        t = self.target
        if not self.streaming.allows(t.channel) or not (token_taken or self.calls.may_stream()):
            return None
        try:
            return await self.calls.start_stream(t.channel, t.thread_ts, t.user, escape(body))
        except SlackCallError as e:
            self.streaming.refuse(t.channel, e.code)
            return None

    async def _continue_stream(self, message: _Message, view: MessageView) -> bool:
        """Append the new text (or stop the stream on the final edit); False when the stream is gone."""
        assert message.streamed is not None
        final = view.kind is ViewKind.FINAL
        new = escape(view.body[len(message.streamed) :])
        if not final and not new:
            return True
        channel = self.target.channel
        try:
            if final:
                blocks = [feedback_block(view.feedback)] if view.feedback else None
                await self.calls.stop_stream(channel, message.ts, new or None, blocks, view.priority)
            else:
                await self.calls.append_stream(channel, message.ts, new, view.priority)
        except SlackCallError as e:
            log.warning("slack %s failed in %s: %s", e.method, channel, e.code)
            return False
        message.streamed = None if final else view.body
        message.kind = view.kind
        return True

    async def _stop_quietly(self, message: _Message) -> None:
        """Stop the message's stream, this process's or one another process opened, if it has one."""
        if message.streamed is None and not message.orphan_stream:
            return
        message.streamed, message.orphan_stream = None, False
        await self._quietly(self.calls.stop_stream(self.target.channel, message.ts, None, None, Priority.FINAL))

    # -- plain messages ----------------------------------------------------------------------------------------

    def _blocks(self, view: MessageView) -> list[dict[str, Any]] | None:
        # While an answer streams, its Stop button lives on the placeholder above it, not on each message.
        if view.active and self._control is None:
            return stop_blocks(view.text, self.target.job_id)
        if not view.active and view.feedback is not None:
            return answer_blocks(view.text, view.feedback)
        return None

    async def _show_status(self, view: MessageView) -> None:
        """In an assistant thread, a status line (queue position, reconnecting) is also the thread's status."""
        if self.assistant is not None and view.active and view.kind is ViewKind.STATUS:
            await self.assistant.show(view.body)

    async def _refresh_control(self) -> None:
        """The Stop holder's own text, sent when an edit of it is due and the budget has one to spare."""
        control, text = self._control, self._control_text
        if control is None or text is None or self._control_updated + self.interval > self.clock():
            return
        blocks = stop_blocks(text, self.target.job_id)
        if await self._quietly(self.calls.update(self.target.channel, control, escape(text), blocks, Priority.EDIT)):
            self._control_text, self._control_updated = None, self.clock()

    async def _quietly(self, call: Awaitable[None]) -> bool:
        """Await a call whose failure changes nothing for the person (logged); True when it went through."""
        try:
            await call
        except EditSkipped:
            return False
        except SlackCallError as e:
            log.warning("slack %s failed in %s: %s", e.method, self.target.channel, e.code)
            return False
        except Exception as e:  # ReplyGoneError: the message is gone, nothing to tidy
            log.info("slack reply in %s: %s", self.target.channel, e)
            return False
        return True
