"""The platform-neutral reply editor: buffer the answer, split it before the platform's limit, pace the edits.

An adapter gives the editor a :class:`ReplySink` (how to post and edit one message on its platform) and
:class:`ReplyLimits` (how big a message may be and how often one message may be edited). The editor decides
what each message says and hands the sink a typed :class:`MessageView` (status, answer, final, blank; its Stop and
👍/👎 controls; its :class:`~komt_bot.chat.budget.Priority`); the sink only carries it out. Splitting is greedy from
the start of the answer and prefers paragraph, line and sentence boundaries, so a message never changes once the
next one has begun.

Pacing, when the sink's platform budget is shared by many replies (:mod:`komt_bot.chat.budget`): an answer's first
words replace its placeholder at once; intermediate edits wait out the edit interval, which stretches with the
number of open replies, and are skipped (never queued) when the budget has nothing to spare; the final text is
retried until the platform has taken it, so a reply is finished only when people can see all of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from komt_bot import messages
from komt_bot.chat.budget import EditSkipped, PlatformBudget, Priority
from komt_bot.errors import PlatformError, ReplyGoneError

log = logging.getLogger(__name__)

EDIT_INTERVAL_SECONDS = 1.0
FINAL_RETRY_SECONDS = 300.0  # a final text the platform keeps refusing is retried this long, then reported
FINAL_RETRY_BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0)
_BREAKS = ("\n\n", "\n", ". ", "다. ", "요. ", "? ", "! ", "。", " ")


class ViewKind(StrEnum):
    """What a message of a reply shows."""

    STATUS = "status"  # no answer text yet: the queue position, a reconnecting or restarted notice
    ANSWER = "answer"  # the answer as written so far (the last message ends with the writing mark)
    FINAL = "final"  # the finished reply: the answer and any closing line (stopped, error), or a notice alone
    BLANK = "blank"  # a message left over from a longer answer before the job restarted


@dataclass(frozen=True, slots=True)
class MessageView:
    """What one message of a reply shows, and how urgently: the only thing a sink is handed."""

    text: str
    kind: ViewKind
    active: bool = False  # the job still runs and this message carries the Stop button
    feedback: str | None = None  # the job id whose 👍/👎 this message carries (last message of a finished answer)
    priority: Priority = Priority.EDIT

    @property
    def body(self) -> str:
        """The text without the writing mark."""
        return messages.strip_mark(self.text)


class ReplySink(Protocol):
    """One platform's way to show a reply's messages.

    Sinks raise :class:`~komt_bot.errors.PlatformError` when the platform refuses a call,
    :class:`~komt_bot.errors.ReplyGoneError` when the message was deleted, and
    :class:`~komt_bot.chat.budget.EditSkipped` when an intermediate edit found no budget to spare.
    """

    async def post(self, view: MessageView) -> str:
        """Post a new message in the reply's place (thread, channel); return its handle."""
        ...

    async def edit(self, handle: str, view: MessageView) -> None:
        """Show ``view`` in a message this sink posted."""
        ...


def utf8_size(text: str) -> int:
    """Size in UTF-8 bytes (Slack's limits are in bytes; a Hangul syllable is 3)."""
    return len(text.encode("utf-8"))


@dataclass(frozen=True, slots=True)
class ReplyLimits:
    """How much one message holds (in the platform's unit) and how often one message may be edited.

    ``edit_method`` names the budget's limit that intermediate edits spend (``chat.update``), so the interval
    stretches with the replies sharing it.
    """

    max_size: int
    measure: Callable[[str], int] = len
    edit_interval: float = EDIT_INTERVAL_SECONDS
    edit_method: str = ""
    final_retry_seconds: float = FINAL_RETRY_SECONDS


