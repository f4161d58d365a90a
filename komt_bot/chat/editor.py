"""The platform-neutral reply editor: buffer the answer, split it before the platform's limit, throttle edits.

An adapter gives the editor a :class:`ReplySink` (how to post and edit one message on its platform) and
:class:`ReplyLimits` (how big a message may be and how often one message may be edited). The editor decides
what each message says; the sink only carries it out. Splitting is greedy from the start of the answer and
prefers paragraph, line and sentence boundaries, so a message never changes once the next one has begun.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from komt_bot import messages

EDIT_INTERVAL_SECONDS = 1.0
_BREAKS = ("\n\n", "\n", ". ", "다. ", "요. ", "? ", "! ", "。", " ")


class ReplySink(Protocol):
    """One platform's way to show a reply. ``active`` is True while the job runs (show a Stop button)."""

    async def post(self, text: str, *, active: bool) -> str:
        """Post a new message in the reply's place (thread, channel); return its handle."""
        ...

    async def edit(self, handle: str, text: str, *, active: bool) -> None:
        """Replace the text of a message this sink posted."""
        ...


@runtime_checkable
class FeedbackSink(ReplySink, Protocol):
    """A sink that can put feedback buttons (👍/👎) under a finished answer: Slack and Discord."""

    async def final(self, handle: str | None, text: str, *, feedback: str) -> str:
        """Show ``text`` as the last message of a finished answer, with the buttons for the job ``feedback``.

        Posts a new message when ``handle`` is None, else edits that one; returns the message's handle.
        """
        ...


def utf8_size(text: str) -> int:
    """Size in UTF-8 bytes (Slack's limits are in bytes; a Hangul syllable is 3)."""
    return len(text.encode("utf-8"))


@dataclass(frozen=True, slots=True)
class ReplyLimits:
    """How much one message holds (in the platform's unit) and how often one message may be edited."""

    max_size: int
    measure: Callable[[str], int] = len
    edit_interval: float = EDIT_INTERVAL_SECONDS


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
    text: str
    active: bool
    edited_at: float


@dataclass
class ReplyEditor:
    """Keeps one reply (one or more messages) in step with a streaming answer."""

    sink: ReplySink
    limits: ReplyLimits
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    answer: str = ""
    status_text: str | None = None
    edits_sent: int = 0
    _messages: list[_Message] = field(default_factory=list)
    _closed: bool = False

    @property
    def handles(self) -> list[str]:
        """The platform handles of the messages posted so far, in order."""
        return [m.handle for m in self._messages]

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

    def _pieces(self, *, final: bool, suffix: str | None) -> list[str]:
        mark = "" if final else messages.WRITING_MARK
        budget = self.limits.max_size - self.limits.measure(mark)
        body = self.answer if self.answer.strip() else ""
        if final and suffix:
            body = f"{body}\n\n{suffix}" if body else suffix
        if not body:
            body = (messages.EMPTY_ANSWER if final else self.status_text) or messages.queued(None)
        pieces = split_text(body, budget, self.limits.measure)
        pieces[-1] += mark
        return pieces

    async def flush(self) -> None:
        """Send whatever changed, as far as the edit interval allows now. Later flushes send the rest."""
        if not self._closed:
            await self._sync(self._pieces(final=False, suffix=None), active=True, wait=False)

    async def finish(self, suffix: str | None = None, *, feedback: str | None = None) -> None:
        """Write the final text (the whole answer, plus ``suffix`` such as an error), waiting out the interval.

        ``feedback`` (a finished answer's job id) puts the feedback buttons on the last message, where the sink
        can (a :class:`FeedbackSink`); status and error replies pass none.
        """
        if self._closed:
            return
        self._closed = True
        pieces = self._pieces(final=True, suffix=suffix)
        await self._sync(pieces, active=False, wait=True, feedback=feedback)

    async def _sync(self, pieces: list[str], *, active: bool, wait: bool, feedback: str | None = None) -> None:
        # Messages left over from a longer answer before a restart are blanked rather than deleted.
        last_real = len(pieces) - 1
        pieces = pieces + [messages.BLANKED] * (len(self._messages) - len(pieces))
        for index, text in enumerate(pieces):
            active_here = active and index == last_real
            # Like the Stop button of the active message, the feedback buttons go on the last message of the answer.
            rated = feedback if feedback and index == last_real and isinstance(self.sink, FeedbackSink) else None
            if index >= len(self._messages):
                handle = await self._post(text, active_here, rated)
                self._messages.append(_Message(handle, text, active_here, self.clock()))
                continue
            message = self._messages[index]
            if message.text == text and message.active == active_here and rated is None:
                continue
            due = message.edited_at + self.limits.edit_interval - self.clock()
            if due > 0:
                if not wait:
                    continue
                await self.sleep(due)
            await self._edit(message.handle, text, active_here, rated)
            self.edits_sent += 1
            message.text, message.active, message.edited_at = text, active_here, self.clock()

    async def _post(self, text: str, active: bool, feedback: str | None) -> str:
        if feedback is not None and isinstance(self.sink, FeedbackSink):
            return await self.sink.final(None, text, feedback=feedback)
        return await self.sink.post(text, active=active)

    async def _edit(self, handle: str, text: str, active: bool, feedback: str | None) -> None:
        if feedback is not None and isinstance(self.sink, FeedbackSink):
            await self.sink.final(handle, text, feedback=feedback)
        else:
            await self.sink.edit(handle, text, active=active)
