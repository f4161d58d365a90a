"""Path (c): the whole komt-bot path, measured. Jobs go through Redis to a ``komt-bot worker`` process; this
process is the clients, submitting each question at its arrival time and reading the answer back as an adapter
does.

One worker process serves every repetition at one concurrency, as the in-process engine of path (b) does: it
loads and warms itself up exactly as in production (:mod:`komt_bot.worker.warmup`), then one untimed batch of the
same short answers goes through the queue, so the clients' connections and the scripts are warm too (a chat
adapter is a long-lived process). Neither loading nor warm-up is timed. Each run also records who used the CPU
(the worker's event loop and generation threads, the clients, Redis) and which commands Redis ran, per generated
token.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
import uuid
from types import TracebackType
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from komt_bot.bench.environment import worker_environment
from komt_bot.bench.measure import PathResult, PeakMemory, RequestTiming, summarize
from komt_bot.bench.requests import BenchRequest, load_questions
from komt_bot.bench.usage import QueueUsage, queue_snapshot
from komt_bot.engine.base import SamplingParams
from komt_bot.settings import ModelSettings, Settings
from komt_bot.worker.warmup import WARM_UP_TOKENS

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from komt_bot.queue import JobQueue

WORKER_START_SECONDS = 600.0
WORKER_STOP_SECONDS = 30.0


class QueueWorker:
    """A benchmark worker process on a queue prefix of its own, for ``async with``; :meth:`row` runs one batch."""

    def __init__(self, settings: Settings, model: ModelSettings, capacity: int) -> None:
        self.settings = settings
        self.model = model
        self.capacity = capacity
        self.prefix = f"komt-bench-{uuid.uuid4().hex[:8]}"
        self._client: Redis | None = None
        self._queue: JobQueue | None = None
        self._process: subprocess.Popen[bytes] | None = None

    async def __aenter__(self) -> QueueWorker:
        from komt_bot.queue import JobQueue, connect

        self._client = connect(self.settings)
        try:
            queue_settings = self.settings.queue.model_copy(update={"prefix": self.prefix, "max_backlog": 100_000})
            self._queue = JobQueue(self._client, queue_settings)
            self._process = subprocess.Popen(  # noqa: ASYNC220 - starting it does not block; the bench owns the loop
                [sys.executable, "-m", "komt_bot", "worker", "--name", f"{self.prefix}-worker"],
                env=worker_environment(self.settings, self.model, self.prefix, self.capacity),
            )
            await self._wait_until_serving()
            await self._warm_up()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self, _type: type[BaseException] | None, _error: BaseException | None, _tb: TracebackType | None
    ) -> None:
        try:
            if self._process is not None:
                try:
                    self._process.terminate()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        await asyncio.to_thread(self._process.wait, WORKER_STOP_SECONDS)
                finally:
                    self._process.kill()  # also when the wait above was cancelled (Ctrl-C)
        finally:
            if self._client is not None:
                try:
                    with contextlib.suppress(RedisError):  # Redis gone: nothing more to clean up
                        keys = [key async for key in self._client.scan_iter(match=f"{self.prefix}:*", count=1000)]
                        if keys:
                            await self._client.delete(*keys)
                finally:
                    await self._client.aclose()

    @property
    def _started(self) -> tuple[Redis, JobQueue, subprocess.Popen[bytes]]:
        if self._client is None or self._queue is None or self._process is None:
            raise RuntimeError("QueueWorker is used outside its `async with`")
        return self._client, self._queue, self._process

    async def row(self, path: str, batch: list[BenchRequest], sampling: SamplingParams) -> PathResult:
        """Every request of ``batch`` through the queue at its arrival time; the measured row."""
        client, _queue, process = self._started
        before = await queue_snapshot(process.pid, client)
        with PeakMemory(process.pid) as memory:
            start = time.perf_counter()
            asks = (self._ask(r, start + r.arrival, sampling.max_new_tokens) for r in batch)
            timings = list(await asyncio.gather(*asks))
            seconds = time.perf_counter() - start
        usage = QueueUsage.between(before, await queue_snapshot(process.pid, client))
        result = summarize(path, self.capacity, timings, seconds, memory.peak)
        result.cpu_seconds = usage.cpu_seconds
        result.redis_calls = usage.redis_calls
        calls = sum(usage.redis_calls.values())
        result.redis_commands_per_token = round(calls / result.tokens, 2) if result.tokens else None
        return result

    async def _ask(self, request: BenchRequest, arrival: float, max_new_tokens: int) -> RequestTiming:
        """Submit one question at its arrival time (perf_counter) and read its answer back, as an adapter does."""
        from komt_bot.jobs import JobRequest, Origin, Turn

        await asyncio.sleep(max(0.0, arrival - time.perf_counter()))
        job = JobRequest(
            conversation=[Turn(role="user", text=request.question)],
            origin=Origin(platform="bench"),
            max_new_tokens=max_new_tokens,
        )
        _client, queue, process = self._started
        submission = await queue.submit(job)
        timing = RequestTiming()
        async for event in queue.events(submission.job_id, block_seconds=5):
            if event is None:
                if process.poll() is not None:  # nobody will ever finish the job
                    raise RuntimeError(f"the benchmark worker exited with code {process.returncode}")
                continue
            if event.type == "delta" and timing.ttft is None:
                timing.ttft = time.perf_counter() - arrival
            if event.terminal and event.usage:
                timing.tokens = event.usage.get("completion_tokens", 0)
        timing.e2e = time.perf_counter() - arrival
        return timing

    async def _warm_up(self) -> None:
        questions = [BenchRequest(question, 0.0) for question in load_questions()]
        batch = [questions[i % len(questions)] for i in range(self.capacity)]
        await asyncio.gather(*(self._ask(r, time.perf_counter(), WARM_UP_TOKENS) for r in batch))

    async def _wait_until_serving(self) -> None:
        """Until the worker has published its presence record (it does so after loading and warming up)."""
        _client, queue, process = self._started
        deadline = time.monotonic() + WORKER_START_SECONDS
        while not await queue.presence.workers():
            if process.poll() is not None:
                raise RuntimeError(f"the benchmark worker exited with code {process.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError("the benchmark worker did not start in time")
            await asyncio.sleep(0.2)