def split_text(text: str, max_size: int, measure: Callable[[str], int] = len) -> list[str]:
    """Split ``text`` into pieces of at most ``max_size``, at the best boundary before the limit.

    Never cuts a character in half; joining the pieces gives ``text`` back exactly.
    """
    if max_size <= 0:
        raise ValueError("max_size must be positive")
    pieces: list[str] = []
    rest = text
    while measure(rest) > max_size:
        fit = _longest_prefix(rest, max_size, measure)
        cut = _best_break(rest[:fit])
        pieces.append(rest[:cut])
        rest = rest[cut:]
    if rest or not pieces:
        pieces.append(rest)
    return pieces


def _longest_prefix(text: str, max_size: int, measure: Callable[[str], int]) -> int:
    """The largest n with measure(text[:n]) <= max_size (binary search; measure grows with n)."""
    low, high = 1, len(text)
    while low < high:
        mid = (low + high + 1) // 2
        if measure(text[:mid]) <= max_size:
            low = mid
        else:
            high = mid - 1
    return low


def _best_break(window: str) -> int:
    """Where to cut a full window: after the last good boundary in its second half, else at its end."""
    floor = len(window) // 2
    for marker in _BREAKS:
        index = window.rfind(marker)
        if index >= floor:
            return index + len(marker)
    return len(window)


@dataclass(slots=True)
class _Message:
    handle: str
    view: MessageView
    edited_at: float
    gone: bool = False  # a person deleted it: nothing more is written there


