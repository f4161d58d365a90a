"""The worker's publisher: every coalescing tick, all running jobs' new text goes out in one fenced call.

Jobs never wait on Redis to keep generating: each appends its text to its
:class:`~komt_bot.worker.attempt.Attempt`, and the publisher sends what piled up, one script call per tick for all of
them. An answer's first text cuts the wait short, so the interval adds nothing to the time to first token. During a
Redis outage the call is retried while the text keeps piling up, so nothing is dropped; an attempt the worker turns
out to have lost (another worker took the job over) is marked lost at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable

from komt_bot.errors import QueueError
from komt_bot.jobs import ClaimedJob
from komt_bot.queue import JobQueue
from komt_bot.worker.attempt import Attempt

log = logging.getLogger(__name__)


class Publisher:
    """Publishes the running jobs' text once per ``interval`` (see the module docstring)."""

    def __init__(
        self,
        queue: JobQueue,
        interval: float,
        attempts: Callable[[], Iterable[Attempt]],
        *,
        on_first_text: Callable[[ClaimedJob], None] | None = None,
    ) -> None:
        self.queue = queue
        self.interval = interval
        self._attempts = attempts
        self._on_first_text = on_first_text
        self._due = asyncio.Event()
        self._first_text = asyncio.Event()
        self.lock = asyncio.Lock()  # one write at a time, so a job's end never overtakes its text
        self.calls = 0  # publish calls made, for benchmarks

    def wake(self, *, first: bool = False) -> None:
        """New text is pending; ``first``: an answer's first, which goes out without waiting for the tick."""
        self._due.set()
        if first:
            self._first_text.set()

    async def run(self) -> None:
        """Publish until cancelled."""
        last = 0.0
        while True:
            await self._due.wait()
            wait = last + self.interval - time.monotonic()
            if wait > 0 and not self._first_text.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._first_text.wait()
            self._due.clear()
            self._first_text.clear()
            last = time.monotonic()
            await self.publish_pending()

    async def publish_pending(self) -> None:
        """Send every publishing attempt's pending text now (one call)."""
        async with self.lock:
            taken = [(a, piece) for a in self._attempts() if a.publishing if (piece := a.take())]
            if not taken:
                return
            self.calls += 1
            try:
                lost = await self.queue.publish_text([piece for _attempt, piece in taken])
            except QueueError as e:
                window = self.queue.settings.outage_seconds
                log.warning("could not publish for %.0f s: %s; giving these answers up", window, e)
                lost = {attempt.job_id for attempt, _piece in taken}
        for attempt, piece in taken:
            if attempt.job_id in lost:
                attempt.mark_lost()
            elif piece.seq == 1 and self._on_first_text is not None:
                self._on_first_text(piece.job)
