"""What a worker tells the outside about its jobs (metrics), without anyone subclassing the queue."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, Protocol

from komt_bot.jobs import ClaimedJob

JobOutcome = Literal["done", "cancelled", "failed", "dead_letter", "retried", "lost", "requeued"]


class WorkerHooks(Protocol):
    """Called by the worker as its jobs move; each call must be quick and must not raise."""

    async def claimed(self, jobs: Sequence[ClaimedJob]) -> None:
        """These jobs were just started on this worker."""

    def first_text(self, job: ClaimedJob) -> None:
        """The job's first text was published."""

    def ended(self, job: ClaimedJob, outcome: JobOutcome, completion_tokens: int) -> None:
        """The job's attempt on this worker is over."""


class NoHooks:
    """Hooks that do nothing (a worker without metrics)."""

    async def claimed(self, jobs: Sequence[ClaimedJob]) -> None:
        """Nothing."""

    def first_text(self, job: ClaimedJob) -> None:
        """Nothing."""

    def ended(self, job: ClaimedJob, outcome: JobOutcome, completion_tokens: int) -> None:
        """Nothing."""