@dataclass
class ReplyEditor:
    """Keeps one reply (one or more messages) in step with a streaming answer.

    ``budget`` is the platform budget the sink spends (None: no shared limits, e.g. the terminal).
    """

    sink: ReplySink
    limits: ReplyLimits
    budget: PlatformBudget | None = None
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    answer: str = ""
    status_text: str | None = None
    edits_sent: int = 0
    shown: bool = False  # the platform has taken the final text
    _messages: list[_Message] = field(default_factory=list)
    _closed: bool = False

    @property
    def handles(self) -> list[str]:
        """The platform handles of the messages posted so far, in order."""
        return [m.handle for m in self._messages]

    def snapshot(self) -> list[dict[str, Any]]:
        """The reply's messages as JSON data (handle, text, kind, controls), for the reply's delivery record."""
        return [
            {
                "handle": m.handle,
                "text": m.view.text,
                "kind": m.view.kind.value,
                "active": m.view.active,
                "feedback": m.view.feedback,
                "gone": m.gone,
            }
            for m in self._messages
        ]

    def restore(self, snapshot: Sequence[Mapping[str, Any]]) -> None:
        """Take over the messages another process posted (a :meth:`snapshot`): later edits go to them, never a new
        post of what is already there. The answer itself is rebuilt by replaying the job's output stream."""
        self._messages = [
            _Message(
                str(item["handle"]),
                MessageView(
                    str(item.get("text", "")),
                    ViewKind(item.get("kind", ViewKind.STATUS)),
                    bool(item.get("active", False)),
                    item.get("feedback"),
                ),
                -math.inf,  # edited long ago, as far as this process knows: the next edit may go at once
                bool(item.get("gone", False)),
            )
            for item in snapshot
        ]

    @contextlib.contextmanager
    def open(self) -> Iterator[None]:
        """Count this reply among the budget's open replies while it streams (their edits share the budget)."""
        if self.budget is None:
            yield
            return
        with self.budget.reply():
            yield

    def edit_interval(self) -> float:
        """How often one message of this reply may be edited now."""
        if self.budget is None:
            return self.limits.edit_interval
        return self.budget.edit_interval(self.limits.edit_method, self.limits.edit_interval)

    async def status(self, text: str) -> None:
        """Show a status line (queue position, restart notice) while no answer text exists."""
        self.status_text = text
        await self.flush()

    def reset(self, notice: str = messages.RESTARTED) -> None:
        """Forget the answer so far (the worker restarted the job); the next flush shows ``notice``."""
        self.answer = ""
        self.status_text = notice

    def append(self, text: str) -> None:
        """Add newly generated text."""
        self.answer += text

    def _views(self, *, final: bool, suffix: str | None, feedback: str | None) -> list[MessageView]:
        mark = "" if final else messages.WRITING_MARK
        budget = self.limits.max_size - self.limits.measure(mark)
        body = self.answer if self.answer.strip() else ""
        kind = ViewKind.FINAL if final else ViewKind.ANSWER if body else ViewKind.STATUS
        if final and suffix:
            body = f"{body}\n\n{suffix}" if body else suffix
        if not body:
            body = (messages.EMPTY_ANSWER if final else self.status_text) or messages.queued(None)
        pieces = split_text(body, budget, self.limits.measure)
        pieces[-1] += mark
        views = [MessageView(piece, kind) for piece in pieces]
        last = views[-1]
        views[-1] = MessageView(last.text, kind, active=not final, feedback=feedback if final else None)
        # Messages left over from a longer answer before a restart are blanked rather than deleted.
        views += [MessageView(messages.BLANKED, ViewKind.BLANK)] * (len(self._messages) - len(views))
        return views

    async def flush(self) -> None:
        """Send whatever changed, as far as the edit interval and the budget allow now. Later flushes send the rest."""
        if not self._closed:
            await self._sync(self._views(final=False, suffix=None, feedback=None), final=False)

    async def finish(self, suffix: str | None = None, *, feedback: str | None = None) -> bool:
        """Write the final text (the whole answer, plus ``suffix`` such as an error) until the platform takes it.

        ``feedback`` (a finished answer's job id) puts the feedback buttons on the last message, where the platform
        has them; status and error replies pass none. Returns whether the final text is shown: a platform that
        refuses it for ``limits.final_retry_seconds`` leaves it unshown (logged; the caller reports it).
        """
        if self._closed:
            return self.shown
        self._closed = True
        views = self._views(final=True, suffix=suffix, feedback=feedback)
        deadline = self.clock() + self.limits.final_retry_seconds
        for attempt in range(1_000_000):
            try:
                await self._sync(views, final=True)
            except PlatformError as e:
                if self.clock() >= deadline:
                    log.warning("the final text could not be shown: %s", e)
                    return False
                await self.sleep(FINAL_RETRY_BACKOFF[min(attempt, len(FINAL_RETRY_BACKOFF) - 1)])
                continue
            self.shown = True
            return True
        return False  # pragma: no cover

    async def _sync(self, views: list[MessageView], *, final: bool) -> None:
        for index, view in enumerate(views):
            if index >= len(self._messages):
                view = _with(view, Priority.FINAL if final else Priority.FIRST)
                handle = await self.sink.post(view)
                self._messages.append(_Message(handle, view, self.clock()))
                continue
            message = self._messages[index]
            if message.gone or message.view == _with(view, message.view.priority):
                continue
            first_words = view.kind is ViewKind.ANSWER and message.view.kind is not ViewKind.ANSWER
            if final or first_words:
                view = _with(view, Priority.FINAL if final else Priority.FIRST)
            elif message.edited_at + self.edit_interval() > self.clock():
                continue
            await self._edit(message, view, final=final)

    async def _edit(self, message: _Message, view: MessageView, *, final: bool) -> None:
        try:
            await self.sink.edit(message.handle, view)
        except EditSkipped:
            return  # no budget to spare: a later flush sends the newer text
        except ReplyGoneError:
            log.info("reply message %s was deleted: nothing more is written there", message.handle)
            message.gone = True
            return
        except PlatformError as e:
            if final:
                raise
            log.info("an edit of %s failed (%s): a later flush sends the newer text", message.handle, e)
            return
        self.edits_sent += 1
        message.view, message.edited_at = view, self.clock()


def _with(view: MessageView, priority: Priority) -> MessageView:
    return MessageView(view.text, view.kind, view.active, view.feedback, priority)
