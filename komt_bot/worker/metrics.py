"""The worker's Prometheus series, without touching the worker's own code.

Two pieces, wired in where the worker is built (see ``run_worker`` in :mod:`komt_bot.cli.run`):

* :class:`MeteredQueue` is the :class:`JobQueue` the worker gets: it times each claimed job's wait in the queue
  and its first text, and counts how jobs end (done, cancelled, failed, dead_letter, retried) and their tokens;
* :func:`sampling` runs a loop beside the worker that copies its in-flight count and token rate into gauges and
  the engine's batch sizes into the batch-size histogram.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

from redis.exceptions import RedisError

from komt_bot.jobs import ClaimedJob, EventType
from komt_bot.metrics import Metrics
from komt_bot.queue import JobQueue
from komt_bot.worker import Worker

log = logging.getLogger(__name__)

WORKER_SAMPLE_SECONDS = 1.0


class MeteredQueue(JobQueue):
    """A :class:`JobQueue` on the same Redis client that counts what a worker does with its jobs."""

    def __init__(self, queue: JobQueue, metrics: Metrics) -> None:
        super().__init__(queue.redis, queue.settings)
        self.metrics = metrics
        self._awaiting_text: dict[str, float] = {}  # job id -> monotonic time it was claimed, until its first delta

    async def claim(self, consumer: str, count: int, *, block_seconds: float = 1.0) -> list[ClaimedJob]:
        """Claim as usual, then observe how long each job waited since it was submitted."""
        jobs = await super().claim(consumer, count, block_seconds=block_seconds)
        now = time.monotonic()
        for job in jobs:
            self._awaiting_text[job.job_id] = now
        if jobs:
            await self._observe_waits(jobs)
        return jobs

    async def _observe_waits(self, jobs: list[ClaimedJob]) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for job in jobs:
                    pipe.hmget(self.keys.job(job.job_id), ["created", "started"])
                replies = await pipe.execute()
        except RedisError as e:  # metrics are best effort: the job itself goes on
            log.debug("could not read wait times: %s", e)
            return
        for created, started in replies:
            if created and started:
                self.metrics.wait_seconds.observe(max(0.0, float(started) - float(created)))

    async def publish(self, job_id: str, event_type: EventType, **data: Any) -> None:
        """Publish as usual; a job's first ``delta`` observes its time to first text."""
        await super().publish(job_id, event_type, **data)
        if event_type == "delta":
            claimed = self._awaiting_text.pop(job_id, None)
            if claimed is not None:
                self.metrics.ttft_seconds.observe(time.monotonic() - claimed)

    async def finish(
        self,
        job: ClaimedJob,
        *,
        state: Literal["done", "cancelled"],
        finish_reason: str,
        usage: dict[str, int],
    ) -> None:
        """Finish as usual, then count the outcome and the tokens generated."""
        await super().finish(job, state=state, finish_reason=finish_reason, usage=usage)
        self._ended(job, state)
        self.metrics.tokens.inc(max(0, usage.get("completion_tokens", 0)))

    async def fail(self, job: ClaimedJob, *, code: str, message: str, retryable: bool) -> bool:
        """Fail as usual, then count ``retried``, ``dead_letter`` or ``failed``."""
        retried = await super().fail(job, code=code, message=message, retryable=retryable)
        self._ended(job, "retried" if retried else ("dead_letter" if retryable else "failed"))
        return retried

    def _ended(self, job: ClaimedJob, outcome: str) -> None:
        self._awaiting_text.pop(job.job_id, None)
        self.metrics.jobs.labels(outcome).inc()


class WorkerSampler:
    """Copies a worker's status and its engine's batch sizes into the metrics, one sample at a time."""

    def __init__(self, worker: Worker, metrics: Metrics) -> None:
        self.worker = worker
        self.metrics = metrics
        self._batches_seen = 0

    def sample(self) -> None:
        """Take one sample."""
        record = self.worker.record()
        self.metrics.in_flight.set(record.in_flight)
        self.metrics.tokens_per_second.set(record.tokens_per_second)
        batches = self.worker.engine.stats.batch_sizes
        if len(batches) < self._batches_seen:  # the engine started a new list
            self._batches_seen = 0
        for size in batches[self._batches_seen :]:
            self.metrics.batch_size.observe(size)
        self._batches_seen = len(batches)

    async def run(self, interval: float) -> None:
        """Sample every ``interval`` seconds until cancelled."""
        while True:
            self.sample()
            await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def sampling(worker: Worker, metrics: Metrics, *, interval: float = WORKER_SAMPLE_SECONDS) -> AsyncIterator[None]:
    """Sample ``worker`` into ``metrics`` in the background for the duration of the block (and once at its end)."""
    sampler = WorkerSampler(worker, metrics)
    task = asyncio.create_task(sampler.run(interval), name="worker-metrics")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        sampler.sample()
