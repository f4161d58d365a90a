"""What a person would have seen: an in-memory :class:`~komt_bot.chat.editor.ReplySink` that records every post
and edit, and the record of one soak conversation."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from komt_bot import messages
from komt_bot.chat.ask import Outcome
from komt_bot.chat.editor import MessageView


@dataclass(frozen=True, slots=True)
class SinkWrite:
    """One post or edit, as the platform would have received it."""

    at: float
    kind: Literal["post", "edit"]
    handle: str
    text: str
    active: bool


class RecordingSink:
    """A reply sink that keeps every write per message handle and notes when the first real answer text showed.

    ``on_first_answer`` is called once, when a write first carries answer text (not a status line).
    """

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, on_first_answer: Callable[[], None] | None = None
    ) -> None:
        self.clock = clock
        self.on_first_answer = on_first_answer
        self.writes: list[SinkWrite] = []
        self.handles: list[str] = []
        self.first_answer_at: float | None = None
        self._texts: dict[str, str] = {}

    async def post(self, view: MessageView) -> str:
        """Record a new message; its handle is ``m<n>``."""
        handle = f"m{len(self.handles) + 1}"
        self.handles.append(handle)
        self._record("post", handle, view.text, view.active)
        return handle

    async def edit(self, handle: str, view: MessageView) -> None:
        """Record an edit (an edit of a handle this sink never posted is a harness bug, so it raises)."""
        if handle not in self._texts:
            raise KeyError(f"edit of an unknown message {handle!r}")
        self._record("edit", handle, view.text, view.active)

    def _record(self, kind: Literal["post", "edit"], handle: str, text: str, active: bool) -> None:
        now = self.clock()
        self.writes.append(SinkWrite(now, kind, handle, text, active))
        self._texts[handle] = text
        if self.first_answer_at is None and messages.answer_text(text).strip():
            self.first_answer_at = now
            if self.on_first_answer is not None:
                self.on_first_answer()

    @property
    def final_texts(self) -> list[str]:
        """The text each message was left with, in the order they were posted."""
        return [self._texts[handle] for handle in self.handles]


@dataclass
class Conversation:
    """One simulated person's question and everything that happened to it."""

    index: int
    idempotency_key: str
    question: str
    sink: RecordingSink
    submitted: float | None = None
    ended: float | None = None
    outcome: Outcome | None = None
    crash: str | None = None  # the ask did not return normally (raised, or passed the harness's own deadline)
    notes: list[str] = field(default_factory=list)
