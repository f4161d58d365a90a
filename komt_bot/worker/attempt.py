"""One running attempt of a job on this worker: its state, its unpublished text and its usage.

An attempt is ``running`` while the answer is written; a stop button makes it ``cancelling`` (it still ends as
answered so far, "cancelled"); writing its end makes it ``finishing``, and then it has ``ended``. Until it is
finishing it can be found ``lost``: another worker owns the job now (this one froze or was too slow), so it writes
nothing more, and it stays lost when its task is over. The job runner, the publisher, the heartbeat loop and the
cancel watcher all ask the attempt and move it through its methods; nobody keeps flags of their own.

::

    running ──request_cancel()──▶ cancelling
       │                             │
       ├──────begin_finishing()──────┴──▶ finishing ──end()──────────▶ ended
       │                             │        └──────end(lost=True)──▶ lost
       └─────────mark_lost()─────────┴───────────────────────────────▶ lost
"""

from __future__ import annotations

import asyncio
from enum import StrEnum

from komt_bot.jobs import ClaimedJob
from komt_bot.queue.working import TextPiece


class AttemptState(StrEnum):
    """Where an attempt stands (see the module docstring)."""

    RUNNING = "running"
    CANCELLING = "cancelling"
    FINISHING = "finishing"
    LOST = "lost"
    ENDED = "ended"


_GENERATING = (AttemptState.RUNNING, AttemptState.CANCELLING)


class Attempt:
    """The one owner of a running attempt's state, shared by the worker's job task and its background loops."""

    def __init__(self, job: ClaimedJob) -> None:
        self.job = job
        self._state = AttemptState.RUNNING
        self._cancel = asyncio.Event()  # the wait for the engine's first update races a stop button on it
        self._pending = ""
        self._seq = 0
        self._counted_tokens = 0
        self.usage: dict[str, int] = {"prompt_tokens": 0, "completion_tokens": 0}

    def __repr__(self) -> str:
        return f"Attempt({self.job.job_id!r}, attempt={self.job.attempt}, {self._state})"

    @property
    def job_id(self) -> str:
        """The job's id."""
        return self.job.job_id

    @property
    def state(self) -> AttemptState:
        """Where the attempt stands."""
        return self._state

    @property
    def publishing(self) -> bool:
        """Whether its text goes out with the publisher's ticks (running or cancelling; its end carries the rest)."""
        return self._state in _GENERATING

    @property
    def cancel_requested(self) -> bool:
        """Whether someone pressed stop while it was running."""
        return self._state is AttemptState.CANCELLING

    @property
    def is_lost(self) -> bool:
        """Whether another worker owns the job now."""
        return self._state is AttemptState.LOST

    # -- moves ------------------------------------------------------------------------------------------------

    def request_cancel(self) -> bool:
        """A stop was requested: a running attempt becomes cancelling. False when it is past running."""
        if self._state is not AttemptState.RUNNING:
            return False
        self._state = AttemptState.CANCELLING
        self._cancel.set()
        return True

    def mark_lost(self) -> bool:
        """Another worker owns the job: a generating attempt becomes lost. True when the attempt is lost now; False
        when it was writing its end or had ended otherwise (a job that finished while a heartbeat was on its way is
        not lost)."""
        if self._state in _GENERATING:
            self._state = AttemptState.LOST
        return self._state is AttemptState.LOST

    def begin_finishing(self) -> bool:
        """The attempt is about to write its end: no more ticks take its text. False when it was lost."""
        if self._state not in _GENERATING:
            return False
        self._state = AttemptState.FINISHING
        return True

    def end(self, *, lost: bool = False) -> None:
        """The attempt is over: ``lost`` when it was dropped (another worker takes the job), else ended (finished,
        failed or handed back). An attempt found lost stays lost."""
        self._state = AttemptState.LOST if lost or self.is_lost else AttemptState.ENDED

    async def until_cancel_requested(self) -> None:
        """Return once a stop has been requested."""
        await self._cancel.wait()

    # -- text and usage ---------------------------------------------------------------------------------------

    def add_text(self, text: str) -> bool:
        """Append answer text for the next publish; True when it is the answer's first (it should go out now)."""
        self._pending += text
        return self._seq == 0

    def take(self) -> TextPiece | None:
        """The pending text as the next piece (None when there is none)."""
        if not self._pending:
            return None
        self._seq += 1
        piece = TextPiece(self.job, self._seq, self._pending)
        self._pending = ""
        return piece

    def record_usage(self, prompt_tokens: int, completion_tokens: int) -> None:
        """The engine's latest token counts for this answer."""
        self.usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}

    def new_tokens(self) -> int:
        """Tokens generated since the last call (for the worker's tokens per second)."""
        total = self.usage["completion_tokens"]
        fresh, self._counted_tokens = max(0, total - self._counted_tokens), max(total, self._counted_tokens)
        return fresh
