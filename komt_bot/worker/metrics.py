"""The worker's Prometheus series, without touching the worker's own code.

Two pieces, wired in where the worker is built (see ``run_worker`` in :mod:`komt_bot.cli.run`):

* :class:`MetricsHooks` are the worker's hooks: they time each claimed job's wait in the queue and its first
  text, and count how jobs end and their tokens;
* :func:`sampling` runs a loop beside the worker that copies its in-flight count and token rate into gauges and
  the engine's batch sizes into the batch-size histogram.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence

from redis.exceptions import RedisError

from komt_bot.jobs import ClaimedJob
from komt_bot.metrics import Metrics
from komt_bot.queue import JobQueue
from komt_bot.worker.hooks import JobOutcome
from komt_bot.worker.worker import Worker

log = logging.getLogger(__name__)

WORKER_SAMPLE_SECONDS = 1.0


class MetricsHooks:
    """:class:`~komt_bot.worker.hooks.WorkerHooks` that time each job's wait in the queue and its first text,
    and count how jobs end (done, cancelled, failed, dead_letter, retried, lost, requeued) and their tokens."""

    def __init__(self, queue: JobQueue, metrics: Metrics) -> None:
        self.queue = queue
        self.metrics = metrics
        self._claimed_at: dict[str, float] = {}  # job id -> monotonic time it was claimed, until its first text

    async def claimed(self, jobs: Sequence[ClaimedJob]) -> None:
        """Observe how long each job waited since it was submitted."""
        now = time.monotonic()
        for job in jobs:
            self._claimed_at[job.job_id] = now
        try:
            async with self.queue.redis.pipeline(transaction=False) as pipe:
                for job in jobs:
                    pipe.hmget(self.queue.keys.job(job.job_id), ["created", "started"])
                replies = await pipe.execute()
        except RedisError as e:  # metrics are best effort: the job itself goes on
            log.debug("could not read wait times: %s", e)
            return
        for created, started in replies:
            if created and started:
                self.metrics.wait_seconds.observe(max(0.0, float(started) - float(created)))

    def first_text(self, job: ClaimedJob) -> None:
        """Observe the job's time to first text."""
        claimed = self._claimed_at.pop(job.job_id, None)
        if claimed is not None:
            self.metrics.ttft_seconds.observe(time.monotonic() - claimed)

    def ended(self, job: ClaimedJob, outcome: JobOutcome, completion_tokens: int) -> None:
        """Count the outcome, and the tokens of a finished job."""
        self._claimed_at.pop(job.job_id, None)
        self.metrics.jobs.labels(outcome).inc()
        if outcome in ("done", "cancelled"):
            self.metrics.tokens.inc(max(0, completion_tokens))


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
